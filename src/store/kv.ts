/**
 * The few storage operations Gatehouse needs beyond express-session, with two implementations:
 * Redis (shared by replicas) and memory (one process, development only).
 *
 * Versioned values are written as "<version>|<payload>" so a compare-and-set can check the
 * version without opening the sealed payload.
 */
export interface Kv {
  get(key: string): Promise<string | null>;
  /** Two keys of one hash slot in one round trip (MGET): a session and its token record. */
  getPair(a: string, b: string): Promise<[string | null, string | null]>;
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /** Overwrites only an existing key (SET XX): never resurrects a deleted record. True when written. */
  replace(key: string, value: string, ttlMs: number): Promise<boolean>;
  /**
   * replace(), and in the same atomic step gives `companion` (if it exists) the same TTL, so two records
   * of one session always expire together. Both keys must share a Redis Cluster hash slot.
   */
  replaceWithCompanion(key: string, value: string, ttlMs: number, companion: string, companionTtlMs: number): Promise<boolean>;
  /** Sets only when absent (a lock); true when this call created it. */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Reads and deletes in one step: one-time records (login transactions). */
  getDel(key: string): Promise<string | null>;
  del(...keys: string[]): Promise<void>;
  expire(key: string, ttlMs: number): Promise<void>;
  /**
   * Writes a versioned value only if the stored version is `expected` (0 = absent). `ttlMs: 'keep'` keeps
   * the record's current TTL (Redis KEEPTTL): a writer that knows less than the idle slide never shortens it.
   */
  compareAndSet(key: string, expected: number, value: string, ttlMs: number | 'keep'): Promise<boolean>;
  /** Deletes or extends a lock only while `owner` still holds it. */
  releaseLock(key: string, owner: string): Promise<boolean>;
  renewLock(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Replaces a lock held by `owner` with `value` for `ttlMs` (a cooldown marker); never touches another's lock. */
  swapLock(key: string, owner: string, value: string, ttlMs: number): Promise<boolean>;
  /** Sets one field of a hash and extends the hash's TTL to at least `ttlMs` (indexes of sessions). */
  hashPut(key: string, field: string, value: string, ttlMs: number): Promise<void>;
  hashDelete(key: string, ...fields: string[]): Promise<void>;
  hashGetAll(key: string): Promise<Record<string, string>>;
  /** Reads and deletes one field of a hash (one caller wins). */
  hashTake(key: string, field: string): Promise<string | null>;
  /** A sorted set of due times: adds `member` at `atMs` and extends the set's TTL to at least `keyTtlMs`. */
  schedule(key: string, member: string, atMs: number, keyTtlMs: number): Promise<void>;
  /** Moves a member already scheduled (never adds one). */
  reschedule(key: string, member: string, atMs: number): Promise<void>;
  unschedule(key: string, member: string): Promise<void>;
  /** Members due at `nowMs` (at most `limit`), without removing them. */
  due(key: string, nowMs: number, limit: number): Promise<string[]>;
  /** Removes `member`; true for exactly one of several concurrent callers (the one that handles it). */
  claim(key: string, member: string): Promise<boolean>;
  /**
   * A set of at most `max` members, each leaving at its own time (a sorted set scored by that time): drops
   * the members whose time is at or before `nowMs`, then adds `member` until `untilMs` unless `max` remain.
   * True when added. The set's TTL is extended to `untilMs`, never shortened: it lives as long as its latest
   * member and no longer. A member leaves early with unschedule().
   */
  admit(key: string, member: string, untilMs: number, nowMs: number, max: number): Promise<boolean>;
  /** Adds one to a counter that lives `windowMs` from its first increment; resolves to the new count. */
  countInWindow(key: string, windowMs: number): Promise<number>;
  /**
   * Resolves once this connection's writes so far are held by the configured number of replicas (Sentinel:
   * RedisKv.durable); rejects with StoreUnavailableError otherwise. Locks and compare-and-set writes
   * already check it; a caller that finds its own earlier write in place calls it before relying on it.
   */
  durable(): Promise<void>;
  ping(): Promise<void>;
}

/** Thrown for any failure to reach or use the store; answered with 503 session_store_unavailable. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(cause: unknown) {
    super('session store unavailable', { cause });
  }
}

/**
 * The version of a stored value: 0 when absent, -1 when it carries none. Only "<digits>|" counts, exactly
 * as the Redis CAS script reads it (`^(%d+)|`): Number() would also accept " 1", "+1", "1.0" or "0x1", and
 * MemoryKv and RedisKv must answer the same compare-and-set the same way (test/contract/kv.test.ts).
 */
export function versionOf(value: string | null): number {
  if (value === null) return 0;
  const m = /^(\d+)\|/.exec(value);
  const v = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(v) ? v : -1;
}
