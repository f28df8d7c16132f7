import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';

const ADMIN_TOKEN = 'admin-token-of-the-kill-switch-test-0123456789';

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
}

describe('kill switch (admin API on the admin port)', () => {
  let s: Stack;
  let other: Instance;
  beforeAll(async () => {
    s = await startStack({ gateway: { adminToken: ADMIN_TOKEN, metricsPort: 9464 } });
    other = await s.addInstance({ publicUrl: s.gw.url });
  });
  afterAll(() => s.close());

  const admin = (inst: Instance) => request(inst.gatehouse.adminApp);

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
    expect(r.body).toEqual({ revoked: 2 });

    // The next request anywhere gets 401, and /auth/session says so, on both replicas.
    await a.get('/api/x').set(SPA).expect(401);
    await b.get('/auth/session').set(SPA).expect(401);
    await waitFor(() => s.idp.revocations >= revocations + 2);
    expect(s.idp.revocations).toBe(revocations + 2);
    const after = await admin(s.gw).get('/admin/sessions?sub=mallory').set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200);
    expect(after.body).toEqual({ sessions: [] });
  });

  it('ends one session by the hash the session list shows, and leaves the user’s other sessions alone', async () => {
    const a = s.gw.agent();
    const b = s.gw.agent();
    await loginAs(a, s.idp, 'nina');
    await loginAs(b, s.idp, 'nina');
    const list = await admin(s.gw).get('/admin/sessions?sub=nina').set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200);
    const sessions = (list.body as { sessions: Array<{ session: string; createdAt: number }> }).sessions;
    expect(sessions).toHaveLength(2);
    const newest = [...sessions].sort((x, y) => y.createdAt - x.createdAt)[0]!;
    const r = await admin(s.gw)
      .post('/admin/sessions/revoke')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ sub: 'nina', session: newest.session })
      .expect(200);
    expect(r.body).toEqual({ revoked: 1 });
    await b.get('/api/x').set(SPA).expect(401);
    await a.get('/api/x').set(SPA).expect(200);
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
