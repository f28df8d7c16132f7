/**
 * RFC 7009 revocation of the refresh token at logout, never blocking the local logout: observed at the
 * real IdP's revocation endpoint (revocationRequests), with the endpoint failed by the test IdP's
 * failRevocation switch. Revocation on expiry: lifetimes.test.ts; on the admin kill switch: kill-switch.test.ts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { loginAs, type Agent } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

describe('refresh-token revocation at logout (RFC 7009)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ idp: { accessTokenTtl: 60 } });
  });
  afterAll(async () => {
    s?.idp.failRevocation(null);
    await s?.close();
  });
  afterEach(() => s.idp.failRevocation(null));

  /** Logs `sub` in; returns the browser and the refresh token the IdP issued for this login. */
  async function login(sub: string): Promise<{ agent: Agent; refreshToken: string }> {
    const agent = s.gw.agent();
    const issuedBefore = s.idp.tokensIssued().length;
    expect((await loginAs(agent, s.idp, sub)).status).toBe(302);
    const [, refreshToken] = s.idp.tokensIssued().slice(issuedBefore); // access_token, refresh_token, id_token
    if (!refreshToken) throw new Error('the IdP issued no refresh token');
    await agent.get('/api/x').set(SPA).expect(200);
    return { agent, refreshToken };
  }

  /** A refresh grant straight at the IdP with the client's credentials: is this refresh token still alive? */
  function refreshAtIdp(refreshToken: string) {
    return request(s.idp.issuer)
      .post('/token')
      .auth(s.idp.clientId, s.idp.clientSecret)
      .type('form')
      .send({ grant_type: 'refresh_token', refresh_token: refreshToken });
  }

  async function expectLoggedOut(agent: Agent): Promise<void> {
    const api = await agent.get('/api/x').set(SPA);
    expect(api.status).toBe(401);
    expect(api.body).toMatchObject({ error: 'unauthenticated' });
    await agent.get('/auth/session').set(SPA).expect(401);
  }

  it('revokes the session’s refresh token at the IdP on logout, with client authentication, so it no longer works there', async () => {
    const u = await login('rhea');
    const revocations = s.idp.revocations;

    const out = await u.agent.post('/auth/logout').set(SPA);
    expect(out.status).toBe(200);
    await expectLoggedOut(u.agent);

    await waitFor('the revocation request', () => s.idp.revocations > revocations, 3000);
    expect(s.idp.revocations).toBe(revocations + 1);
    expect(s.idp.revocationRequests.at(-1)).toEqual({
      token: u.refreshToken,
      tokenTypeHint: 'refresh_token',
      clientAuth: 'client_secret_basic',
      status: 200,
      injected: false,
    });
    const grant = await refreshAtIdp(u.refreshToken);
    expect(grant.status).toBe(400);
    expect(grant.body).toMatchObject({ error: 'invalid_grant' });
  });

  it('completes the logout at once while the revocation endpoint answers 503, and retries in the background until it succeeds', async () => {
    const u = await login('reto');
    s.idp.failRevocation(503, undefined, { times: 2 });
    const revocations = s.idp.revocations;

    const out = await u.agent.post('/auth/logout').set(SPA);
    expect(out.status).toBe(200);
    expect(out.body).toHaveProperty('logoutUrl');
    await expectLoggedOut(u.agent);

    // RFC 7009 §2.2.1: on 503 the token must be assumed alive; the Revoker retries after 1 s, then 3 s.
    await waitFor('a retried revocation', () => s.idp.revocations >= revocations + 2, 5000);
    expect(s.idp.revocations).toBeGreaterThanOrEqual(revocations + 2);
    await waitFor('a revocation answered 200', () => s.idp.revocationRequests.at(-1)?.status === 200, 5000);
    const attempts = s.idp.revocationRequests.slice(-3);
    expect(attempts.map((a) => [a.token, a.status])).toEqual([
      [u.refreshToken, 503],
      [u.refreshToken, 503],
      [u.refreshToken, 200],
    ]);
    expect((await refreshAtIdp(u.refreshToken)).status).toBe(400);
  });

  it('gives up after a bounded number of attempts while the revocation endpoint stays down, and logs it', async () => {
    const u = await login('rolf');
    s.idp.failRevocation(503);
    const revocations = s.idp.revocations;
    const logsBefore = s.logs.length;

    await u.agent.post('/auth/logout').set(SPA).expect(200);
    await expectLoggedOut(u.agent);

    // Attempts at 0 s, 1 s, 4 s and 13 s (src/idp/revoker.ts), then it stops.
    const givenUp = () => s.logs.slice(logsBefore).some((l) => /revocation failed; giving up/.test(l));
    await waitFor('the revoker to give up', givenUp, 16_000);
    expect(givenUp()).toBe(true);
    const attempts = s.idp.revocations - revocations;
    expect(attempts).toBeGreaterThan(1);
    expect(attempts).toBeLessThanOrEqual(4);
    await sleep(1000);
    expect(s.idp.revocations - revocations).toBe(attempts);
    const line = JSON.parse(s.logs.slice(logsBefore).find((l) => /giving up/.test(l))!) as Record<string, unknown>;
    expect(line.attempts).toBe(attempts);
    expect(JSON.stringify(line)).not.toContain(u.refreshToken);
  }, 25_000);
});
