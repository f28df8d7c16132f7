/**
 * The Kv contract (src/store/kv.ts), one suite run against both implementations:
 * - MemoryKv with an injected clock (expiry is tested by moving time, never by sleeping);
 * - RedisKv on the real Redis at REDIS_URL, built the way Gatehouse builds it (createRedis: no offline
 *   queue, bounded command timeout), every key under a prefix of its own, removed afterwards;
 * - RedisKv on a private 3-master Redis Cluster (every script must be cluster-safe).
 *
 * What the rest of Gatehouse relies on: `replace` never resurrects (the idle slide after a logout),
 * `setIfAbsent` is a lock (exactly one winner), `getDel` is one-time (login transactions), `compareAndSet`
 * never lets an older token set overwrite a newer one, and a lock is released or renewed only by its owner.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryKv } from '../../src/store/memoryKv';
import { RedisKv } from '../../src/store/redisKv';
import { createRedis, waitForRedis, type RedisClient } from '../../src/store/redisClient';
import { StoreUnavailableError, versionOf, type Kv } from '../../src/store/kv';
import { createLogger } from '../../src/log/logger';
import { findFreePort } from '../support/redisServer';
import { startRedisCluster } from '../support/redisTopologies';
import { redisUrl } from '../support/stack';
import { uniquePrefix } from '../support/login';

interface Backend {
  readonly kv: Kv;
  /** A key of this test run (prefixed, so the shared Redis is never touched outside it). */
  key(name: string): string;
  /** Lets `ms` pass for the store: moves the injected clock (memory) or really waits (Redis). */
  elapse(ms: number): Promise<void>;
  /** Remaining TTL in ms (PTTL), or undefined where the store does not show it (memory). */
  pttl(key: string): Promise<number | undefined>;
  close(): Promise<void>;
}

type BackendFactory = () => Promise<Backend>;

const silent = createLogger('silent');

const memory: BackendFactory = async () => {
  let t = Date.parse('2030-01-01T00:00:00Z');
  const kv = new MemoryKv(() => t);
  return {
    kv,
    key: (name) => `m:${name}`,
    elapse: async (ms) => {
      t += ms;
    },
    pttl: async () => undefined,
    close: async () => undefined,
  };
};

const redis: BackendFactory = async () => {
  const prefix = uniquePrefix();
  const client = createRedis(redisUrl(), silent);
  if (!(await waitForRedis(client, 5000))) throw new Error(`the test Redis at REDIS_URL did not answer`);
  const kv = new RedisKv(client);
  return {
    kv,
    key: (name) => `${prefix}${name}`,
    // Redis checks expiry at every access with millisecond precision; a short real wait is exact enough.
    elapse: (ms) => sleep(ms),
    pttl: (key) => client.pttl(key),
    async close() {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length) await client.del(...keys);
      await client.quit();
    },
  };
};

/** RedisKv on a real 3-master Redis Cluster: keys spread over the nodes (MOVED handled by ioredis). */
const cluster: BackendFactory = async () => {
  const prefix = uniquePrefix();
  const topology = await startRedisCluster(3);
  const client = createRedis(
    { mode: 'cluster', nodes: topology.masters.map((m) => ({ host: '127.0.0.1', port: m.port })), auth: {}, tls: undefined },
    silent,
  );
  if (!(await waitForRedis(client, 10_000))) throw new Error('the test Redis Cluster did not answer');
  return {
    kv: new RedisKv(client),
    key: (name) => `${prefix}${name}`,
    elapse: (ms) => sleep(ms),
    pttl: (key) => client.pttl(key),
    async close() {
      await client.quit();
      await topology.stop();
    },
  };
};

