/**
 * One grant, several sessions. oidc-provider (like Keycloak, which ties tokens to the SSO session) issues
 * every login of one browser under one grant, and revoking a refresh token revokes that grant: the access
 * and refresh tokens of every session issued under it die with it. Ending one session must therefore never
 * revoke a refresh token another live session of the user may share, on any path that revokes: a second
 * login, logout, the expiry sweeper and the kill switch.
 *
 * "Still working" is judged as the API would judge it: the access token the upstream received is checked at
 * the IdP's userinfo endpoint (a revoked grant answers 401 there), and the session's next refresh must succeed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { idpAgent, loginAs, type Agent } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

const ADMIN_TOKEN = 'shared-grant-admin-token-0123456789abcdef';

describe('sessions that may share one grant at the IdP', () => {
  let s: Stack;
  /** A replica whose sessions idle out after 2 s. */
  let shortIdle: Instance;
  let userinfo: string;

  beforeAll(async () => {
    s = await startStack({ idp: { accessTokenTtl: 3 }, gateway: { adminToken: ADMIN_TOKEN, metricsPort: 9464 } });
    shortIdle = await s.addInstance({ sessionIdleSeconds: 2 });
    const meta = await request(s.idp.issuer).get('/.well-known/openid-configuration').expect(200);
    userinfo = (meta.body as { userinfo_endpoint: string }).userinfo_endpoint;
  });
  afterAll(() => s?.close());

  /** The bearer the upstream received for this browser's call. */
  async function bearerOf(browser: Agent): Promise<string> {
    await browser.get('/api/whoami').set(SPA).expect(200);
    return String(s.upstream.last().headers.authorization);
  }

  /** The IdP's own verdict on an access token: 200 while its grant lives, 401 once it was revoked. */
  async function idpAccepts(authorization: string): Promise<number> {
    const u = new URL(userinfo);
    return (await request(u.origin).get(u.pathname).set('Authorization', authorization)).status;
  }

  /** The refresh token the IdP issued with the last code grant (its response: access, refresh, ID token). */
  const lastLoginRefreshToken = (issuedBefore: number) => s.idp.tokensIssued().slice(issuedBefore)[1]!;
  const decided = (refreshToken: string, sessionsEnded: number) => () =>
    s.idp.revocationRequests.some((r) => r.token === refreshToken) ||
    s.logs.filter((l) => l.includes('refresh token not revoked at the IdP')).length >= sessionsEnded;

  /** Keeps `browser` active (every 400 ms) until `until` holds. */
  async function keepActive(browser: Agent, until: () => boolean, ms = 12_000): Promise<void> {
    for (const end = Date.now() + ms; !until(); await sleep(400)) {
      if (Date.now() > end) throw new Error('timed out keeping the session active');
      await browser.get('/api/keepalive').set(SPA).expect(200);
    }
  }

  it('a second login in the same browser leaves the new session working: its access token stays valid and its next refresh succeeds', async () => {
    const jar = idpAgent(s.idp);
    const browser = s.gw.agent();
    const issued = s.idp.tokensIssued().length;
    await loginAs(browser, s.idp, 'relogin-user', { idpAgent: jar });
    const firstRefreshToken = lastLoginRefreshToken(issued);
    const kept = s.logs.length;
    await loginAs(browser, s.idp, 'relogin-user', { idpAgent: jar });
    await waitFor(
      'the revocation decision',
      () =>
        s.idp.revocationRequests.some((r) => r.token === firstRefreshToken) ||
        s.logs.slice(kept).some((l) => l.includes('refresh token not revoked at the IdP')),
    );

    expect(await idpAccepts(await bearerOf(browser))).toBe(200);
    const refreshed = s.idp.refreshSucceeded;
    await s.idp.waitForAccessTokenExpiry();
    expect(await idpAccepts(await bearerOf(browser))).toBe(200);
    expect(s.idp.refreshSucceeded).toBe(refreshed + 1);
    expect(s.idp.revocationRequests.filter((r) => r.token === firstRefreshToken)).toEqual([]);
  });

  it('an orphaned session of the same browser (its cookie lost, the IdP session alive) idles out without killing the session that replaced it', async () => {
    const jar = idpAgent(s.idp);
    const issued = s.idp.tokensIssued().length;
    await loginAs(shortIdle.agent(), s.idp, 'orphan-user', { idpAgent: jar }); // this cookie is lost (a browser restart)
    const orphanRefreshToken = lastLoginRefreshToken(issued);
    const fresh = shortIdle.agent();
    await loginAs(fresh, s.idp, 'orphan-user', { idpAgent: jar }); // the IdP's SSO session signs the user in again

    // The orphan idles out (2 s) and the expiry sweeper ends it, while the new session stays in use.
    const notRevokedBefore = s.logs.filter((l) => l.includes('refresh token not revoked at the IdP')).length;
    await keepActive(fresh, decided(orphanRefreshToken, notRevokedBefore + 1));

    expect(await idpAccepts(await bearerOf(fresh))).toBe(200);
    // Past the access token's life, still in use (it would idle out too): refreshed on the way.
    const refreshed = s.idp.refreshSucceeded;
    const past = Date.now() + (s.idp.accessTokenTtl + 0.5) * 1000;
    await keepActive(fresh, () => Date.now() > past);
    expect(await idpAccepts(await bearerOf(fresh))).toBe(200);
    expect(s.idp.refreshSucceeded).toBeGreaterThan(refreshed);
    expect(s.idp.revocationRequests.filter((r) => r.token === orphanRefreshToken)).toEqual([]);
  });

  it('the kill switch ending one session of a user does not revoke the grant the user’s other session of the same browser holds', async () => {
    const jar = idpAgent(s.idp);
    const issued = s.idp.tokensIssued().length;
    const old = s.gw.agent();
    await loginAs(old, s.idp, 'kill-one-user', { idpAgent: jar });
    const oldRefreshToken = lastLoginRefreshToken(issued);
    const admin = () => request(s.gw.gatehouse.adminApp);
    const list = async () =>
      (
        (await admin().get('/admin/sessions?sub=kill-one-user').set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200)).body as {
          sessions: Array<{ session: string }>;
        }
      ).sessions.map((x) => x.session);
    const [oldest] = await list();
    const fresh = s.gw.agent();
    await loginAs(fresh, s.idp, 'kill-one-user', { idpAgent: jar });
    expect(await list()).toHaveLength(2);

    const r = await admin()
      .post('/admin/sessions/revoke')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ sub: 'kill-one-user', session: oldest })
      .expect(200);
    expect(r.body).toEqual({ ended: 1, revoked: 0, kept: 1, failed: 0 });
    await old.get('/api/x').set(SPA).expect(401);
    expect(await idpAccepts(await bearerOf(fresh))).toBe(200);
    expect(s.idp.revocationRequests.filter((x) => x.token === oldRefreshToken)).toEqual([]);
  });

  it('logging out the only session of a user still revokes its refresh token at the IdP', async () => {
    const browser = s.gw.agent();
    const issued = s.idp.tokensIssued().length;
    await loginAs(browser, s.idp, 'only-session-user');
    const refreshToken = lastLoginRefreshToken(issued);
    await browser.post('/auth/logout').set(SPA).expect(200);
    await waitFor('the revocation', () => s.idp.revocationRequests.some((r) => r.token === refreshToken && r.status === 200));
  });

  it('guard: logging out another browser of the same user leaves this browser working', async () => {
    const here = s.gw.agent();
    const there = s.gw.agent();
    await loginAs(here, s.idp, 'two-browsers-user', { idpAgent: idpAgent(s.idp) });
    await loginAs(there, s.idp, 'two-browsers-user', { idpAgent: idpAgent(s.idp) });
    await there.post('/auth/logout').set(SPA).expect(200);
    await there.get('/api/x').set(SPA).expect(401);

    expect(await idpAccepts(await bearerOf(here))).toBe(200);
    const refreshed = s.idp.refreshSucceeded;
    await s.idp.waitForAccessTokenExpiry();
    expect(await idpAccepts(await bearerOf(here))).toBe(200);
    expect(s.idp.refreshSucceeded).toBe(refreshed + 1);
  });
});
