/**
 * Structured logs through pino (`log.info({ ...fields }, 'message')`): one JSON line per event on stderr. Secrets never reach it: fields named like tokens, cookies, secrets or authorization
 * are replaced before serialisation (STYLE §14), and errors are reduced to name, code and message.
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

const SECRET_FIELD = /token|cookie|secret|authorization|password|code_?verifier|^code$/i;
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

function scrub(value: unknown, depth = 0): unknown {
  if (value instanceof Error) {
    const e = value as Error & { code?: unknown; error?: unknown; status?: unknown };
    return {
      type: e.name,
      message: e.message,
      ...(e.code !== undefined && { code: e.code }),
      ...(typeof e.error === 'string' && { error: e.error }),
      ...(typeof e.status === 'number' && { status: e.status }),
      ...(e.cause !== undefined && depth < 3 && { cause: scrubCause(e.cause, depth + 1) }),
    };
  }
  if (value === null || typeof value !== 'object' || depth > 4) return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[k];
    out[k] = isSecretField(k) ? '[redacted]' : typeof v === 'object' && v !== null ? scrub(v, depth + 1) : v;
  }
  return out;
}

/**
 * Library errors carry plain objects as causes (openid-client: the rejected ID token's claims and bytes).
 * Only Errors and a few protocol fields of such objects are logged, never their payload.
 */
const CAUSE_FIELDS = ['claim', 'code', 'status', 'reason', 'error'];
function scrubCause(cause: unknown, depth: number): unknown {
  if (cause instanceof Error) return scrub(cause, depth);
  if (cause === null || typeof cause !== 'object') return undefined;
  const out: Record<string, unknown> = {};
  for (const k of CAUSE_FIELDS) {
    const v = (cause as Record<string, unknown>)[k];
    if (typeof v === 'string' || typeof v === 'number') out[k] = v;
  }
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
 * not per request: issue 6). pino flushes what is left synchronously when the process exits, crash
 * included (its on-exit hook), so only a SIGKILL can lose the last lines.
 */
export function createLogger(level: LogLevel, write?: (line: string) => void): Logger {
  const dest = write ? { write } : pino.destination({ dest: 2, sync: false });
  return pino(
    {
      level,
      base: undefined,
      timestamp: isoTime,
      serializers: {},
      formatters: {
        level: (label) => ({ level: label }),
        log: (fields) => scrub(fields) as Record<string, unknown>,
      },
    },
    dest,
  );
}