describe.each([
  ['MemoryKv', memory],
  ['RedisKv', redis],
  ['RedisKv on Redis Cluster', cluster],
] as const)('Kv contract: %s', (name, factory) => {
  let b: Backend;
  let n = 0;
  /** A fresh key for each use, so tests never see each other's records. */
  const fresh = () => b.key(`k${++n}`);
  const isRedis = name !== 'MemoryKv';

  beforeAll(async () => {
    b = await factory();
  });
  afterAll(() => b?.close());

  describe('get / set / del', () => {
    it('reads back what was set, and null for a key never set', async () => {
      const k = fresh();
      await b.kv.set(k, 'v1', 60_000);
      expect(await b.kv.get(k)).toBe('v1');
      expect(await b.kv.get(fresh())).toBeNull();
    });

    it('sets a TTL no longer than asked (PTTL > 0 and <= ttl on Redis)', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 60_000);
      const ttl = await b.pttl(k);
      if (isRedis) {
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(60_000);
      }
    });

    it('forgets a value once its TTL has passed', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 200);
      expect(await b.kv.get(k)).toBe('v');
      await b.elapse(300);
      expect(await b.kv.get(k)).toBeNull();
    });

    if (name === 'MemoryKv') {
      it('keeps a value until exactly its TTL (injected clock)', async () => {
        const k = fresh();
        await b.kv.set(k, 'v', 1000);
        await b.elapse(999);
        expect(await b.kv.get(k)).toBe('v');
        await b.elapse(1);
        expect(await b.kv.get(k)).toBeNull();
      });
    }

    it('set overwrites value and TTL', async () => {
      const k = fresh();
      await b.kv.set(k, 'old', 200);
      await b.kv.set(k, 'new', 60_000);
      await b.elapse(300);
      expect(await b.kv.get(k)).toBe('new');
    });

    it('del removes every key given, and ignores missing ones', async () => {
      const [k1, k2, k3] = [fresh(), fresh(), fresh()];
      await b.kv.set(k1, 'a', 60_000);
      await b.kv.set(k2, 'b', 60_000);
      await b.kv.del(k1, k2, k3);
      expect(await b.kv.get(k1)).toBeNull();
      expect(await b.kv.get(k2)).toBeNull();
    });

    it('ping resolves while the store answers', async () => {
      await expect(b.kv.ping()).resolves.toBeUndefined();
    });
  });

  describe('replace (SET XX): never resurrects', () => {
    it('does not create a key that does not exist', async () => {
      const k = fresh();
      expect(await b.kv.replace(k, 'v', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBeNull();
    });

    it('overwrites an existing key, with the new TTL', async () => {
      const k = fresh();
      await b.kv.set(k, 'old', 200);
      expect(await b.kv.replace(k, 'new', 60_000)).toBe(true);
      expect(await b.kv.get(k)).toBe('new');
      if (isRedis) expect(await b.pttl(k)).toBeGreaterThan(200);
      await b.elapse(300);
      expect(await b.kv.get(k)).toBe('new');
    });

    it('does not bring back a deleted key', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 60_000);
      await b.kv.del(k);
      expect(await b.kv.replace(k, 'again', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBeNull();
    });

    it('does not bring back an expired key', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 100);
      await b.elapse(200);
      expect(await b.kv.replace(k, 'again', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBeNull();
    });
  });

  describe("replaceWithCompanion: one session's two records (one hash tag, one cluster slot)", () => {
    it('rewrites an existing record and gives its companion the new TTL in the same step', async () => {
      const tag = `{t${++n}}`;
      const [k, companion] = [b.key(`${tag}session`), b.key(`${tag}tokens`)];
      await b.kv.set(k, 'old', 60_000);
      await b.kv.set(companion, 'tokens', 60_000);
      expect(await b.kv.replaceWithCompanion(k, 'new', 120_000, companion, 180_000)).toBe(true);
      expect(await b.kv.get(k)).toBe('new');
      if (isRedis) expect(await b.pttl(companion)).toBeGreaterThan(120_000);
    });

    it('never resurrects a deleted record', async () => {
      const tag = `{t${++n}}`;
      const [k, companion] = [b.key(`${tag}session`), b.key(`${tag}tokens`)];
      expect(await b.kv.replaceWithCompanion(k, 'new', 60_000, companion, 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBeNull();
    });
  });

  describe('setIfAbsent (SET NX): a lock', () => {
    it('creates an absent key, and refuses an existing one without changing it', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'first', 60_000)).toBe(true);
      expect(await b.kv.setIfAbsent(k, 'second', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBe('first');
    });

    it('succeeds again once the previous holder expired', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'first', 100)).toBe(true);
      await b.elapse(200);
      expect(await b.kv.setIfAbsent(k, 'second', 60_000)).toBe(true);
      expect(await b.kv.get(k)).toBe('second');
    });

    it('gives exactly one of 20 concurrent callers the key', async () => {
      const k = fresh();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => b.kv.setIfAbsent(k, `owner-${i}`, 60_000)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await b.kv.get(k)).toBe(`owner-${results.indexOf(true)}`);
    });
  });

  describe('getDel: one-time records', () => {
    it('returns the value once, then null', async () => {
      const k = fresh();
      await b.kv.set(k, 'once', 60_000);
      expect(await b.kv.getDel(k)).toBe('once');
      expect(await b.kv.getDel(k)).toBeNull();
      expect(await b.kv.get(k)).toBeNull();
    });

    it('gives the value to exactly one of two concurrent callers', async () => {
      for (let round = 0; round < 10; round++) {
        const k = fresh();
        await b.kv.set(k, `tx-${round}`, 60_000);
        const got = await Promise.all([b.kv.getDel(k), b.kv.getDel(k)]);
        expect(got.filter((v) => v !== null)).toEqual([`tx-${round}`]);
        expect(await b.kv.get(k)).toBeNull();
      }
    });

    it('returns null for an expired record', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 100);
      await b.elapse(200);
      expect(await b.kv.getDel(k)).toBeNull();
    });
  });

  describe('admit: a bounded set whose members leave at their own time (login transactions in flight)', () => {
    const T = Date.parse('2030-01-01T00:00:00Z');

    it('admits up to max members and refuses the next one', async () => {
      const k = fresh();
      for (const m of ['a', 'b', 'c']) expect(await b.kv.admit(k, m, T + 60_000, T, 3)).toBe(true);
      expect(await b.kv.admit(k, 'd', T + 60_000, T, 3)).toBe(false);
      expect(await b.kv.admit(k, 'd', T + 60_000, T + 1000, 3)).toBe(false);
    });

    it('makes room once a member’s time has passed: the set heals by itself', async () => {
      const k = fresh();
      expect(await b.kv.admit(k, 'early', T + 1000, T, 2)).toBe(true);
      expect(await b.kv.admit(k, 'late', T + 60_000, T, 2)).toBe(true);
      expect(await b.kv.admit(k, 'x', T + 60_000, T + 999, 2)).toBe(false);
      expect(await b.kv.admit(k, 'x', T + 60_000, T + 1000, 2)).toBe(true);
      expect(await b.kv.admit(k, 'y', T + 60_000, T + 1000, 2)).toBe(false);
    });

    it('makes room when a member leaves early (unschedule)', async () => {
      const k = fresh();
      expect(await b.kv.admit(k, 'a', T + 60_000, T, 1)).toBe(true);
      expect(await b.kv.admit(k, 'b', T + 60_000, T, 1)).toBe(false);
      await b.kv.unschedule(k, 'a');
      expect(await b.kv.admit(k, 'b', T + 60_000, T, 1)).toBe(true);
    });

    it('never admits more than max of many concurrent callers', async () => {
      const k = fresh();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => b.kv.admit(k, `m${i}`, T + 60_000, T, 5)));
      expect(results.filter(Boolean)).toHaveLength(5);
    });

    it('gives the set a TTL that covers its latest member and no more (PTTL on Redis)', async () => {
      const k = fresh();
      await b.kv.admit(k, 'a', T + 60_000, T, 5);
      await b.kv.admit(k, 'b', T + 1000, T, 5); // an earlier member never shortens it
      if (isRedis) {
        const ttl = (await b.pttl(k))!;
        expect(ttl).toBeGreaterThan(50_000);
        expect(ttl).toBeLessThanOrEqual(60_000);
      }
    });
  });

  describe('compareAndSet: versioned "<version>|<payload>" records', () => {
    it('expected 0 means absent: creates a missing key, refuses an existing one', async () => {
      const k = fresh();
      expect(await b.kv.compareAndSet(k, 0, '1|a', 60_000)).toBe(true);
      expect(await b.kv.get(k)).toBe('1|a');
      expect(await b.kv.compareAndSet(k, 0, '1|b', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBe('1|a');
    });

    it("'keep' keeps the record's TTL: a refresh never shortens what the idle slide extended", async () => {
      const k = fresh();
      expect(await b.kv.compareAndSet(k, 0, '1|login', 60_000)).toBe(true);
      await b.kv.expire(k, 600_000); // the idle slide
      expect(await b.kv.compareAndSet(k, 1, '2|refreshed', 'keep')).toBe(true);
      expect(await b.kv.get(k)).toBe('2|refreshed');
      if (isRedis) expect(await b.pttl(k)).toBeGreaterThan(60_000);
      else {
        await b.elapse(120_000);
        expect(await b.kv.get(k)).toBe('2|refreshed');
      }
    });

    it('refuses a wrong version and leaves the record as it was', async () => {
      const k = fresh();
      await b.kv.set(k, '3|current', 60_000);
      for (const wrong of [0, 1, 2, 4, 10]) expect(await b.kv.compareAndSet(k, wrong, `${wrong + 1}|stale`, 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBe('3|current');
    });

    it('versions increment: each write is accepted once from the version it read', async () => {
      const k = fresh();
      expect(await b.kv.compareAndSet(k, 0, '1|a', 60_000)).toBe(true);
      expect(await b.kv.compareAndSet(k, 1, '2|b', 60_000)).toBe(true);
      expect(versionOf(await b.kv.get(k))).toBe(2);
      // a writer that read version 1 earlier can no longer write over version 2
      expect(await b.kv.compareAndSet(k, 1, '2|older', 60_000)).toBe(false);
      expect(await b.kv.compareAndSet(k, 2, '3|c', 60_000)).toBe(true);
      expect(await b.kv.get(k)).toBe('3|c');
    });

    it('sets the TTL it is given', async () => {
      const k = fresh();
      expect(await b.kv.compareAndSet(k, 0, '1|a', 200)).toBe(true);
      if (isRedis) {
        const ttl = await b.pttl(k);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(200);
      }
      await b.elapse(300);
      expect(await b.kv.get(k)).toBeNull();
      // expired = absent again
      expect(await b.kv.compareAndSet(k, 0, '1|b', 60_000)).toBe(true);
    });

    it('lets exactly one of 20 concurrent writers from the same version win', async () => {
      const k = fresh();
      await b.kv.set(k, '7|base', 60_000);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => b.kv.compareAndSet(k, 7, `8|writer-${i}`, 60_000)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await b.kv.get(k)).toBe(`8|writer-${results.indexOf(true)}`);
    });

    it('treats a value without a "<digits>|" version as no version at all (both stores agree)', async () => {
      for (const odd of ['plain', '|x', ' 1|x', '+1|x', '1.0|x', '0x1|x', 'abc|1']) {
        const k = fresh();
        await b.kv.set(k, odd, 60_000);
        for (const expected of [0, 1]) expect(await b.kv.compareAndSet(k, expected, `${expected + 1}|new`, 60_000)).toBe(false);
        expect(await b.kv.get(k)).toBe(odd);
      }
    });
  });

  describe('swapLock: a cooldown marker replaces only our own lock', () => {
    it('swaps the owner’s lock for the marker, and never another owner’s or a missing one', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'owner-a', 60_000)).toBe(true);
      expect(await b.kv.swapLock(k, 'owner-b', 'cooldown', 1000)).toBe(false);
      expect(await b.kv.get(k)).toBe('owner-a');
      expect(await b.kv.swapLock(k, 'owner-a', 'cooldown', 1000)).toBe(true);
      expect(await b.kv.get(k)).toBe('cooldown');
      expect(await b.kv.releaseLock(k, 'owner-a')).toBe(false); // the marker outlives the owner's release
      expect(await b.kv.swapLock(fresh(), 'owner-a', 'cooldown', 1000)).toBe(false);
    });
  });

  describe('releaseLock / renewLock: only by the owner', () => {
    it('another owner can neither release nor renew the lock', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'owner-a', 300)).toBe(true);
      expect(await b.kv.releaseLock(k, 'owner-b')).toBe(false);
      expect(await b.kv.renewLock(k, 'owner-b', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBe('owner-a');
      if (isRedis) expect(await b.pttl(k)).toBeLessThanOrEqual(300);
      // the foreign renewal did not extend it: it still expires on its own lease
      await b.elapse(400);
      expect(await b.kv.get(k)).toBeNull();
    });

    it('the owner renews its lease', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'owner-a', 200)).toBe(true);
      expect(await b.kv.renewLock(k, 'owner-a', 60_000)).toBe(true);
      if (isRedis) expect(await b.pttl(k)).toBeGreaterThan(200);
      await b.elapse(300);
      expect(await b.kv.get(k)).toBe('owner-a');
    });

    it('the owner releases it, once; then another caller can take it', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'owner-a', 60_000)).toBe(true);
      expect(await b.kv.releaseLock(k, 'owner-a')).toBe(true);
      expect(await b.kv.get(k)).toBeNull();
      expect(await b.kv.releaseLock(k, 'owner-a')).toBe(false);
      expect(await b.kv.setIfAbsent(k, 'owner-b', 60_000)).toBe(true);
      // the former owner cannot release the new holder's lock
      expect(await b.kv.releaseLock(k, 'owner-a')).toBe(false);
      expect(await b.kv.get(k)).toBe('owner-b');
    });

    it('renewing a lock that is gone does not create it', async () => {
      const k = fresh();
      expect(await b.kv.setIfAbsent(k, 'owner-a', 100)).toBe(true);
      await b.elapse(200);
      expect(await b.kv.renewLock(k, 'owner-a', 60_000)).toBe(false);
      expect(await b.kv.get(k)).toBeNull();
    });
  });

  describe('expire', () => {
    it('shortens or extends the TTL of an existing key', async () => {
      const k = fresh();
      await b.kv.set(k, 'v', 60_000);
      await b.kv.expire(k, 200);
      if (isRedis) {
        const ttl = await b.pttl(k);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(200);
      }
      await b.elapse(300);
      expect(await b.kv.get(k)).toBeNull();

      const k2 = fresh();
      await b.kv.set(k2, 'v', 200);
      await b.kv.expire(k2, 60_000);
      await b.elapse(300);
      expect(await b.kv.get(k2)).toBe('v');
    });

    it('does not create a missing key', async () => {
      const k = fresh();
      await b.kv.expire(k, 60_000);
      expect(await b.kv.get(k)).toBeNull();
    });
  });
});

