import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { MemoryKv } from '../../src/store/memoryKv';
import { RedisKv } from '../../src/store/redisKv';
import type { Kv } from '../../src/store/kv';
import { Keyring } from '../../src/session/keyring';
import { ExpiryLedger } from '../../src/session/expiryLedger';
import type { IndexEntry } from '../../src/session/sessionIndex';
import type { GatehouseSession } from '../../src/session/sessionData';
import { randomId } from '../../src/crypto/seal';
import { uniquePrefix } from '../support/login';
import { redisUrl } from '../support/stack';

const SECRET = 'expiry-ledger-test-secret-0123456789abcdef';

describe.each(['memory', 'redis'] as const)('expiry ledger over %s', (kind) => {
  let kv: Kv;
  let redis: Redis | undefined;
  let offset = 0;
  const now = () => Date.now() + offset;
  let prefix: string;
  let keyring: Keyring;
  let ledger: ExpiryLedger;

  beforeAll(() => {
    redis = kind === 'redis' ? new Redis(redisUrl()) : undefined;
    kv = redis ? new RedisKv(redis) : new MemoryKv(now);
  });
  beforeEach(() => {
    prefix = uniquePrefix();
    keyring = new Keyring([SECRET], prefix);
    ledger = new ExpiryLedger(kv, keyring, prefix, now);
  });
  afterAll(async () => {
    if (redis) {
      const keys = await redis.keys('gatehouse-test-*:e:*');
      if (keys.length) await redis.del(...keys);
      await redis.quit();
    }
  });

  const session = (): GatehouseSession => ({
    iss: 'https://idp',
    sub: 'u',
    user: {},
    createdAt: now(),
    absoluteExpiresAt: now() + 600_000,
    activeAt: now(),
  });

  async function sweepOnce(): Promise<IndexEntry[]> {
    const ended: IndexEntry[] = [];
    await ledger.sweep(async (e) => void ended.push(...e));
    return ended;
  }

  it('hands a timed-out session to exactly one of several concurrent sweepers (no session record left)', async () => {
    const id = randomId();
    await ledger.add(keyring.forSession(id), session(), now() - 1);
    const results = await Promise.all([sweepOnce(), sweepOnce(), sweepOnce()]);
    expect(results.flat().map((e) => e.h)).toEqual([keyring.forSession(id).hash]);
    expect(await sweepOnce()).toEqual([]);
  });

  it('never ends a session whose record still lives (slid after its due time was written): schedules it again', async () => {
    const id = randomId();
    const keys = keyring.forSession(id);
    await ledger.add(keys, session(), now() - 1);
    // the slide moved the session's end to +300 ms, and the ledger missed it
    await kv.set(keys.sessionKey, JSON.stringify({ v: 'sealed', exp: now() + 300 }), 1300);
    expect(await sweepOnce()).toEqual([]);
    offset += 400; // past the session's real end (its record may still be there, rounded up to a second)
    if (redis) await sleep(400);
    expect((await sweepOnce()).map((e) => e.h)).toEqual([keys.hash]);
  });

  it('does not hand over sessions that are not due, nor sessions removed because they ended another way', async () => {
    const a = randomId();
    const b = randomId();
    await ledger.add(keyring.forSession(a), session(), now() + 60_000);
    await ledger.add(keyring.forSession(b), session(), now() - 1);
    await ledger.remove(keyring.forSession(b));
    expect(await sweepOnce()).toEqual([]);
  });

  it('keeps what it stores sealed: no session id in clear, and a TTL on each of its keys', async () => {
    const id = randomId();
    await ledger.add(keyring.forSession(id), session(), now() + 60_000);
    if (!redis) return;
    for (const key of await redis.keys(`${prefix}e:*`)) {
      expect(await redis.pttl(key)).toBeGreaterThan(0);
      const dump =
        (await redis.type(key)) === 'hash'
          ? JSON.stringify(await redis.hgetall(key))
          : JSON.stringify(await redis.zrangebyscore(key, '-inf', '+inf'));
      expect(dump).not.toContain(id);
    }
  });
});
