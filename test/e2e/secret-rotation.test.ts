import { setTimeout as sleep } from 'node:timers/promises';
import { dumpRedis, startStack, SPA, type Stack, type Instance } from '../support/stack';
import request from 'supertest';
import { followIdp, loginAs } from '../support/login';

const OLD = 'old-secret-of-the-rotation-test-0123456789';
const NEW = 'new-secret-of-the-rotation-test-0123456789';
const ADMIN = 'admin-token-of-the-rotation-test-0123456789';

/**
 * GATEHOUSE_SESSION_SECRET rotation: a replica configured "NEW,OLD" (the first signs, all verify) next to
 * one still on "OLD". Sessions and logins begun under the old secret go on working on the new replica.
 */
describe('session secret rotation', () => {
  let s: Stack;
  let rotated: Instance;
  beforeAll(async () => {
    s = await startStack({ gateway: { sessionSecret: OLD } });
    // Replicas share one public URL (and so one redirect URI); here they listen on different ports.
    rotated = await s.addInstance({ sessionSecret: `${NEW},${OLD}`, publicUrl: s.gw.url, adminToken: ADMIN, metricsPort: 9464 });
  });
  afterAll(() => s.close());

  const cookieOf = (r: { headers: Record<string, unknown> }) => String(r.headers['set-cookie']).match(/gatehouse=([^;]+)/)![1]!;

  it('keeps a session made under the old secret working on the rotated replica: API, refresh, slide and logout', async () => {
    const cb = await loginAs(s.gw.agent(), s.idp, 'ivan');
    const cookie = `gatehouse=${cookieOf(cb)}`;
    await rotated.agent().get('/api/a').set(SPA).set('Cookie', cookie).expect(200);
    await sleep(2100); // the access token expires: the refresh runs on the rotated replica
    await rotated.agent().get('/api/b').set(SPA).set('Cookie', cookie).expect(200);
    await s.gw.agent().get('/api/c').set(SPA).set('Cookie', cookie).expect(200);
    const before = (await dumpRedis(s)).length;
    await rotated.agent().post('/auth/logout').set(SPA).set('Cookie', cookie).expect(200);
    expect((await dumpRedis(s)).length).toBeLessThan(before);
    await s.gw.agent().get('/api/d').set(SPA).set('Cookie', cookie).expect(401);
  });

  it('signs new sessions with the new secret: the replica still on the old secret does not accept them', async () => {
    const cb = await loginAs(rotated.agent(), s.idp, 'judy');
    const cookie = `gatehouse=${cookieOf(cb)}`;
    await rotated.agent().get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
    await s.gw.agent().get('/auth/session').set(SPA).set('Cookie', cookie).expect(401);
  });

  it('finishes a login begun before the rotation on the rotated replica', async () => {
    const browser = s.gw.agent();
    const start = await browser.get('/auth/login').expect(302);
    const tx = String(start.headers['set-cookie']).match(/gatehouse-tx-[\w-]+=[^;]+/)![0];
    // The IdP part, then the callback arrives at the rotated replica with the same tx cookie.
    const callbackUrl = await followIdp(s.idp, String(start.headers.location), 'ken', { redirectUri: `${s.gw.url}/auth/callback` });
    const cb = new URL(callbackUrl);
    expect(cb.searchParams.get('code')).toBeTruthy();
    const done = await rotated
      .agent()
      .get(cb.pathname + cb.search)
      .set('Cookie', tx);
    expect(done.status).toBe(302);
    expect(String(done.headers['set-cookie'])).toMatch(/gatehouse=s%3A/);
  });

  it('finds and ends sessions made under the old secret from the rotated replica: the kill switch keeps working after a rotation', async () => {
    const cb = await loginAs(s.gw.agent(), s.idp, 'lena');
    const cookie = `gatehouse=${cookieOf(cb)}`;
    const auth = { Authorization: `Bearer ${ADMIN}` };
    const list = await request(rotated.gatehouse.adminApp).get('/admin/sessions?sub=lena').set(auth).expect(200);
    expect((list.body as { sessions: unknown[] }).sessions).toHaveLength(1);
    const r = await request(rotated.gatehouse.adminApp).post('/admin/sessions/revoke').set(auth).send({ sub: 'lena' }).expect(200);
    expect(r.body).toEqual({ ended: 1, revoked: 1, kept: 0, failed: 0 });
    await s.gw.agent().get('/api/x').set(SPA).set('Cookie', cookie).expect(401);
    await rotated.agent().get('/api/x').set(SPA).set('Cookie', cookie).expect(401);
  });
});
