/**
 * A small structured logger with pino's call shape (`log.info({ ...fields }, 'message')`): one JSON line
 * per event on stderr. Secrets never reach it: fields named like tokens, cookies, secrets or authorization
 * are replaced before serialisation (STYLE §14), and errors are reduced to name, code and message.
 */
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

const RANK: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const SECRET_FIELD = /token|cookie|secret|authorization|password|code_?verifier|^code$/i;

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
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_FIELD.test(k) ? '[redacted]' : scrub(v, depth + 1);
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

export function createLogger(level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = RANK[level];
  const make =
    (lvl: Exclude<LogLevel, 'silent'>): LogFn =>
    (fields, msg) => {
      if (RANK[lvl] < min) return;
      write(`${JSON.stringify({ level: lvl, time: new Date().toISOString(), msg, ...(scrub(fields) as object) })}\n`);
    };
  return {
    trace: make('trace'),
    debug: make('debug'),
    info: make('info'),
    warn: make('warn'),
    error: make('error'),
    fatal: make('fatal'),
    isLevelEnabled: (l) => RANK[l] >= min,
  };
}
