/**
 * GET /auth/session's extra fields for an SPA's live view: the access token's end and the number of
 * refreshes, never a token. Against a real IdP (2 s access tokens), real Redis and a real upstream.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

interface SessionBody {
  authenticated: boolean;
  user: Record<string, unknown>;
  expiresAt: number;
  idleExpiresAt: number;
  accessTokenExpiresAt: number;
  refreshCount: number;
}

describe('/auth/session token information', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ idp: { accessTokenTtl: 2 } });
  });
  afterAll(() => s.close());

  it('reports when the access token expires and how often it was refreshed, and never a token', async () => {
    const browser = s.gw.agent();
    const loggedInAt = Math.floor(Date.now() / 1000);
    await loginAs(browser, s.idp, 'alice');

    const first = (await browser.get('/auth/session').set(SPA).expect(200)).body as SessionBody;
    expect(Object.keys(first).sort()).toEqual(
      ['accessTokenExpiresAt', 'authenticated', 'expiresAt', 'idleExpiresAt', 'refreshCount', 'user'].sort(),
    );
    expect(first.refreshCount).toBe(0);
    // the IdP's 2 s lifetime, counted from when the gateway received the token
    expect(first.accessTokenExpiresAt).toBeGreaterThanOrEqual(loggedInAt + 1);
    expect(first.accessTokenExpiresAt).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 2);

    // an API call after the token expired refreshes it once (and waits for it); /auth/session itself never
    // refreshes. accessTokenExpiresAt is in whole seconds, rounded down: the token ends within the next one.
    while (Date.now() / 1000 <= first.accessTokenExpiresAt + 1) await sleep(100);
    const stillOld = (await browser.get('/auth/session').set(SPA).expect(200)).body as SessionBody;
    expect(stillOld).toMatchObject({ refreshCount: 0, accessTokenExpiresAt: first.accessTokenExpiresAt });
    const grants = s.idp.grants.refresh_token;
    await browser.get('/api/x').set(SPA).expect(200);
    expect(s.idp.grants.refresh_token).toBe(grants + 1);

    const second = (await browser.get('/auth/session').set(SPA).expect(200)).body as SessionBody;
    expect(second.refreshCount).toBe(1);
    expect(second.accessTokenExpiresAt).toBeGreaterThan(first.accessTokenExpiresAt);
    expect(second).toMatchObject({ expiresAt: first.expiresAt, user: first.user });

    const body = JSON.stringify(second);
    for (const token of s.idp.tokensIssued()) expect(body).not.toContain(token);
  });

  it('keeps answering 401 unauthenticated without a session', async () => {
    const r = await s.gw.agent().get('/auth/session').set(SPA).expect(401);
    expect(r.body).toMatchObject({ error: 'unauthenticated' });
  });
});
