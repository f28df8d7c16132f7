/**
 * express-session store that seals every session before it reaches the backing store.
 *
 * The backing store is connect-redis (Redis) or KvBackingStore (memory); either way it only ever sees
 * `{h}` (a keyed hash of the session id, see keyring.ts) and an envelope `{ v: <sealed JSON>, exp }`.
 *
 * Reads: one MGET of the session record and its token record (find()), whichever the backing store, kept
 * for a moment in this replica's SessionCache (sessionCache.ts), which every write here tells.
 * Writes: express-session writes a session only when it is created (login): resave and
 * saveUninitialized are off and Gatehouse never edits a loaded session. The idle window slides through
 * slide(), a SET ... XX that can never resurrect a session another request destroyed meanwhile.
 */
import { Store, type SessionData } from 'express-session';
import { RedisStore } from 'connect-redis';
import type { RedisClient } from '../store/redisClient';
import type { Kv } from '../store/kv';
import { StoreUnavailableError } from '../store/kv';
import { open, seal } from '../crypto/seal';
import type { Keyring, SessionKeys } from './keyring';
import { TOKEN_GRACE_MS } from './expiryLedger';
import type { Vault } from '../tokens/vault';
import { SessionCache } from './sessionCache';

export interface Envelope {
  v: string;
  /** Epoch ms when the session ends at the latest: the backing store's TTL. */
  exp: number;
}

type Cb<T = unknown> = (err?: unknown, value?: T) => void;

/** The part of express-session's Store API the sealed store delegates writes to (reads are one MGET: find()). */
export interface BackingStore {
  set(id: string, env: Envelope, cb: Cb): void;
  destroy(id: string, cb: Cb): void;
}

function call<T>(fn: (cb: Cb<T>) => unknown): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    Promise.resolve(fn((err, value) => (err ? reject(new StoreUnavailableError(err)) : resolve(value)))).catch((e: unknown) =>
      reject(new StoreUnavailableError(e)),
    );
  });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Remaining life of a session in ms: the earlier of its absolute end and its idle end. */
export function sessionExpiry(sess: SessionData, idleMs: number): number {
  const session = sess.gatehouse;
  if (!session) return 0;
  return Math.min(session.absoluteExpiresAt, session.activeAt + idleMs);
}

export class SealedSessionStore extends Store {
  constructor(
    private readonly backing: BackingStore,
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    private readonly vault: Vault,
    private readonly idleMs: number,
    private readonly now: () => number,
    private readonly cache: SessionCache = SessionCache.none(),
  ) {
    super();
  }

  /** Backing-store id of a session: its hash tag, so connect-redis' `prefix + id` is `<prefix>s:{h}`. */
  static backingId(keys: SessionKeys): string {
    return keys.sessionKey.slice(keys.sessionKey.indexOf('{'));
  }

  override get(sid: string, cb: Cb<SessionData | null>): void {
    this.find(sid).then(
      (s) => cb(null, s),
      (e: unknown) => cb(e),
    );
  }

  /**
   * One round trip per lookup, or none: the session record and its token record share a hash slot and are
   * read together (MGET), or were so read a moment ago (SessionCache); the token record is handed to the
   * vault for this request (Vault.prime), so proxying with a valid access token costs at most one Redis read
   * and no write.
   */
  private async find(sid: string): Promise<SessionData | null> {
    for (let i = 0; i < this.keyring.secretCount; i++) {
      const keys = this.keyring.forSession(sid, i);
      let read = this.cache.get(keys.hash);
      if (!read) {
        const mark = this.cache.mark();
        const [raw, tokens] = await this.kv.getPair(keys.sessionKey, keys.tokensKey);
        const env = raw === null ? null : (JSON.parse(raw) as Partial<Envelope>);
        if (!env || typeof env.v !== 'string') continue;
        const json = open(keys.sealKey, env.v, keys.sessionKey);
        if (json === undefined) return null; // not sealed for this id: never resumes anything
        read = { session: deepFreeze(JSON.parse(json) as SessionData), tokens: this.vault.parse(keys, tokens) };
        this.cache.keep(keys.hash, read, mark);
      }
      // Each request gets its own copy of what it may change (express-session builds its Session and Cookie
      // on it, the vault keys this request's token record by its `gatehouse` object); the identity claims
      // are shared, frozen.
      const { cookie, gatehouse } = read.session;
      const sess: SessionData = { ...read.session, cookie: { ...cookie }, ...(gatehouse && { gatehouse: { ...gatehouse } }) };
      if (sess.gatehouse) {
        if (i > 0) sess.gatehouse.secretIndex = i;
        else delete sess.gatehouse.secretIndex;
        this.vault.prime(sess.gatehouse, read.tokens);
      }
      return sessionExpiry(sess, this.idleMs) > this.now() ? sess : null;
    }
    return null;
  }

