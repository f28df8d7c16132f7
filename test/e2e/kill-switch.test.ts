import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

const ADMIN_TOKEN = 'admin-token-of-the-kill-switch-test-0123456789';

describe('kill switch (admin API on the admin port)', () => {
  let s: Stack;
  let other: Instance;
  beforeAll(async () => {
    s = await startStack({ gateway: { adminToken: ADMIN_TOKEN, metricsPort: 9464 } });
    other = await s.addInstance({ publicUrl: s.gw.url });
  });
  afterAll(() => s.close());

  const admin = (inst: Instance) => request(inst.gatehouse.adminApp);
  const listed = async (sub: string) =>
    (
      (await admin(s.gw).get(`/admin/sessions?sub=${sub}`).set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200)).body as {
        sessions: Array<{ session: string; createdAt: number; absoluteExpiresAt: number }>;
      }
    ).sessions;

  it('lists a user’s sessions with their times in unix seconds, like every other time Gatehouse shows', async () => {
    const before = Math.floor(Date.now() / 1000);
    await loginAs(s.gw.agent(), s.idp, 'olga');
    const after = Math.floor(Date.now() / 1000);
    const [only, ...more] = await listed('olga');
    expect(more).toEqual([]);
    expect(only!.createdAt).toBeGreaterThanOrEqual(before);
    expect(only!.createdAt).toBeLessThanOrEqual(after);
    expect(Number.isInteger(only!.createdAt) && Number.isInteger(only!.absoluteExpiresAt)).toBe(true);
    // the absolute lifetime, from the same start
    expect(only!.absoluteExpiresAt - only!.createdAt).toBe(s.gw.gatehouse.config.sessionAbsoluteSeconds);
  });

  it('ends every session of a user on every replica at once and revokes their refresh tokens', async () => {
    const a = s.gw.agent();
    const b = other.agent();
    await loginAs(a, s.idp, 'mallory');
    await loginAs(b, s.idp, 'mallory');
    await a.get('/api/x').set(SPA).expect(200);
    await b.get('/api/x').set(SPA).expect(200);
    const revocations = s.idp.revocations;

    const r = await admin(other)
      .post('/admin/sessions/revoke')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ sub: 'mallory' })
      .expect(200);
    expect(r.body).toEqual({ ended: 2, revoked: 2, kept: 0, failed: 0 });

    // The next request anywhere gets 401, and /auth/session says so, on both replicas.
    await a.get('/api/x').set(SPA).expect(401);
    await b.get('/auth/session').set(SPA).expect(401);
    await waitFor('both refresh tokens’ revocations', () => s.idp.revocations >= revocations + 2);
    expect(s.idp.revocations).toBe(revocations + 2);
    const after = await admin(s.gw).get('/admin/sessions?sub=mallory').set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200);
    expect(after.body).toEqual({ sessions: [] });
  });

  it('ends one session by the hash the session list shows, and leaves the user’s other sessions alone', async () => {
    const a = s.gw.agent();
    const b = s.gw.agent();
    // Both logins may fall in the same second: b's session is the one the second login added.
    await loginAs(a, s.idp, 'nina');
    const [first] = await listed('nina');
    await loginAs(b, s.idp, 'nina');
    const sessions = await listed('nina');
    expect(sessions).toHaveLength(2);
    const newest = sessions.find((x) => x.session !== first!.session)!;
    const r = await admin(s.gw)
      .post('/admin/sessions/revoke')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ sub: 'nina', session: newest.session })
      .expect(200);
    // The other session may share the grant: its refresh token stays at the IdP, this one's is deleted here.
    expect(r.body).toEqual({ ended: 1, revoked: 0, kept: 1, failed: 0 });
    await b.get('/api/x').set(SPA).expect(401);
    await a.get('/api/x').set(SPA).expect(200);
  });

  it('answers a refused call with a body that asks for the admin token, not for a browser login at /auth/login', async () => {
    const none = await admin(s.gw).get('/admin/sessions?sub=x').expect(401);
    const body = none.body as { error: string; message: string };
    expect(Object.keys(body).sort()).toEqual(['error', 'message']);
    expect(body.error).toBe('unauthenticated');
    expect(body.message).toContain('Authorization: Bearer');
    expect(body.message).not.toContain('/auth/login');
    expect(none.headers['www-authenticate']).toBe('Bearer realm="gatehouse-admin"');
    const wrong = await admin(s.gw).get('/admin/sessions?sub=x').set('Authorization', 'Bearer wrong').expect(401);
    expect(wrong.body).toEqual(none.body);
    // RFC 6750 §3.1: a token was presented and is not valid
    expect(wrong.headers['www-authenticate']).toBe('Bearer realm="gatehouse-admin", error="invalid_token"');
  });

  it('refuses calls without the admin token, with a wrong one, or with a malformed body; answers nothing on the public port', async () => {
    await admin(s.gw).post('/admin/sessions/revoke').send({ sub: 'x' }).expect(401);
    await admin(s.gw).post('/admin/sessions/revoke').set('Authorization', 'Bearer wrong-token').send({ sub: 'x' }).expect(401);
    await admin(s.gw).get('/admin/sessions?sub=x').set('Authorization', `Bearer ${ADMIN_TOKEN}x`).expect(401);
    for (const body of [{}, { sub: 7 }, { sub: 'a b' }, { sub: 'x', session: '../../' }]) {
      await admin(s.gw).post('/admin/sessions/revoke').set('Authorization', `Bearer ${ADMIN_TOKEN}`).send(body).expect(400);
    }
    await s.gw.agent().post('/admin/sessions/revoke').set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ sub: 'x' }).expect(404);
  });
});

describe('refused admin calls in the log and the metrics', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ gateway: { adminToken: ADMIN_TOKEN, metricsPort: 9464 } });
  });
  afterAll(() => s.close());

  const admin = () => request(s.gw.gatehouse.adminApp);

  it('logs refused calls at most once a minute, never with the credentials presented, and counts every one', async () => {
    const refusals = () => s.logs.filter((l) => l.includes('"event":"admin_auth_failed"'));
    const counted = async () =>
      Number(/^gatehouse_admin_auth_failures_total (\d+)$/m.exec((await admin().get('/metrics').expect(200)).text)?.[1]);
    expect(await counted()).toBe(0);

    await admin().get('/admin/sessions?sub=x').expect(401);
    for (const guess of ['guess-one-4f1c', 'guess-two-9a7e', 'guess-three-03bd']) {
      await admin().post('/admin/sessions/revoke').set('Authorization', `Bearer ${guess}`).send({ sub: 'x' }).expect(401);
    }
    await admin().post('/admin/security/refresh-token-reuse').set('Authorization', 'Basic Z3Vlc3M6Zm91cg==').send({ sub: 'x' }).expect(401);

    expect(await counted()).toBe(5);
    expect(refusals()).toHaveLength(1);
    expect(JSON.parse(refusals()[0]!)).toMatchObject({
      level: 'warn',
      event: 'admin_auth_failed',
      reason: 'no_credentials',
      method: 'GET',
      path: '/admin/sessions',
      suppressed: 0,
    });
    expect(s.logs.join('\n')).not.toMatch(/guess-|Z3Vlc3M6Zm91cg/);
  });
});

describe('kill switch without GATEHOUSE_ADMIN_TOKEN', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  it('serves no admin session API at all', async () => {
    await request(s.gw.gatehouse.adminApp)
      .post('/admin/sessions/revoke')
      .set('Authorization', 'Bearer anything')
      .send({ sub: 'x' })
      .expect(404);
  });
});