describe('RedisKv when Redis does not answer', () => {
  let client: RedisClient;
  let kv: RedisKv;

  beforeAll(async () => {
    // Nothing listens on this port: the client keeps trying to connect in the background.
    client = createRedis(`redis://127.0.0.1:${await findFreePort()}`, silent);
    kv = new RedisKv(client);
  });
  afterAll(() => client.disconnect());

  it('fails every operation with StoreUnavailableError at once (no offline queue), never a "missing record"', async () => {
    const ops: Array<[string, () => Promise<unknown>]> = [
      ['get', () => kv.get('k')],
      ['set', () => kv.set('k', 'v', 1000)],
      ['replace', () => kv.replace('k', 'v', 1000)],
      ['setIfAbsent', () => kv.setIfAbsent('k', 'v', 1000)],
      ['getDel', () => kv.getDel('k')],
      ['del', () => kv.del('k')],
      ['expire', () => kv.expire('k', 1000)],
      ['compareAndSet', () => kv.compareAndSet('k', 0, '1|v', 1000)],
      ['releaseLock', () => kv.releaseLock('k', 'o')],
      ['renewLock', () => kv.renewLock('k', 'o', 1000)],
      ['admit', () => kv.admit('k', 'm', 2000, 1000, 5)],
      ['countInWindow', () => kv.countInWindow('k', 1000)],
      ['ping', () => kv.ping()],
    ];
    for (const [op, run] of ops) {
      const outcome = await run().then(
        (value) => ({ op, value }),
        (err: unknown) => ({ op, error: err instanceof StoreUnavailableError ? 'StoreUnavailableError' : String(err) }),
      );
      expect(outcome).toEqual({ op, error: 'StoreUnavailableError' });
    }
  });
});
