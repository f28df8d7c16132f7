/**
 * The sealed express-session store (src/session/sealedStore.ts) over both backing stores, built the way
 * src/gatehouse.ts builds them:
 * - memory: SealedSessionStore + KvBackingStore over MemoryKv, all on an injected clock;
 * - Redis: SealedSessionStore + connect-redis RedisStore over the real Redis at REDIS_URL (createRedis
 *   client, key prefix of its own per test, removed afterwards). The sealed store's clock is injected
 *   (so a test can move past a session's end while Redis still holds it); Redis TTLs run on real time.
 *
 * What it must hold to: no raw session id and no claim in clear (keys are a keyed hash of the id), a TTL equal
 * to the session's remaining life and never more, the idle and absolute ends enforced by the store itself (not
 * left to Redis expiry), an idle slide that never resurrects a destroyed session, and secret rotation (the
 * first secret keys new records, every secret finds old ones).
 */
import { TOKEN_GRACE_MS } from '../../src/session/expiryLedger';
import { Vault } from '../../src/tokens/vault';
import type { Cookie, SessionData } from 'express-session';
import { randomId } from '../../src/crypto/seal';
import { createLogger } from '../../src/log/logger';
import type { Kv } from '../../src/store/kv';
import { MemoryKv } from '../../src/store/memoryKv';
import { RedisKv } from '../../src/store/redisKv';
import { createRedis, waitForRedis } from '../../src/store/redisClient';
import { Keyring } from '../../src/session/keyring';
import { KvBackingStore, SealedSessionStore, redisBackingStore, sessionExpiry, type Envelope } from '../../src/session/sealedStore';
import type { GatehouseSession } from '../../src/session/sessionData';
import { redisUrl } from '../support/stack';
import { uniquePrefix } from '../support/login';

const SECRET_A = 'session-secret-A-0123456789abcdef0123456789';
const SECRET_B = 'session-secret-B-0123456789abcdef0123456789';
const IDLE_MS = 1800_000;
const ABSOLUTE_MS = 86_400_000;

const silent = createLogger('silent');
/** Time between computing a relative TTL and Redis applying it (same host). */
const LATENCY_MS = 25;

interface Backend {
  readonly kv: Kv;
  readonly prefix: string;
  /**
   * The sealed store's clock: injected and frozen for memory; for Redis real time plus an offset that
   * advance() moves (Redis TTLs run on real time, so the two must not drift apart).
   */
  now(): number;
  advance(ms: number): void;
  /** A sealed store over this backend's (shared) backing store, with its own keyring of `secrets`. */
  store(secrets: readonly string[]): { store: SealedSessionStore; keyring: Keyring };
  /** Every key under this backend's prefix (Redis), or undefined where the store cannot list them (memory). */
  keys(): Promise<string[] | undefined>;
  /**
   * Checks that `key` lives exactly until `exp` (epoch ms) and not longer: PTTL on Redis; on memory by
   * moving the injected clock to just before and to `exp` (destructive: the clock moves).
   */
  expectExpiresAt(key: string, exp: number): Promise<void>;
  close(): Promise<void>;
}

async function memoryBackend(): Promise<Backend> {
  let t = Date.parse('2030-01-01T00:00:00Z');
  const now = () => t;
  const prefix = 'gatehouse-test-mem:';
  const kv = new MemoryKv(now);
  // as src/gatehouse.ts: new KvBackingStore(kv, `${cfg.keyPrefix}s:`, now)
  const backing = new KvBackingStore(kv, `${prefix}s:`, now);
  return {
    kv,
    prefix,
    now,
    advance: (ms) => {
      t += ms;
    },
    store: (secrets) => {
      const keyring = new Keyring(secrets, prefix);
      return { store: new SealedSessionStore(backing, kv, keyring, new Vault(kv), IDLE_MS, now), keyring };
    },
    keys: async () => undefined,
    async expectExpiresAt(key, exp) {
      t = exp - 1;
      expect(await kv.get(key)).not.toBeNull();
      t = exp;
      expect(await kv.get(key)).toBeNull();
    },
    close: async () => undefined,
  };
}

