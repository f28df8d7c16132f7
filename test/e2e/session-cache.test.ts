/**
 * A replica reuses a session it read from Redis a moment ago (GATEHOUSE_SESSION_CACHE_MS), and a
 * logout, a kill or a back-channel logout on any other replica ends the session there within one second.
 *
 * The replicas here keep sessions for the longest allowed period, 1000 ms. The first test shows the cache
 * really serves (a session deleted behind the gateways' backs still answers 200) and that its age bounds it;
 * the others show the ends reach the other replica through Redis pub/sub, far sooner than the cache would
 * lapse by itself.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { idpAgent, loginAs, type Agent } from '../support/login';
import { SPA, startStack, type Instance, type Stack } from '../support/stack';

const CACHE_MS = 1000;
/** Far below CACHE_MS: only an announcement can end a cached session this soon. */
const ANNOUNCED_WITHIN_MS = 300;
const ADMIN_TOKEN = 'admin-token-of-the-session-cache-test-0123456789';

describe('the session cache across replicas', () => {
  let s: Stack;
  let a: Instance;
  let b: Instance;
  beforeAll(async () => {
    s = await startStack({
      instances: 2,
      backchannel: true,
      gateway: { sessionCacheMs: CACHE_MS, adminToken: ADMIN_TOKEN, metricsPort: 9464 }, // the admin app is called in-process, never listened on
      idp: { accessTokenTtl: 300 },
    });
    [a, b] = s.instances as [Instance, Instance];
  });
  afterAll(() => s?.close());

  /** Logs in through replica A; the returned function calls /api on replica B with the same cookie. */
  async function session(sub: string, idp?: Agent): Promise<{ onA: Agent; onB: () => Promise<number> }> {
    const onA = a.agent();
    const cb = await loginAs(onA, s.idp, sub, idp ? { idpAgent: idp } : {});
    const cookie = ([] as string[])
      .concat(cb.headers['set-cookie'] ?? [])
      .find((c) => c.startsWith('gatehouse='))!
      .split(';')[0]!;
    const onB = async () => (await request(b.server).get('/api/x').set(SPA).set('Cookie', cookie)).status;
    return { onA, onB };
  }

  /** Milliseconds until B answers 401, polling every 10 ms (Infinity after 3 s). */
  async function msUntilEnded(onB: () => Promise<number>): Promise<number> {
    const start = Date.now();
    while (Date.now() - start < 3000) {
      if ((await onB()) === 401) return Date.now() - start;
      await sleep(10);
    }
    return Infinity;
  }

  it('serves a session read a moment ago without Redis, and never longer than GATEHOUSE_SESSION_CACHE_MS', async () => {
    const { onB } = await session('cached-user');
    expect(await onB()).toBe(200);
    const readAt = Date.now();
    // Delete the session behind the gateways' backs: no replica is told.
    const keys = [...(await s.redis!.keys(`${s.prefix}s:*`)), ...(await s.redis!.keys(`${s.prefix}t:*`))];
    await s.redis!.del(...keys);

    expect(await onB()).toBe(200); // from B's cache: Redis no longer has it
    expect(await msUntilEnded(onB)).toBeLessThan(Infinity);
    const sinceRead = Date.now() - readAt;
    expect(sinceRead).toBeGreaterThanOrEqual(CACHE_MS - 100);
    expect(sinceRead).toBeLessThan(CACHE_MS + 500);
  });

  it('a logout on replica A ends the session on replica B at once (pub/sub), though B had it cached', async () => {
    const { onA, onB } = await session('logout-user');
    expect(await onB()).toBe(200);
    await onA.post('/auth/logout').set(SPA).expect(200);
    expect(await msUntilEnded(onB)).toBeLessThan(ANNOUNCED_WITHIN_MS);
  });

  it('the kill switch on replica A ends the session on replica B at once', async () => {
    const { onB } = await session('killed-user');
    expect(await onB()).toBe(200);
    await request(a.gatehouse.adminApp)
      .post('/admin/sessions/revoke')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ sub: 'killed-user' })
      .expect(200, { ended: 1, revoked: 1, kept: 0, failed: 0 });
    expect(await msUntilEnded(onB)).toBeLessThan(ANNOUNCED_WITHIN_MS);
  });

  it('a back-channel logout received by replica A ends the session on replica B at once', async () => {
    const jar = idpAgent(s.idp);
    const { onB } = await session('bcl-user', jar);
    expect(await onB()).toBe(200);
    await request(a.server)
      .post('/auth/backchannel-logout')
      .type('form')
      .send({ logout_token: await s.idp.signLogoutToken({ sub: 'bcl-user' }) })
      .expect(200);
    expect(await msUntilEnded(onB)).toBeLessThan(ANNOUNCED_WITHIN_MS);
  });
});
