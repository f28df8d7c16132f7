/**
 * Structured logs through pino (`log.info({ ...fields }, 'message')`): one JSON line per event on stderr.
 * Secrets never reach it: fields named like tokens, cookies, secrets or authorization, an authorization code
 * and secret URL parameters are replaced before serialisation, and errors are reduced to type,
 * message and code, with their causes.
 */
import { pino } from 'pino';
import type { LogLevel } from '../config/schema';

export type LogFn = (fields: Record<string, unknown>, msg: string) => void;
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  isLevelEnabled(level: LogLevel): boolean;
}

/**
 * Field names whose values are secrets wherever they appear. A field named just `code` is not among them:
 * it is usually an error code (ECONNREFUSED, invalid_grant), and is judged by its value (codeValue).
 */
const SECRET_FIELD = /token|cookie|secret|authorization|password|code_?verifier|^auth_?code$|dpop|private_?key|^d$/i;
/** Field names already tested against SECRET_FIELD (log lines repeat the same few names). */
const secretNames = new Map<string, boolean>();
function isSecretField(name: string): boolean {
  let secret = secretNames.get(name);
  if (secret === undefined) {
    secret = SECRET_FIELD.test(name);
    if (secretNames.size < 10_000) secretNames.set(name, secret);
  }
  return secret;
}

/**
 * Error codes are words in one case (ECONNREFUSED, ERR_HTTP2_STREAM_ERROR, OAUTH_RESPONSE_BODY_ERROR,
 * invalid_grant, identity_provider_unavailable) or small numbers. An OAuth authorization code must be
 * unguessable (at most a 2^-128 chance, RFC 6749 §10.10): random characters in mixed case, hex, or a UUID,
 * never shaped like that. A one-case word without underscores is kept only up to 24 characters (36^24 < 2^128).
 */
const ERROR_CODE = /^(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[A-Z][A-Z0-9]{0,23}|[a-z][a-z0-9]{0,23}|\d{1,6})$/;
function codeValue(v: unknown): unknown {
  if (typeof v === 'number' || v === undefined || v === null) return v;
  return typeof v === 'string' && v.length <= 64 && ERROR_CODE.test(v) ? v : '[redacted]';
}

/**
 * Secrets carried in URLs and form bodies inside strings (an error message quoting a callback URL or a
 * token request), the first parameter of a body included:
 * `code=`, `*token=`, `*token_hint=`, `code_verifier=`, `client_secret=`, `client_assertion=`, `password=`.
 */
const SECRET_PARAM =
  /((?:^|[?&#;\s])\s*(?:code|[a-z_]*token(?:_hint)?|code_verifier|client_secret|client_assertion|password)=)[^&#\s"'<>]+/gi;
/**
 * RFC 6750 §2.1, RFC 9449 §7.1: a bearer or DPoP credential quoted in a string (an Authorization header in an
 * error message).
 */
const BEARER = /(\b(?:bearer|dpop)\s+)[A-Za-z0-9\-._~+/]+=*/gi;
const CREDENTIAL_SCHEME = /bearer|dpop/i;
function scrubString(s: string): string {
  const scrubbed = s.includes('=') ? s.replace(SECRET_PARAM, '$1[redacted]') : s;
  return CREDENTIAL_SCHEME.test(scrubbed) ? scrubbed.replace(BEARER, '$1[redacted]') : scrubbed;
}

function scrub(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return scrubString(value);
  if (value instanceof Error) return serializeError(value, 0);
  if (value === null || typeof value !== 'object') return value;
  // Past this depth nothing is looked at, so nothing is printed either (it could hold a secret).
  if (depth > 4) return '[too deep]';
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[k];
    if (isSecretField(k)) out[k] = '[redacted]';
    else if (k === 'code') out[k] = codeValue(v);
    else if (k === 'err') out[k] = serializeError(v, 0);
    else if (typeof v === 'string') out[k] = scrubString(v);
    else out[k] = typeof v === 'object' && v !== null ? scrub(v, depth + 1) : v;
  }
  return out;
}

/** Members of a non-Error object thrown or passed as an error or cause that are logged; the rest may be payload. */
const ERROR_FIELDS = ['message', 'code', 'error', 'status', 'reason', 'claim'] as const;
const MAX_CAUSES = 4;

/**
 * What a log line shows of an error: its type, message and code (and an OAuth `error`, an HTTP `status`),
 * then its `cause` chain and an AggregateError's errors, each the same way. Libraries also throw and chain
 * plain objects (openid-client: the rejected ID token's claims and bytes as a cause): of those only the
 * protocol fields above are kept, never their payload. A thrown string or number is its message.
 */
function serializeError(e: unknown, depth: number): unknown {
  if (e === null || e === undefined) return e;
  if (typeof e === 'string') return { message: scrubString(e) };
  if (typeof e === 'number' || typeof e === 'boolean' || typeof e === 'bigint') return { message: String(e) };
  if (typeof e !== 'object') return { type: typeof e };
  const src = e as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if (e instanceof Error) out.type = e.name;
  else if (typeof src.name === 'string') out.type = src.name;
  for (const k of ERROR_FIELDS) {
    const v = src[k];
    if (typeof v !== 'string' && typeof v !== 'number') continue;
    if (k === 'code') out.code = codeValue(v);
    else if (k === 'status') out.status = v;
    else out[k] = typeof v === 'string' ? scrubString(v) : v;
  }
  if (depth >= MAX_CAUSES) return out;
  if (e instanceof AggregateError && Array.isArray(e.errors)) out.errors = e.errors.slice(0, 3).map((x) => serializeError(x, depth + 1));
  if (src.cause !== undefined) out.cause = serializeError(src.cause, depth + 1);
  return out;
}

/** pino's isoTime, the string made once per millisecond (under load, several lines share one). */
let lastMs = 0;
let lastTime = '';
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/**
 * pino, with Gatehouse's line shape (`level` as its name, ISO `time`) and the scrubber above run on every
 * event's fields before serialisation, so redaction does not depend on listing paths (pino's `redact`).
 * `write` receives each JSON line (tests capture them); by default lines go to stderr asynchronously: under
 * load the lines written while a write is under way go out together in the next (one system call per batch,
 * not per request). pino flushes what is left synchronously when the process exits, crash
 * included (its on-exit hook), so only a SIGKILL can lose the last lines.
 */
export function createLogger(level: LogLevel, write?: (line: string) => void): Logger {
  const dest = write ? { write } : pino.destination({ dest: 2, sync: false });
  return pino(
    {
      level,
      base: undefined,
      timestamp: isoTime,
      // pino's own `err` serializer would take the object made by serializeError for an Error again
      // (`"type":"Object"`, causes folded into the message): the scrubber below already serialised it.
      serializers: { err: (v: unknown) => v },
      formatters: {
        level: (label) => ({ level: label }),
        log: (fields) => scrub(fields) as Record<string, unknown>,
      },
    },
    dest,
  );
}
