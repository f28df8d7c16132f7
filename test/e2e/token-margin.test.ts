/**
 * The last seconds of an access token while the IdP cannot refresh it. Gatehouse keeps using a token that is
 * still valid, but the IdP set its `exp` in whole seconds when it issued it (up to a second before our clock
 * starts counting expires_in), and the API's clock may run ahead: the token is not sent in its last seconds
 * (GATEHOUSE_TOKEN_EXPIRY_MARGIN_SECONDS), and the browser gets 503 token_refresh_unavailable with
 * Retry-After instead of the API's own 401, which an SPA would take for a logout.
 *
 * The upstream here judges every bearer as an API would: at the IdP (userinfo, no clock tolerance).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

/** An API that asks the IdP about every bearer: 401 invalid_token when the IdP refuses it, else 200. */
async function checkingUpstream(userinfo: string): Promise<{ url: string; close(): Promise<void> }> {
  const u = new URL(userinfo);
  const server = http.createServer((req, res) => {
    void request(u.origin)
      .get(u.pathname)
      .set('Authorization', req.headers.authorization ?? '')
      .then((r) => {
        if (r.status === 200) return res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"ok":true}');
        res.writeHead(401, { 'WWW-Authenticate': 'Bearer error="invalid_token"' }).end();
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('an access token near its end while the IdP is down', () => {
  let s: Stack;
  let upstream: Awaited<ReturnType<typeof checkingUpstream>>;

  beforeAll(async () => {
    // The IdP comes up first to learn its userinfo endpoint; the gateway then proxies to the checking API.
    const probe = await startStack({ idp: { accessTokenTtl: 6 } });
    const meta = await request(probe.idp.issuer).get('/.well-known/openid-configuration').expect(200);
    upstream = await checkingUpstream((meta.body as { userinfo_endpoint: string }).userinfo_endpoint);
    s = probe;
    await s.addInstance({ upstream: upstream.url, refreshSkewSeconds: 4 });
  });
  afterAll(async () => {
    await s?.close();
    await upstream?.close();
  });

  it('answers 503 token_refresh_unavailable with Retry-After, never the API’s 401, once the token is in its last seconds', async () => {
    const gw = s.instances[1]!;
    const browser = gw.agent();
    // Log in just after the middle of a second: the IdP's `exp` (whole seconds) then comes most of a second
    // before expires_in counted from our clock, the case a margin must cover.
    while (Date.now() % 1000 < 600 || Date.now() % 1000 > 650) await sleep(5);
    await loginAs(browser, s.idp, 'margin-user');
    s.idp.failRefresh(503);
    try {
      const seen: Array<{ status: number; error?: string; retryAfter?: string }> = [];
      for (const end = Date.now() + 10_000; Date.now() < end && seen.filter((x) => x.status === 503).length < 3; await sleep(40)) {
        const r = await browser.get('/api/x').set(SPA);
        seen.push({ status: r.status, error: (r.body as { error?: string }).error, retryAfter: r.headers['retry-after'] });
      }
      expect(seen.map((x) => x.status).join(',')).toMatch(/^200(,200)*(,503)+$/);
      for (const x of seen.filter((y) => y.status === 503)) {
        expect(x.error).toBe('token_refresh_unavailable');
        expect(x.retryAfter).toMatch(/^\d+$/);
      }
    } finally {
      s.idp.failRefresh(null);
    }
    // The session was kept: once the IdP answers again, the next call refreshes and goes through.
    await sleep(1100);
    await browser.get('/api/x').set(SPA).expect(200);
  });
});
