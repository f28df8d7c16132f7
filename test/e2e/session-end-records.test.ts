/**
 * A session ended by its IdP (`invalid_grant` on a refresh) leaves nothing of its own in Redis but the short
 * dead marker that tells other replicas why it ended: no refresh counter held for its hour.
 */
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

describe('the records of a session the IdP ended', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ idp: { accessTokenTtl: 2 } });
  });
  afterAll(() => s?.close());

  it('invalid_grant on a refresh ends the session and deletes its refresh counter', async () => {
    const agent = s.gw.agent();
    await loginAs(agent, s.idp, 'ended-by-idp');
    await s.idp.waitForAccessTokenExpiry();
    await agent.get('/api/x').set(SPA).expect(200); // a refresh: the session's refresh counter exists now
    const counters = await s.redis!.keys(`${s.prefix}r:*`);
    expect(counters).toHaveLength(1);

    await s.idp.revoke('ended-by-idp');
    await s.idp.waitForAccessTokenExpiry();
    const ended = await agent.get('/api/x').set(SPA);
    expect(ended.status).toBe(401);
    expect(ended.body).toMatchObject({ error: 'session_expired' });
    expect(await s.redis!.exists(counters[0]!)).toBe(0);
  });
});