async function redisBackend(): Promise<Backend> {
  let offset = 0;
  const now = () => Date.now() + offset;
  const prefix = uniquePrefix();
  const client = createRedis(redisUrl(), silent);
  if (!(await waitForRedis(client, 5000))) throw new Error('the test Redis at REDIS_URL did not answer');
  const kv = new RedisKv(client);
  const backing = redisBackingStore(client, `${prefix}s:`, now);
  return {
    kv,
    prefix,
    now,
    advance: (ms) => {
      offset += ms;
    },
    store: (secrets) => {
      const keyring = new Keyring(secrets, prefix);
      return { store: new SealedSessionStore(backing, kv, keyring, new Vault(kv), IDLE_MS, now), keyring };
    },
    keys: () => client.keys(`${prefix}*`),
    async expectExpiresAt(key, exp) {
      // PTTL counts real milliseconds from now; `exp` is on the store's clock (real time + offset).
      const before = now();
      const pttl = await client.pttl(key);
      const after = now();
      expect(pttl).toBeGreaterThan(0);
      // The key expires at (time of PTTL) + pttl: at most a second after the session's end, because
      // connect-redis speaks whole seconds and rounds up (so a record is never gone early; the store refuses
      // a session past its exact end). A relative TTL is computed a moment before Redis applies it (LATENCY_MS).
      const late = before + pttl - exp;
      expect({ key, msPastSessionEnd: late <= 1000 + LATENCY_MS ? 'none' : late }).toEqual({ key, msPastSessionEnd: 'none' });
      // ...and never before it (a record gone early would end the session early).
      expect(after + pttl).toBeGreaterThanOrEqual(exp - LATENCY_MS);
    },
    async close() {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length) await client.del(...keys);
      await client.quit();
    },
  };
}

const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));
const get = (s: SealedSessionStore, sid: string) =>
  new Promise<SessionData | null>((resolve, reject) => s.get(sid, (err, sess) => (err ? reject(asError(err)) : resolve(sess ?? null))));
const put = (s: SealedSessionStore, sid: string, sess: SessionData) =>
  new Promise<void>((resolve, reject) => s.set(sid, sess, (err) => (err ? reject(asError(err)) : resolve())));
const destroy = (s: SealedSessionStore, sid: string) =>
  new Promise<void>((resolve, reject) => s.destroy(sid, (err) => (err ? reject(asError(err)) : resolve())));

const CLAIMS = { sub: 'subject-7f3a', email: 'claim-marker-91c@example.test', name: 'Claimant Markerson' };

/** A session as the callback writes it, `ageMs` after login and `idleForMs` after the last activity. */
function session(at: number, o: { ageMs?: number; idleForMs?: number; absoluteMs?: number; sub?: string } = {}): SessionData {
  const createdAt = at - (o.ageMs ?? 0);
  const gatehouse: GatehouseSession = {
    iss: 'https://idp.example.test',
    sub: o.sub ?? CLAIMS.sub,
    sid: 'idp-session-id-5d2',
    user: { ...CLAIMS, ...(o.sub && { sub: o.sub }) },
    createdAt,
    absoluteExpiresAt: createdAt + (o.absoluteMs ?? ABSOLUTE_MS),
    activeAt: at - (o.idleForMs ?? 0),
  };
  const cookie = { originalMaxAge: null, httpOnly: true, path: '/', sameSite: 'strict', secure: false } as unknown as Cookie;
  return { cookie, gatehouse };
}

