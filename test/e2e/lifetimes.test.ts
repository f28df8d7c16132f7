/**
 * Session lifetimes, idle and absolute, enforced server-side, with short real windows, the real IdP and
 * real Redis: expiry answers 401 and leaves nothing in Redis, the refresh token is revoked at the IdP (the IdP
 * cannot know the session timed out here), /auth/session reports both ends without extending the session,
 * and the idle window slides without a Redis write per request (counted with INFO commandstats on a private
 * redis-server: a write per request would cost every replica a round trip on every call).
 * The IdP's access tokens live long here, so no refresh grant interferes with the counts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { TOKEN_GRACE_MS } from '../../src/session/expiryLedger';
import { Redis } from 'ioredis';
import { loginAs, type Agent } from '../support/login';
import { startRedisServer, type RedisServerHandle } from '../support/redisServer';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

/** Logs `sub` in; `refreshToken` is the one the IdP issued for this login, `t0`/`t1` bracket the callback. */
async function login(s: Stack, inst: Instance, sub: string): Promise<{ agent: Agent; refreshToken: string; t0: number; t1: number }> {
  const agent = inst.agent();
  const issuedBefore = s.idp.tokensIssued().length;
  const t0 = Date.now();
  const cb = await loginAs(agent, s.idp, sub);
  const t1 = Date.now();
  expect(cb.status).toBe(302);
  // the code grant's response: access_token, refresh_token, id_token, in that order
  const [, refreshToken] = s.idp.tokensIssued().slice(issuedBefore);
  if (!refreshToken) throw new Error('the IdP issued no refresh token');
  return { agent, refreshToken, t0, t1 };
}

describe('idle and absolute lifetimes', () => {
  let s: Stack;
  /** a replica with a 4 s absolute lifetime */
  let shortAbsolute: Instance;
  beforeAll(async () => {
    s = await startStack({ gateway: { sessionIdleSeconds: 2, sessionAbsoluteSeconds: 60 }, idp: { accessTokenTtl: 30 } });
    shortAbsolute = await s.addInstance({ sessionIdleSeconds: 2, sessionAbsoluteSeconds: 4 });
  });
  afterAll(() => s?.close());

  const keys = async () => new Set(await s.redis!.keys(`${s.prefix}*`));
  /** the IdP's revocation requests for one refresh token (other tests' sessions may expire meanwhile) */
  const revocationsOf = (refreshToken: string) => s.idp.revocationRequests.filter((r) => r.token === refreshToken);

  it('ends an idle session server-side: 401, its Redis records gone, its refresh token revoked at the IdP', async () => {
    const before = await keys();
    const u = await login(s, s.gw, 'ida');
    await u.agent.get('/api/x').set(SPA).expect(200);
    const own = [...(await keys())].filter((k) => !before.has(k) && /^(s|t):/.test(k.slice(s.prefix.length)));
    expect(own).toHaveLength(2); // the session record and its token record

    await sleep(2500);

    const r = await u.agent.get('/api/x').set(SPA);
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ error: 'unauthenticated' });
    // The session record ends on time; the token record outlives it briefly (TOKEN_GRACE_MS) until the expiry
    // sweeper, which runs every 2 s on each replica, revokes the refresh token and removes it.
    expect(await s.redis!.exists(own.find((k) => k.slice(s.prefix.length).startsWith('s:'))!)).toBe(0);
    await waitFor('the refresh token’s revocation', () => revocationsOf(u.refreshToken).length > 0, 5000);
    for (const k of own) expect(await s.redis!.exists(k)).toBe(0);
    expect(revocationsOf(u.refreshToken)).toEqual([expect.objectContaining({ tokenTypeHint: 'refresh_token', status: 200 })]);
  });

  it('keeps a session that is used again within its idle window: Redis never drops it early', async () => {
    const u = await login(s, s.gw, 'isaak');
    await sleep(1500); // three quarters of the 2 s idle window

    await u.agent.get('/api/x').set(SPA).expect(200);
  });

  it('ends a steadily active session at its absolute lifetime and revokes its refresh token', async () => {
    const u = await login(s, shortAbsolute, 'abby');
    const seen: Array<{ status: number; at: number }> = [];
    while (Date.now() - u.t1 < 6500) {
      const r = await u.agent.get('/api/x').set(SPA);
      seen.push({ status: r.status, at: Date.now() - u.t0 });
      if (r.status === 401) expect(r.body).toMatchObject({ error: 'unauthenticated' });
      await sleep(500);
    }
    const statuses = seen.map((x) => x.status).join(',');
    // some 200s, then only 401s: activity never revives it
    expect(statuses).toMatch(/^200(,200)*(,401)+$/);
    // under activity the session outlived its 2 s idle window (the window slid), until the absolute end
    const last200 = seen.filter((x) => x.status === 200).at(-1)!;
    expect(last200.at).toBeGreaterThan(2500);

    await waitFor('the refresh token’s revocation', () => revocationsOf(u.refreshToken).length > 0, 5000);
    expect(revocationsOf(u.refreshToken)).toEqual([expect.objectContaining({ tokenTypeHint: 'refresh_token', status: 200 })]);
  });

  it('reports expiresAt (login + absolute) and idleExpiresAt on /auth/session without extending the session', async () => {
    const u = await login(s, s.gw, 'iris');
    const first = await u.agent.get('/auth/session').set(SPA).expect(200);
    const body = first.body as { authenticated: boolean; user: { sub: string }; expiresAt: number; idleExpiresAt: number };
    expect(body).toMatchObject({ authenticated: true, user: { sub: 'iris' } });
    for (const secret of ['access_token', 'refresh_token', 'id_token', 'sid']) expect(first.text).not.toContain(secret);
    const sec = (ms: number) => Math.floor(ms / 1000);
    expect(body.expiresAt).toBeGreaterThanOrEqual(sec(u.t0) + 60);
    expect(body.expiresAt).toBeLessThanOrEqual(sec(u.t1) + 60);
    expect(body.idleExpiresAt).toBeGreaterThanOrEqual(sec(u.t0) + 2);
    expect(body.idleExpiresAt).toBeLessThanOrEqual(sec(u.t1) + 2);

    // Polling /auth/session every 0.5 s for 3 s must not keep a 2 s idle session alive.
    const statuses: number[] = [];
    while (Date.now() - u.t1 < 3000) {
      await sleep(500);
      const r = await u.agent.get('/auth/session').set(SPA);
      statuses.push(r.status);
      if (r.status === 200) expect((r.body as { idleExpiresAt: number }).idleExpiresAt).toBe(body.idleExpiresAt);
      else expect(r.body).toMatchObject({ error: 'unauthenticated' });
    }
    expect(statuses.join(',')).toMatch(/^(200,)*401(,401)*$/);
    await u.agent.get('/api/x').set(SPA).expect(401);
  });
});