  override set(sid: string, sess: SessionData, cb?: Cb): void {
    const keys = this.keyring.forSession(sid, sess.gatehouse?.secretIndex);
    const exp = sessionExpiry(sess, this.idleMs);
    const env: Envelope = { v: seal(keys.sealKey, JSON.stringify(sess), keys.sessionKey), exp };
    call((c) => this.backing.set(SealedSessionStore.backingId(keys), env, c)).then(
      () => {
        void this.cache.changed(keys.hash);
        cb?.();
      },
      (e: unknown) => cb?.(e),
    );
  }

  /** Deletes the session under every configured secret: destroy() is not told which one keyed it. */
  override destroy(sid: string, cb?: Cb): void {
    const all = Array.from({ length: this.keyring.secretCount }, (_, i) => this.keyring.forSession(sid, i));
    Promise.all(all.map((keys) => call((c) => this.backing.destroy(SealedSessionStore.backingId(keys), c)))).then(
      () => Promise.all(all.map((keys) => this.cache.changed(keys.hash))).then(() => cb?.()),
      (e: unknown) => cb?.(e),
    );
  }

  /** Deletes the session stored under `keys`: how a session is ended without its id (Terminator). */
  async remove(keys: SessionKeys): Promise<void> {
    await call((c) => this.backing.destroy(SealedSessionStore.backingId(keys), c));
    await this.cache.changed(keys.hash);
  }

  /**
   * OWASP session management "Idle Timeout": records activity in steps. Rewrites the sealed session only if
   * it still exists (SET XX) and extends the token record to the same end, so both expire together.
   */
  async slide(sid: string, sess: SessionData): Promise<boolean> {
    const keys = this.keyring.forSession(sid, sess.gatehouse?.secretIndex);
    const exp = sessionExpiry(sess, this.idleMs);
    const ttl = exp - this.now();
    if (ttl <= 0) return false;
    const env: Envelope = { v: seal(keys.sealKey, JSON.stringify(sess), keys.sessionKey), exp };
    // The token record outlives the session by TOKEN_GRACE_MS, for the expiry sweeper (expiryLedger.ts).
    const slid = await this.kv.replaceWithCompanion(keys.sessionKey, JSON.stringify(env), ttl, keys.tokensKey, ttl + TOKEN_GRACE_MS);
    void this.cache.changed(keys.hash);
    return slid;
  }
}

/** Backing store over a Kv (the memory store), with the same key layout and envelope as connect-redis. */
export class KvBackingStore implements BackingStore {
  constructor(
    private readonly kv: Kv,
    private readonly prefix: string,
    private readonly now: () => number,
  ) {}

  set(id: string, env: Envelope, cb: Cb): void {
    const ttl = env.exp - this.now();
    const op = ttl > 0 ? this.kv.set(this.prefix + id, JSON.stringify(env), ttl) : this.kv.del(this.prefix + id);
    op.then(
      () => cb(),
      (e: unknown) => cb(e),
    );
  }
  destroy(id: string, cb: Cb): void {
    this.kv.del(this.prefix + id).then(
      () => cb(),
      (e: unknown) => cb(e),
    );
  }
}

/** The Redis backing store: connect-redis over ioredis, with the same key layout and envelope. */
export function redisBackingStore(redis: RedisClient, prefix: string, now: () => number): BackingStore {
  return new RedisStore({
    client: redis,
    prefix,
    // connect-redis takes whole seconds (SET ... EX): round up, so the record is never gone before the
    // session ends (find() refuses it after its exact end); at <= 0 connect-redis deletes it.
    ttl: (env: unknown) => Math.ceil(((env as Envelope).exp - now()) / 1000),
  }) as unknown as BackingStore;
}
