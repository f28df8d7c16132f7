/**
 * `/auth/login?prompt=…` against oidc-provider: a silent login (prompt=none) succeeds without any UI while
 * the IdP has a session, and otherwise ends without a session and without an error page (302 to returnTo
 * with login=none); `login` and `select_account` pass through; any other value is refused.
 */
import request from 'supertest';
import { followIdp, idpAgent, loginAs } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';

describe('silent login and prompts', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  /** A browser's silent login: its callback's answer, and the browser (its cookies). */
  const silently = async (jar: ReturnType<typeof idpAgent>, returnTo: string) => {
    const browser = s.gw.agent();
    const start = await browser.get(`/auth/login?prompt=none&returnTo=${encodeURIComponent(returnTo)}`).expect(302);
    const callbackUrl = await followIdp(s.idp, String(start.headers.location), 'nobody-asked', { idpAgent: jar });
    const u = new URL(callbackUrl);
    const callback = await browser.get(u.pathname + u.search).redirects(0);
    return { browser, callback, callbackUrl: u };
  };

  it('with a live IdP session: a session, no UI, back to returnTo', async () => {
    const jar = idpAgent(s.idp);
    await loginAs(s.gw.agent(), s.idp, 'silent-ok', { idpAgent: jar }); // the IdP session this browser has
    const { browser, callback, callbackUrl } = await silently(jar, '/inbox?x=1');
    expect(callbackUrl.searchParams.get('code')).toBeTruthy();
    expect(callback.status).toBe(302);
    expect(callback.headers.location).toBe('/inbox?x=1');
    const info = await browser.get('/auth/session').set(SPA).expect(200);
    expect((info.body as { user: { sub: string } }).user.sub).toBe('silent-ok');
  });

  it('without an IdP session: no session, no error page, back to returnTo with login=none', async () => {
    const { browser, callback, callbackUrl } = await silently(idpAgent(s.idp), '/inbox?x=1#top');
    expect(callbackUrl.searchParams.get('error')).toBe('login_required');
    expect(callback.status).toBe(302);
    expect(callback.headers.location).toBe('/inbox?x=1&login=none#top');
    expect(String(callback.headers['set-cookie'] ?? '')).not.toMatch(/(?:^|,\s*)gatehouse=[^;]/);
    await browser.get('/auth/session').set(SPA).expect(401);
    // the transaction is used up: the same callback again fails
    await browser.get(callbackUrl.pathname + callbackUrl.search).expect(400);
  });

  it('the same IdP error after a login that was not silent is a failed login (400), as before', async () => {
    const browser = s.gw.agent();
    const start = await browser.get('/auth/login').expect(302);
    // Complete the IdP part, then replace the code by the error a silent login would get.
    const callbackUrl = new URL(await followIdp(s.idp, String(start.headers.location), 'not-silent'));
    const forged = `/auth/callback?error=login_required&state=${callbackUrl.searchParams.get('state')}&iss=${encodeURIComponent(s.idp.issuer)}`;
    const r = await browser.get(forged).redirects(0);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: 'login_failed' });
  });

  it('prompt=login and prompt=select_account pass through to the IdP; any other value → 400 bad_request', async () => {
    const off = await s.addInstance({ par: 'off' });
    for (const prompt of ['login', 'select_account']) {
      const r = await request(off.server).get(`/auth/login?prompt=${prompt}`).expect(302);
      expect(new URL(String(r.headers.location)).searchParams.get('prompt')).toBe(prompt);
    }
    for (const bad of ['consent', 'none%20login', '', 'x']) {
      const r = await request(off.server).get(`/auth/login?prompt=${bad}`).expect(400);
      expect(r.body).toMatchObject({ error: 'bad_request' });
    }
    await request(off.server).get('/auth/login?prompt=none&prompt=login').expect(400);
  });
});
