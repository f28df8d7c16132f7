import { setTimeout as sleep } from 'node:timers/promises';
import { loginAs, idpAgent, idpLogout } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

describe('login end to end', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  it('logs in through the IdP, sets an HttpOnly session cookie and proxies /api with the bearer', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'alice', '/dashboard?tab=1');
    expect(cb.status).toBe(302);
    expect(cb.headers.location).toBe('/dashboard?tab=1');
    const setCookie = ([] as string[]).concat(cb.headers['set-cookie'] ?? []);
    const session = setCookie.find((c) => c.startsWith('gatehouse='));
    expect(session).toMatch(/^gatehouse=s%3A[A-Za-z0-9_-]{43}\.[^;]+; Path=\/; HttpOnly; SameSite=Strict$/);

    const me = await browser.get('/auth/session').set(SPA).expect(200);
    expect(me.body).toMatchObject({ authenticated: true, user: { sub: 'alice', email: 'alice@example.test', name: 'Test alice' } });
    const user = (me.body as { user: Record<string, unknown> }).user;
    expect(user).not.toHaveProperty('nonce');
    expect(user).not.toHaveProperty('aud');

    const api = await browser.get('/api/things?x=1').set(SPA).expect(200);
    expect((api.body as { path: string }).path).toBe('/things');
    const seen = s.upstream.requests.at(-1)!;
    expect(seen.headers.authorization).toMatch(/^Bearer \S+$/);
    expect(seen.headers.cookie).toBeUndefined();
    expect(seen.headers['x-csrf']).toBeUndefined();
  });

  it('gives a new session id at every login', async () => {
    const browser = s.gw.agent();
    const a = await loginAs(browser, s.idp, 'bob');
    const b = await loginAs(browser, s.idp, 'bob');
    const id = (r: typeof a) => String(r.headers['set-cookie']).match(/gatehouse=([^;]+)/)![1];
    expect(id(a)).not.toBe(id(b));
    // the old id no longer resumes anything
    const replay = await s.gw
      .agent()
      .get('/auth/session')
      .set(SPA)
      .set('Cookie', `gatehouse=${id(a)}`);
    expect(replay.status).toBe(401);
  });

  it('refreshes an expired access token transparently', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'carol');
    await browser.get('/api/a').set(SPA).expect(200);
    const first = s.upstream.requests.at(-1)!.headers.authorization;
    const before = s.idp.grants.refresh_token;
    await sleep(2100);
    await browser.get('/api/b').set(SPA).expect(200);
    expect(s.upstream.requests.at(-1)!.headers.authorization).not.toBe(first);
    expect(s.idp.grants.refresh_token).toBe(before + 1);
  });

  it('logs out: 200 with logoutUrl, cookie cleared, old cookie dead', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'dave', { idpAgent: idpAgent(s.idp) });
    const out = await browser.post('/auth/logout').set(SPA).expect(200);
    expect((out.body as { logoutUrl: string }).logoutUrl).toContain(`${s.idp.issuer}/session/end`);
    expect(String(out.headers['set-cookie'])).toMatch(/gatehouse=; Path=\/; HttpOnly; Max-Age=0/);
    await browser.get('/api/x').set(SPA).expect(401);
  });

  it('revokes the refresh token at the IdP on logout (RFC 7009) and builds logoutUrl from configuration only', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'erin');
    const before = s.idp.revocations;
    const out = await browser.post('/auth/logout?post_logout_redirect_uri=https://evil.example').set(SPA).expect(200);
    const url = new URL((out.body as { logoutUrl: string }).logoutUrl);
    expect(url.searchParams.get('client_id')).toBe(s.idp.clientId);
    expect(url.searchParams.get('post_logout_redirect_uri')).toBe(`${s.gw.url}/`);
    expect(url.searchParams.get('id_token_hint')).toMatch(/^ey/);
    await waitFor('the refresh token’s revocation', () => s.idp.revocations !== before, 2500);
    expect(s.idp.revocations).toBe(before + 1);
  });

  it('answers logout idempotently: without a session 200 {"logoutUrl":null}', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'frank');
    await browser.post('/auth/logout').set(SPA).expect(200);
    const again = await browser.post('/auth/logout').set(SPA).expect(200);
    expect(again.body).toEqual({ logoutUrl: null });
    await s.gw.agent().post('/auth/logout').set(SPA).expect(200, { logoutUrl: null });
  });

  it('revokes the refresh token a refresh received after a concurrent logout ended the session (RFC 7009: nothing outlives the logout)', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'grace');
    await browser.get('/api/a').set(SPA).expect(200);
    await sleep(2100); // the access token expires
    const grants = s.idp.grants.refresh_token;
    const revocations = s.idp.revocations;
    s.idp.delay(800, 'after'); // the IdP rotates the refresh token, then takes its time to answer
    try {
      const call = browser
        .get('/api/b')
        .set(SPA)
        .then((r) => r);
      await waitFor('the refresh to reach the IdP', () => s.idp.grants.refresh_token !== grants);
      await browser.post('/auth/logout').set(SPA).expect(200); // revokes the old refresh token
      const late = await call;
      expect(late.status).toBe(401);
      expect((late.body as { error: string }).error).toBe('unauthenticated');
    } finally {
      s.idp.delay(0);
    }
    await waitFor('both refresh tokens’ revocations', () => s.idp.revocations >= revocations + 2);
    expect(s.idp.revocations).toBe(revocations + 2); // the old refresh token and the one the late refresh received
  });

  it('RP-initiated logout carries a one-time state, and the IdP sending the browser back with it lands on /; another state is ignored', async () => {
    const jar = idpAgent(s.idp);
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'ivy', { idpAgent: jar });
    const out = await browser.post('/auth/logout').set(SPA).expect(200);
    const logoutUrl = (out.body as { logoutUrl: string }).logoutUrl;
    const state = new URL(logoutUrl).searchParams.get('state');
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const back = new URL(await idpLogout(jar, s.idp, logoutUrl));
    expect(back.origin + back.pathname).toBe(`${s.gw.url}/`);
    expect(back.searchParams.get('state')).toBe(state);
    const landed = await browser.get(back.pathname + back.search).expect(302);
    expect(landed.headers.location).toBe('/');
    await browser.get(back.pathname + back.search).expect(404); // one time: served as if it carried no state
    await browser.get('/?state=forged').expect(404);
  });

  it('a second login in the same browser ends the first session but leaves its refresh token to the IdP: the new session may share its grant', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'kim');
    const revocations = s.idp.revocations;
    const logged = s.logs.length;
    await loginAs(browser, s.idp, 'kim');
    await waitFor('the decision not to revoke', () => s.logs.slice(logged).some((l) => l.includes('refresh token not revoked')));
    expect(s.logs.slice(logged).filter((l) => l.includes('refresh token not revoked'))).toHaveLength(1);
    expect(s.idp.revocations).toBe(revocations);
    await browser.get('/api/x').set(SPA).expect(200);
  });
});