describe.each([
  ['memory (KvBackingStore)', memoryBackend],
  ['Redis (connect-redis)', redisBackend],
] as const)('sealed session store over %s', (_name, factory) => {
  let b: Backend;
  let store: SealedSessionStore;
  let keyring: Keyring;

  beforeEach(async () => {
    b = await factory();
    ({ store, keyring } = b.store([SECRET_A]));
  });
  afterEach(() => b?.close());

  it('returns what was set, and nothing for an id it never stored', async () => {
    const sid = randomId();
    const sess = session(b.now());
    await put(store, sid, sess);
    expect(await get(store, sid)).toEqual(JSON.parse(JSON.stringify(sess)));
    expect(await get(store, randomId())).toBeNull();
  });

  it('stores under <prefix>s:{<keyed hash>} a value with neither the session id nor any claim in clear', async () => {
    const sid = randomId();
    await put(store, sid, session(b.now()));
    const { hash, sessionKey } = keyring.forSession(sid);
    expect(hash).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(sessionKey).toBe(`${b.prefix}s:{${hash}}`);
    expect(sid).not.toContain(hash);

    const raw = await b.kv.get(sessionKey);
    expect(raw).not.toBeNull();
    const stored = `${sessionKey}\n${raw!}`;
    for (const secret of [
      sid,
      encodeURIComponent(sid),
      Buffer.from(sid).toString('base64'),
      ...Object.values(CLAIMS),
      'idp-session-id-5d2',
      'idp.example.test',
    ]) {
      expect(stored).not.toContain(secret);
    }
    const env = JSON.parse(raw!) as Envelope;
    expect(Object.keys(env).sort()).toEqual(['exp', 'v']);
    expect(env.v).toMatch(/^v1\.[A-Za-z0-9_-]+$/);

    // Redis: the session key is the only key written, and no key name carries the id.
    const keys = await b.keys();
    if (keys) expect(keys).toEqual([sessionKey]);
  });

  it("does not open a value copied under another session's key (sealed with the key as AAD)", async () => {
    const victim = randomId();
    const attacker = randomId();
    await put(store, victim, session(b.now(), { sub: 'victim' }));
    await put(store, attacker, session(b.now(), { sub: 'attacker' }));
    const victimRaw = await b.kv.get(keyring.forSession(victim).sessionKey);
    await b.kv.set(keyring.forSession(attacker).sessionKey, victimRaw!, 60_000);

    expect(await get(store, attacker)).toBeNull();
    expect((await get(store, victim))?.gatehouse?.sub).toBe('victim');
  });

  it('slide() extends a live session and the token record to the new idle end, bounded by the absolute end', async () => {
    const sid = randomId();
    const sess = session(b.now());
    await put(store, sid, sess);
    const { sessionKey, tokensKey } = keyring.forSession(sid);
    await b.kv.set(tokensKey, '1|sealed-tokens', sessionExpiry(sess, IDLE_MS) - b.now());

    b.advance(IDLE_MS / 2);
    const at = b.now();
    const slid: SessionData = { ...sess, gatehouse: { ...sess.gatehouse!, activeAt: at } };
    await store.slide(sid, slid);
    expect((await get(store, sid))?.gatehouse?.activeAt).toBe(at);

    const exp = sessionExpiry(slid, IDLE_MS);
    expect(exp).toBe(at + IDLE_MS);
    // The token record outlives the session by TOKEN_GRACE_MS, for the expiry sweeper (expiryLedger.ts).
    await b.expectExpiresAt(sessionKey, exp);
    await b.expectExpiresAt(tokensKey, exp + TOKEN_GRACE_MS);
  });

  it('slide() never resurrects a destroyed session (destroy, then slide: still gone)', async () => {
    const sid = randomId();
    const sess = session(b.now());
    await put(store, sid, sess);
    const { sessionKey, tokensKey } = keyring.forSession(sid);
    await b.kv.set(tokensKey, '1|sealed-tokens', 60_000);

    // a logout on another tab/replica ends the session (endSession: token record, then session)
    await b.kv.del(tokensKey);
    await destroy(store, sid);
    // ...while a slow request of the same session, loaded before, now records its activity
    b.advance(IDLE_MS / 5);
    await store.slide(sid, { ...sess, gatehouse: { ...sess.gatehouse!, activeAt: b.now() } });

    expect(await get(store, sid)).toBeNull();
    expect(await b.kv.get(sessionKey)).toBeNull();
    expect(await b.kv.get(tokensKey)).toBeNull();
  });

  it('gives the stored record a TTL equal to the remaining life when the idle end comes first', async () => {
    const sid = randomId();
    // written mid-life: logged in 10.25 s ago, last activity 250 ms ago
    const sess = session(b.now(), { ageMs: 10_250, idleForMs: 250 });
    await put(store, sid, sess);
    const exp = sessionExpiry(sess, IDLE_MS);
    expect(exp).toBe(sess.gatehouse!.activeAt + IDLE_MS);
    await b.expectExpiresAt(keyring.forSession(sid).sessionKey, exp);
  });

  it('gives the stored record a TTL equal to the remaining life when the absolute end comes first', async () => {
    const sid = randomId();
    // 300.5 s of absolute lifetime left, less than the idle window
    const sess = session(b.now(), { ageMs: ABSOLUTE_MS - 300_500 });
    await put(store, sid, sess);
    const exp = sessionExpiry(sess, IDLE_MS);
    expect(exp).toBe(sess.gatehouse!.absoluteExpiresAt);
    await b.expectExpiresAt(keyring.forSession(sid).sessionKey, exp);
  });

  it('does not return a session past its idle end, even while the record still exists', async () => {
    const sid = randomId();
    await put(store, sid, session(b.now()));
    b.advance(IDLE_MS - 1000);
    expect(await get(store, sid)).not.toBeNull();
    b.advance(1000);
    expect(await get(store, sid)).toBeNull();
  });

  it('does not return a session past its absolute end, even while the record still exists', async () => {
    const sid = randomId();
    const sess = session(b.now(), { ageMs: ABSOLUTE_MS - 60_000 });
    await put(store, sid, sess);
    b.advance(59_000);
    expect(await get(store, sid)).not.toBeNull();
    b.advance(1000);
    expect(await get(store, sid)).toBeNull();
  });

  it('does not return a record whose stored life is over even if it was written with activity in the future', async () => {
    // an idle end after the absolute end: the absolute end wins
    const sid = randomId();
    const sess = session(b.now(), { ageMs: ABSOLUTE_MS - 1000 });
    sess.gatehouse!.activeAt = b.now() + 10_000;
    await put(store, sid, sess);
    b.advance(1000);
    expect(await get(store, sid)).toBeNull();
  });

  describe('secret rotation', () => {
    it('finds a session written under secret A when the keyring is [B, A], and not with [B] alone', async () => {
      const sid = randomId();
      await put(store, sid, session(b.now()));

      const rotated = b.store([SECRET_B, SECRET_A]);
      expect((await get(rotated.store, sid))?.gatehouse?.sub).toBe(CLAIMS.sub);
      expect(await get(b.store([SECRET_B]).store, sid)).toBeNull();
    });

    it('keeps using secret A for that session after rotation: slide and destroy reach the A-keyed record', async () => {
      const sid = randomId();
      const sess = session(b.now());
      await put(store, sid, sess);
      const underA = keyring.forSession(sid).sessionKey;

      const rotated = b.store([SECRET_B, SECRET_A]);
      const found = await get(rotated.store, sid);
      expect(found?.gatehouse?.secretIndex).toBe(1); // found under the second secret, and the session says so
      expect(rotated.keyring.forSession(sid, found?.gatehouse?.secretIndex).sessionKey).toBe(underA);

      b.advance(IDLE_MS / 2);
      const at = b.now();
      await rotated.store.slide(sid, { ...found!, gatehouse: { ...found!.gatehouse!, activeAt: at } });
      expect((await get(store, sid))?.gatehouse?.activeAt).toBe(at);
      const keys = await b.keys();
      if (keys) expect(keys).toEqual([underA]); // no second copy under B's key

      await destroy(rotated.store, sid);
      expect(await b.kv.get(underA)).toBeNull();
      expect(await get(store, sid)).toBeNull();
    });

    it('writes new sessions under the first secret', async () => {
      const rotated = b.store([SECRET_B, SECRET_A]);
      const sid = randomId();
      await put(rotated.store, sid, session(b.now()));
      expect(await get(b.store([SECRET_B]).store, sid)).not.toBeNull();
      expect(await get(store, sid)).toBeNull(); // an instance that only knows A does not find it
    });
  });
});