describe('the idle window slides without a Redis write per request; TTLs follow the session', () => {
  let redisServer: RedisServerHandle;
  let inspect: Redis;
  let s: Stack;
  /** a replica with a 5 s idle window: it slides in 0.5 s steps */
  let fastSlide: Instance;
  /** a replica that reads the session from Redis on every request (GATEHOUSE_SESSION_CACHE_MS=0) */
  let noCache: Instance;
  beforeAll(async () => {
    redisServer = await startRedisServer();
    inspect = new Redis(redisServer.url);
    s = await startStack({
      gateway: { redisUrl: redisServer.url, sessionIdleSeconds: 100, sessionAbsoluteSeconds: 200 },
      idp: { accessTokenTtl: 300 },
    });
    fastSlide = await s.addInstance({ sessionIdleSeconds: 5 });
    noCache = await s.addInstance({ sessionCacheMs: 0 });
  });
  afterAll(async () => {
    await s?.close();
    await inspect?.quit();
    await redisServer?.stop();
  });

  /** calls per command from INFO commandstats (e.g. { get: 12, evalsha: 1 }) */
  async function commandCalls(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const m of (await inspect.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
    return out;
  }
  function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
    const d: Record<string, number> = {};
    for (const [cmd, n] of Object.entries(after)) if (n - (before[cmd] ?? 0) > 0) d[cmd] = n - (before[cmd] ?? 0);
    delete d.info; // this test's own INFO calls
    return d;
  }
  /** PTTLs of the one session's record and token record on the private Redis */
  async function sessionTtls(): Promise<{ session: number; tokens: number }> {
    const [sessionKey] = await inspect.keys(`${s.prefix}s:*`);
    const [tokensKey] = await inspect.keys(`${s.prefix}t:*`);
    return { session: await inspect.pttl(sessionKey!), tokens: await inspect.pttl(tokensKey!) };
  }
  async function clear(): Promise<void> {
    const all = await inspect.keys(`${s.prefix}*`);
    if (all.length) await inspect.del(...all);
  }

  it('answers 30 requests right after login with reads only: one MGET each, no Redis write (idle 100 s, no session cache)', async () => {
    await clear();
    const u = await login(s, noCache, 'rita');
    const before = await commandCalls();
    for (let i = 0; i < 30; i++) await u.agent.get('/api/x').set(SPA).expect(200);
    const d = delta(before, await commandCalls());

    // One read: the session and its token record in one round trip (they share a hash slot), nothing else.
    expect(Object.keys(d)).toEqual(['mget']);
    expect(d.mget).toBe(30);
  });

  it('with the session cache (default 500 ms), 30 requests in a row read Redis once per cache period', async () => {
    await clear();
    const u = await login(s, s.gw, 'rina');
    const before = await commandCalls();
    const t0 = Date.now();
    for (let i = 0; i < 30; i++) await u.agent.get('/api/x').set(SPA).expect(200);
    const elapsed = Date.now() - t0;
    const d = delta(before, await commandCalls());

    expect(Object.keys(d)).toEqual(['mget']);
    expect(d.mget).toBeGreaterThanOrEqual(1);
    expect(d.mget).toBeLessThanOrEqual(Math.ceil(elapsed / 500) + 1);
  });

  it('gives a new session’s records a TTL equal to its remaining life: never shorter, never -1', async () => {
    await clear();
    const u = await login(s, s.gw, 'ruth');
    const q0 = Date.now();
    const ttl = await sessionTtls();
    const q1 = Date.now();
    // the idle end (activeAt + 100 s, activeAt between t0 and t1) comes before the absolute end (200 s)
    const shortest = u.t0 + 100_000 - q1;
    const longest = u.t1 + 100_000 - q0;
    // every whole millisecond of life counts: a record that expires early ends the session early
    expect(ttl.session).toBeGreaterThanOrEqual(shortest - 50);
    expect(ttl.tokens).toBeGreaterThanOrEqual(shortest - 50);
    // tolerated: rounding up to a whole second (the gateway still refuses the session at its exact end);
    // the token record outlives the session by TOKEN_GRACE_MS, for the expiry sweeper to revoke its token
    expect(ttl.session).toBeLessThanOrEqual(longest + 1000);
    expect(ttl.tokens).toBeLessThanOrEqual(longest + TOKEN_GRACE_MS + 1000);
    expect(ttl.tokens).toBeGreaterThanOrEqual(shortest + TOKEN_GRACE_MS - 50);
  });

  it('slides in steps of a tenth of the idle window: a few writes for 30 requests, TTLs following the slide', async () => {
    await clear();
    const u = await login(s, fastSlide, 'rosa');
    const before = await commandCalls();
    let last = 0;
    for (let i = 0; i < 30; i++) {
      await u.agent.get('/api/x').set(SPA).expect(200);
      last = Date.now();
      await sleep(70);
    }
    const d = delta(before, await commandCalls());
    const q0 = Date.now();
    const ttl = await sessionTtls();
    const elapsed = last - u.t0;

    // Writes are the slide's script (one atomic SET XX + PEXPIRE of both records, counted inside the script
    // too; EVAL once when the script is new to this server) and its move in the expiry ledger (ZADD XX), at
    // most one each per 0.5 s step, each slide announced to the other replicas (PUBLISH); reads otherwise (MGET,
    // GET, and the expiry sweeper's ZRANGEBYSCORE every 2 s).
    expect(
      Object.keys(d).filter(
        (cmd) => !['mget', 'get', 'evalsha', 'eval', 'set', 'pexpire', 'zadd', 'zrangebyscore', 'publish'].includes(cmd),
      ),
    ).toEqual([]);
    const slides = (d.evalsha ?? 0) + (d.eval ?? 0);
    expect(d.publish ?? 0).toBeLessThanOrEqual(slides);
    expect(slides).toBeGreaterThanOrEqual(1);
    expect(slides).toBeLessThanOrEqual(Math.ceil(elapsed / 500) + 1);
    expect(d.set ?? 0).toBeLessThanOrEqual(slides);
    expect(d.zadd ?? 0).toBeLessThanOrEqual(slides);
    // both records end where the slid idle window ends: at most 5 s away, at least 5 s − one step − the time since
    for (const [pttl, grace] of [
      [ttl.session, 0],
      [ttl.tokens, TOKEN_GRACE_MS],
    ] as const) {
      expect(pttl).toBeLessThanOrEqual(5000 + grace);
      expect(pttl).toBeGreaterThanOrEqual(5000 + grace - 500 - (q0 - last) - 100);
    }
  });
});
