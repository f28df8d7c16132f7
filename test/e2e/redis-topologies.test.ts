/**
 * Redis as deployed: Standalone, Sentinel and Cluster deployments, configured like the config file's `redis`
 * object. Each runs the core flows for real (login, a refresh storm across two gateway instances, logout)
 * against private redis-server processes: a 3-master Cluster, and a master + replica watched by a Sentinel.
 * A Sentinel failover in the middle of traffic (with refreshes rotating refresh tokens) must lose no session.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { SPA, startStack, type Stack } from '../support/stack';
import { startRedisCluster, startRedisSentinel, type RedisCluster, type RedisSentinel } from '../support/redisTopologies';
import { api, keysOf, login, outliveAccessToken, refreshCounters, refreshTokenReuse } from '../support/refresh';
import request from 'supertest';

const AT_TTL = 2; // the test IdP's access-token lifetime (s)

/** Every key under `prefix` on every node, with the cluster slot Redis computes for it. */
async function keysWithSlots(nodes: Redis[], prefix: string): Promise<Array<{ key: string; slot: number }>> {
  const out: Array<{ key: string; slot: number }> = [];
  for (const node of nodes) {
    for (const key of await node.keys(`${prefix}*`)) out.push({ key, slot: Number(await node.call('CLUSTER', 'KEYSLOT', key)) });
  }
  return out;
}

/** Login, a refresh storm split over two replicas, logout: the flows every topology must carry. */
function coreFlows(get: () => Stack) {
  it('logs in and proxies with the session found by either replica', async () => {
    const s = get();
    const cookie = await login(s, 'topo-login');
    for (const inst of s.instances) expect((await api(inst, cookie)).status).toBe(200);
  });

  it('answers a storm of 30 calls over two replicas at expiry with 200 after exactly one refresh grant', async () => {
    const s = get();
    const cookie = await login(s, 'topo-storm');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const rs = await Promise.all(Array.from({ length: 30 }, (_, i) => api(s.instances[i % 2]!, cookie, `/storm/${i}`)));
    expect(rs.map((r) => r.status)).toEqual(Array(30).fill(200));
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(1);
    expect(after.reuse).toBe(0);
  });

  it('logs out on one replica and the cookie is dead on the other', async () => {
    const s = get();
    const cookie = await login(s, 'topo-logout');
    const out = await request(s.instances[0]!.server).post('/auth/logout').set(SPA).set('Cookie', cookie);
    expect(out.status).toBe(200);
    const after = await api(s.instances[1]!, cookie);
    expect(after.status).toBe(401);
  });
}

describe('Redis Cluster (3 masters)', () => {
  let cluster: RedisCluster;
  let s: Stack;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    s = await startStack({ store: 'memory', instances: 2, gateway: { redis: cluster.settings } });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    await cluster?.stop();
  });

  coreFlows(() => s);

  it('keeps every record of one session in one hash slot, and spreads sessions over the masters', async () => {
    const cookies = await Promise.all(['slot-a', 'slot-b', 'slot-c', 'slot-d', 'slot-e', 'slot-f'].map((sub) => login(s, sub)));
    for (const cookie of cookies) await api(s.gw, cookie);
    const all = await keysWithSlots(cluster.direct, s.prefix);
    const slots = new Set<number>();
    for (const cookie of cookies) {
      const keys = keysOf(s, cookie);
      const own = all.filter((k) => k.key.includes(`{${keys.hash}}`));
      // the session record and the token record at least; the lock and counters when present
      expect(own.map((k) => k.key)).toEqual(expect.arrayContaining([keys.sessionKey, keys.tokensKey]));
      expect(new Set(own.map((k) => k.slot)).size).toBe(1);
      slots.add(own[0]!.slot);
    }
    expect(slots.size).toBeGreaterThan(1);
    // Which masters hold sessions: more than one (the keyed hash spreads them).
    const holders = await Promise.all(cluster.direct.map(async (n) => (await n.keys(`${s.prefix}s:*`)).length > 0));
    expect(holders.filter(Boolean).length).toBeGreaterThan(1);
  });

  it('reports ready on /readyz', async () => {
    const r = await request(s.gw.server).get('/readyz');
    expect(r.status).toBe(200);
  });
});

describe('Redis Sentinel (master + replica)', () => {
  let sentinel: RedisSentinel;
  let s: Stack;
  beforeAll(async () => {
    sentinel = await startRedisSentinel();
    s = await startStack({ store: 'memory', instances: 2, gateway: { redis: sentinel.settings } });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    await sentinel?.stop();
  });

  coreFlows(() => s);

  it('loses no session to a failover during traffic, refreshes included (rotated refresh tokens survive)', async () => {
    const subs = ['fo-1', 'fo-2', 'fo-3', 'fo-4'];
    const cookies = await Promise.all(subs.map((sub) => login(s, sub)));
    const statuses: number[] = [];
    let stop = false;
    // Each session calls through both replicas, one call at a time, until told to stop.
    const traffic = cookies.map(async (cookie, i) => {
      for (let n = 0; !stop; n++) {
        const r = await api(s.instances[(i + n) % 2]!, cookie, `/failover/${i}/${n}`);
        statuses.push(r.status);
        await sleep(50);
      }
    });
    await sleep(1000);
    const { from, to } = await sentinel.failover();
    expect(to).not.toBe(from);
    // Until the old master follows the new one, the new master has no replica: locks and token writes wait
    // (refreshes answer 503 once a token has expired). Then refreshes must rotate tokens on the new master.
    await sentinel.replicated();
    const grantsAtSwitch = refreshCounters(s.idp).grants;
    await outliveAccessToken(AT_TTL);
    await sleep(1500);
    stop = true;
    await Promise.all(traffic);

    // A failover may cost a few 503s while the new master is found; never a 401 (a lost session).
    expect(statuses.filter((x) => x !== 200 && x !== 503)).toEqual([]);
    expect(refreshCounters(s.idp).grants).toBeGreaterThan(grantsAtSwitch);
    expect(refreshCounters(s.idp).reuse).toBe(0);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    // Every session still works, on both replicas.
    for (const cookie of cookies) for (const inst of s.instances) expect((await api(inst, cookie)).status).toBe(200);
  }, 90_000);
});
