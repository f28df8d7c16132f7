/**
 * Logins racing a back-channel logout: the IdP issued a code in an IdP session, then ended that session and
 * told us, and only then the browser brings the code to /auth/callback. The logout found no session to end
 * (it did not exist yet), so the callback must refuse it: 400 login_failed and no session. A login in a new
 * IdP session after the logout, and a logout naming only the user, lock nobody out.
 * Codes come from the real test IdP; logout tokens are signed with its real key.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { decodeJwt } from 'jose';
import { driveIdp, pathOf } from '../../src/testing/idpBrowser';
import { idpAgent, loginAs, type Agent } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

describe('a login racing a back-channel logout of its IdP session', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ backchannel: true, idp: { accessTokenTtl: 60 } });
  });
  afterAll(() => s?.close());

  const backchannel = (token: string) =>
    request(s.gw.url).post('/auth/backchannel-logout').type('form').send({ logout_token: token }).expect(200);
  const lastIdTokenClaims = () =>
    decodeJwt(
      s.idp
        .tokensIssued()
        .filter((t) => t.split('.').length === 3)
        .at(-1)!,
    );

  /** Starts a login on `browser` and follows the IdP (with its cookie jar `jar`) up to the callback URL, unredeemed. */
  async function codeFor(browser: Agent, jar: Agent, sub: string): Promise<string> {
    const start = await browser.get('/auth/login').redirects(0).expect(302);
    const authorizationUrl = String(start.headers.location);
    // A pushed authorization request (RFC 9126) leaves only request_uri in the URL: the way back is the callback path.
    const redirectUri = new URL(authorizationUrl).searchParams.get('redirect_uri') ?? '/auth/callback';
    return driveIdp(jar, s.idp.issuer, authorizationUrl, redirectUri, sub);
  }

  it('refuses a code of an IdP session that a back-channel logout ended before the code was redeemed: 400 login_failed, no session', async () => {
    const jar = idpAgent(s.idp);
    await loginAs(s.gw.agent(), s.idp, 'raced-user', { idpAgent: jar });
    const { sid } = lastIdTokenClaims();
    expect(typeof sid).toBe('string');

    const browser = s.gw.agent();
    const callbackUrl = await codeFor(browser, jar, 'raced-user'); // issued in the same IdP session (SSO)
    await backchannel(await s.idp.signLogoutToken({ sub: 'raced-user', sid }));

    const cb = await browser.get(pathOf(callbackUrl)).redirects(0);
    expect(cb.status).toBe(400);
    expect(cb.body).toMatchObject({ error: 'login_failed' });
    expect(String(cb.headers['set-cookie'] ?? '')).not.toMatch(/(^|,)\s*gatehouse=s%3A/);
    await browser.get('/auth/session').set(SPA).expect(401);
  });

  it('a logout delivered late ends a session of its IdP session made after the token was issued but authenticated before it', async () => {
    const jar = idpAgent(s.idp);
    await loginAs(s.gw.agent(), s.idp, 'late-logout-user', { idpAgent: jar });
    const { sid, auth_time: authTime } = lastIdTokenClaims();
    // The IdP ends its session now; its logout token reaches us only after another login of that session
    // (single sign-on: the same sid and auth_time) was made here, more than the clock tolerance later.
    const token = await s.idp.signLogoutToken({ sub: 'late-logout-user', sid, iat: Math.floor(Date.now() / 1000) });
    await sleep(6000);
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'late-logout-user', { idpAgent: jar });
    expect(lastIdTokenClaims()).toMatchObject({ sid, auth_time: authTime });
    await browser.get('/api/x').set(SPA).expect(200);

    await backchannel(token);
    await browser.get('/api/x').set(SPA).expect(401);
  });

  it('lets the same user log in again after the logout, in a new IdP session', async () => {
    const jar = idpAgent(s.idp);
    await loginAs(s.gw.agent(), s.idp, 'returning-user', { idpAgent: jar });
    const { sid } = lastIdTokenClaims();
    await backchannel(await s.idp.signLogoutToken({ sub: 'returning-user', sid }));

    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'returning-user', { idpAgent: idpAgent(s.idp) });
    expect(lastIdTokenClaims().sid).not.toBe(sid);
    await browser.get('/api/x').set(SPA).expect(200);
  });

  it('a logout naming only the user ends their sessions and locks them out of nothing: the next login works', async () => {
    const jar = idpAgent(s.idp);
    const first = s.gw.agent();
    await loginAs(first, s.idp, 'sub-only-user', { idpAgent: jar });
    await backchannel(await s.idp.signLogoutToken({ sub: 'sub-only-user' }));
    await first.get('/api/x').set(SPA).expect(401);

    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'sub-only-user', { idpAgent: jar });
    await browser.get('/api/x').set(SPA).expect(200);
  });
});
