/**
 * Many APIs behind one front door: the route table (matching, token policies, methods, timeouts, Set-Cookie)
 * against two real upstreams with different base paths, and the upstream's 401 invalid_token answered by one
 * refresh and one replay.
 */
import request from 'supertest';
import type { RouteOptions } from '../../src/config/routes';
import { loginAs, type Agent } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { startUpstream, type TestUpstream } from '../support/upstream';
import { accessTokensIssuedSince, refreshCounters, refreshTokenReuse } from '../support/refresh';

describe('routes', () => {
  let s: Stack;
  let orders: TestUpstream;
  let gw: Instance;
  let browser: Agent;

  beforeAll(async () => {
    orders = await startUpstream();
    s = await startStack({ idp: { accessTokenTtl: 60 } });
    const routes: RouteOptions[] = [
      { path: '/api', upstream: `${s.upstream.url}/core` },
      { path: '/api/orders', upstream: `${orders.url}/orders-v2`, methods: ['GET', 'POST'] },
      { path: '/api/orders/archive', upstream: `${orders.url}/archive` },
      { path: '/api/catalog', upstream: `${orders.url}/catalog`, token: 'optional' },
      { path: '/api/status', upstream: `${orders.url}/status-page`, token: 'none' },
      { path: '/api/slow', upstream: `${orders.url}`, timeoutSeconds: 1 },
      { path: '/api/prefs', upstream: `${orders.url}`, allowSetCookie: true },
    ];
    gw = await s.addInstance({ routes: JSON.stringify(routes) });
    browser = gw.agent();
    await loginAs(browser, s.idp, 'route-user');
  });
  afterAll(async () => {
    await s?.close();
    await orders?.close();
  });

  const anonymous = () => request(gw.server);

  it('sends each path to the route with the longest matching prefix, at segment boundaries, under its base path', async () => {
    const cases: Array<[string, TestUpstream, string]> = [
      ['/api/orders/7?full=1', orders, '/orders-v2/7?full=1'],
      ['/api/orders', orders, '/orders-v2/'],
      ['/api/orders/archive/2020', orders, '/archive/2020'],
      ['/api/ordersX', s.upstream, '/core/ordersX'],
      ['/api/other/thing', s.upstream, '/core/other/thing'],
    ];
    for (const [path, upstream, expected] of cases) {
      await browser.get(path).set(SPA).expect(200);
      expect([path, upstream.last().url]).toEqual([path, expected]);
      expect(upstream.last().headers.authorization).toMatch(/^Bearer \S+$/);
    }
  });

  it('answers 404 not_found for a path under /api that no route serves, and forwards nothing', async () => {
    const only = await s.addInstance({ routes: JSON.stringify([{ path: '/api/orders', upstream: orders.url }]) });
    const before = orders.requests.length + s.upstream.requests.length;
    const r = await request(only.server).get('/api/elsewhere').set(SPA).expect(404);
    expect(r.body).toEqual({ error: 'not_found', message: 'Not found.' });
    await request(only.server).get('/api').set(SPA).expect(404);
    expect(orders.requests.length + s.upstream.requests.length).toBe(before);
  });

  it('user: 401 without a session; optional: no 401 and no Authorization without one, the token with one', async () => {
    await anonymous().get('/api/orders/1').set(SPA).expect(401);
    await anonymous().get('/api/catalog/items').set(SPA).expect(200);
    expect(orders.last().headers.authorization).toBeUndefined();
    await browser.get('/api/catalog/items').set(SPA).expect(200);
    expect(orders.last().headers.authorization).toMatch(/^Bearer \S+$/);
  });

  it('none: no session is looked up and no Authorization or cookie is sent, with or without a session', async () => {
    await anonymous().get('/api/status').set(SPA).expect(200);
    expect(orders.last()).toMatchObject({ url: '/status-page/' });
    await browser.get('/api/status/db').set(SPA).expect(200);
    expect(orders.last().url).toBe('/status-page/db');
    expect(orders.last().headers.authorization).toBeUndefined();
    expect(orders.last().headers.cookie).toBeUndefined();
    // A cookie that names no session is not even looked at here: no 401, no clearing cookie.
    const r = await anonymous().get('/api/status').set(SPA).set('Cookie', 'gatehouse=s%3Aforged.sig').expect(200);
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it('keeps the CSRF rule on every route, whatever its token policy', async () => {
    for (const path of ['/api/status', '/api/catalog/x', '/api/orders/1']) {
      const r = await browser.get(path).expect(403);
      expect(r.body).toMatchObject({ error: 'csrf' });
    }
  });

  it('answers a method the route does not allow with 405 and Allow, before any session work', async () => {
    const r = await browser.delete('/api/orders/7').set(SPA).expect(405);
    expect(r.body).toMatchObject({ error: 'method_not_allowed' });
    expect(r.headers.allow).toBe('GET, POST');
    await browser.post('/api/orders').set(SPA).send({ item: 1 }).expect(200);
    await anonymous().trace('/api/status').set(SPA).expect(405);
  });

  it('answers 504 upstream_timeout after the route’s timeoutSeconds and keeps the session; a stream outlives it', async () => {
    const r = await browser.get('/api/slow/slow?ms=3000').set(SPA).expect(504);
    expect(r.body).toMatchObject({ error: 'upstream_timeout' });
    await browser.get('/api/slow/x').set(SPA).expect(200);
    const sse = await browser.get('/api/slow/sse?events=20').set(SPA).buffer(true).expect(200); // 2 s of events
    expect(sse.text.match(/^data: /gm)).toHaveLength(20);
  });

  it('lets an upstream Set-Cookie through only where the route allows it, and never one named like Gatehouse’s', async () => {
    const allowed = await browser.get('/api/prefs/set-cookie-app').set(SPA).expect(200);
    expect(allowed.headers['set-cookie']).toEqual(['app-pref=dark; Path=/']);
    const refused = await browser.get('/api/orders/set-cookie-app').set(SPA).expect(200);
    expect(refused.headers['set-cookie']).toBeUndefined();
  });

  it('refuses paths that would leave any route’s base, on every route', async () => {
    for (const path of ['/api/orders/../admin', '/api/orders/%2e%2e/admin', '/api/status//evil.example', '/api/orders/@evil.example']) {
      const r = await browser.get(path).set(SPA);
      expect([path, r.status]).toEqual([path, 400]);
    }
  });
});

describe('the upstream refuses the access token: one refresh, one replay', () => {
  let s: Stack;
  let a: Instance;
  let b: Instance;
  beforeAll(async () => {
    s = await startStack({ instances: 2, idp: { accessTokenTtl: 60 } });
    [a, b] = s.instances as [Instance, Instance];
  });
  afterAll(() => s?.close());

  async function loggedIn(sub: string): Promise<{ cookie: string; token: string }> {
    const agent = a.agent();
    const issued = s.idp.tokensIssued().length;
    const cb = await loginAs(agent, s.idp, sub);
    const cookie = ([] as string[])
      .concat(cb.headers['set-cookie'] ?? [])
      .find((c) => c.startsWith('gatehouse='))!
      .split(';')[0]!;
    return { cookie, token: accessTokensIssuedSince(s.idp, issued)[0]! };
  }
  const call = (inst: Instance, cookie: string, path: string) => request(inst.server).get(path).set(SPA).set('Cookie', cookie);

  it('refreshes once for 20 concurrent calls on two replicas rejected with the same token, and replays each once with the new token', async () => {
    const { cookie, token } = await loggedIn('rejected-token-user');
    s.upstream.rejectedTokens.add(token);
    const before = refreshCounters(s.idp);
    const issued = s.idp.tokensIssued().length;
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => call(i % 2 ? b : a, cookie, `/api/replay/${i}`)));
    expect(rs.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    const [fresh] = accessTokensIssuedSince(s.idp, issued);
    const replays = s.upstream.requests.filter((r) => r.url.startsWith('/replay/') && r.headers.authorization === `Bearer ${fresh}`);
    expect(replays).toHaveLength(20);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    const text =
      (await request(a.gatehouse.adminApp).get('/metrics').expect(200)).text +
      (await request(b.gatehouse.adminApp).get('/metrics').expect(200)).text;
    const retries = [...text.matchAll(/^gatehouse_upstream_token_retries_total (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    expect(retries).toBe(20);
  });

  it('never replays a request with a body: its 401 passes through and no refresh is sent', async () => {
    const { cookie, token } = await loggedIn('rejected-post-user');
    s.upstream.rejectedTokens.add(token);
    const before = refreshCounters(s.idp);
    const r = await request(a.server).post('/api/orders').set(SPA).set('Cookie', cookie).send({ item: 1 });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/invalid_token/);
    expect(refreshCounters(s.idp).grants).toBe(before.grants);
  });

  it('passes the second 401 through when the new token is refused too (no loop)', async () => {
    const { cookie } = await loggedIn('rejected-twice-user');
    const before = refreshCounters(s.idp);
    const sent = s.upstream.requests.length;
    const r = await call(a, cookie, '/api/refuse-every-token'); // refuses the first token and the new one
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/invalid_token/);
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    const bearers = s.upstream.requests.slice(sent).map((q) => q.headers.authorization);
    expect(bearers).toHaveLength(2); // the request and its one replay
    expect(bearers[0]).not.toBe(bearers[1]);
  });

  it('answers 503 token_refresh_unavailable when the refresh fails, and 401 session_expired on invalid_grant', async () => {
    const one = await loggedIn('rejected-idp-down-user');
    s.upstream.rejectedTokens.add(one.token);
    s.idp.failRefresh(503);
    try {
      const r = await call(a, one.cookie, '/api/x');
      expect([r.status, (r.body as { error?: string }).error]).toEqual([503, 'token_refresh_unavailable']);
      expect(r.headers['retry-after']).toMatch(/^\d+$/);
    } finally {
      s.idp.failRefresh(null);
    }
    const two = await loggedIn('rejected-revoked-user');
    s.upstream.rejectedTokens.add(two.token);
    await s.idp.revoke('rejected-revoked-user');
    const r = await call(b, two.cookie, '/api/x');
    expect([r.status, (r.body as { error?: string }).error]).toEqual([401, 'session_expired']);
  });
});
