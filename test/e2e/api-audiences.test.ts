/**
 * A token per API (RFC 8707 resource indicators) against oidc-provider with the feature on: each route with a
 * `resource` gets a JWT access token for its audience, obtained with the session's one refresh token; the
 * refreshes of a session's audiences never overlap (the refresh token rotates at each), on any number of
 * replicas.
 */
import request from 'supertest';
import type { RouteOptions } from '../../src/config/routes';
import type { EchoResponse } from '../support/upstream';
import { loginAs } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { issuedCookie } from '../support/security';

const ORDERS = 'https://orders.example/';
const BILLING = 'https://billing.example/';

describe('a token per API (resource indicators)', () => {
  let s: Stack;
  let a: Instance;
  let b: Instance;
  /** The IdP's known resources: a test may withdraw one. */
  const known = [ORDERS, BILLING];
  const routes = (upstream: string, extra: RouteOptions[] = []): string =>
    JSON.stringify([
      { path: '/api', upstream },
      { path: '/api/orders', upstream: `${upstream}/orders`, resource: ORDERS },
      { path: '/api/billing', upstream: `${upstream}/billing`, resource: BILLING },
      { path: '/api/machine', upstream: `${upstream}/machine`, token: 'client', resource: BILLING },
      ...extra,
    ] satisfies RouteOptions[]);

  beforeAll(async () => {
    s = await startStack({ idp: { resources: known, accessTokenTtl: 4 } });
    a = await s.addInstance({ publicUrl: s.gw.url, routes: routes(s.upstream.url), refreshSkewSeconds: 1 });
    b = await s.addInstance({ publicUrl: s.gw.url, routes: routes(s.upstream.url), refreshSkewSeconds: 1 });
  });
  afterAll(() => s.close());

  const login = async (sub: string, via: Instance = a): Promise<string> => {
    const cb = await loginAs(via.agent(), s.idp, sub);
    return `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  };
  const call = (inst: Instance, path: string, cookie: string) => request(inst.server).get(path).set(SPA).set('Cookie', cookie);
  const refreshes = (resource?: string) =>
    s.idp.tokenRequests.filter((r) => r.grantType === 'refresh_token' && r.resource === resource && r.status === 200).length;

  it('each route sends a token for its own API (aud), the rest the login’s token', async () => {
    const cookie = await login('aud-basic');
    const orders = (await call(a, '/api/orders/1', cookie).expect(200)).body as EchoResponse;
    const billing = (await call(b, '/api/billing/1', cookie).expect(200)).body as EchoResponse;
    const plain = (await call(a, '/api/x', cookie).expect(200)).body as EchoResponse;
    expect(orders.aud).toBe(ORDERS);
    expect(billing.aud).toBe(BILLING);
    expect(plain.aud).toBeNull(); // oidc-provider's userinfo token is opaque
    expect(new Set([orders.headers.authorization, billing.headers.authorization, plain.headers.authorization]).size).toBe(3);
    // kept: a second call sends the same token, with no grant
    const before = refreshes(ORDERS);
    const again = (await call(b, '/api/orders/2', cookie).expect(200)).body as EchoResponse;
    expect(again.headers.authorization).toBe(orders.headers.authorization);
    expect(refreshes(ORDERS)).toBe(before);
  });

  it('a storm of 40 calls over both APIs on two replicas at expiry: one grant per API, each with the refresh token the other rotated', async () => {
    const cookie = await login('aud-storm');
    await call(a, '/api/orders/1', cookie).expect(200);
    await call(b, '/api/billing/1', cookie).expect(200);
    await s.idp.waitForAccessTokenExpiry();
    const before = { orders: refreshes(ORDERS), billing: refreshes(BILLING), reuse: s.idp.reuseDetected, failed: s.idp.refreshFailed };
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => call(i % 2 ? a : b, i % 4 < 2 ? `/api/orders/${i}` : `/api/billing/${i}`, cookie)),
    );
    expect(answers.map((r) => r.status)).toEqual(Array(40).fill(200));
    for (const r of answers) {
      const body = r.body as EchoResponse;
      expect(body.aud).toBe(body.path.startsWith('/orders') ? ORDERS : BILLING);
    }
    expect(refreshes(ORDERS) - before.orders).toBe(1);
    expect(refreshes(BILLING) - before.billing).toBe(1);
    // Two grants with one rotating refresh token: the second used the token the first rotated to.
    expect(s.idp.reuseDetected).toBe(before.reuse);
    expect(s.idp.refreshFailed).toBe(before.failed);
    const sent = s.idp.tokenRequests.filter((r) => r.grantType === 'refresh_token' && r.status === 200).slice(-2);
    expect(sent[0]!.refreshToken).not.toBe(sent[1]!.refreshToken);
  });

  it('an API the IdP refuses at refresh ends the session cleanly (401 session_expired), its refresh token never sent again', async () => {
    const cookie = await login('aud-refused');
    await call(a, '/api/orders/1', cookie).expect(200);
    const index = known.indexOf(BILLING);
    known.splice(index, 1); // the IdP no longer issues tokens for billing
    try {
      const refused = await call(b, '/api/billing/1', cookie);
      expect(refused.status).toBe(401);
      expect(refused.body).toMatchObject({ error: 'session_expired' });
      expect(s.logs.some((l) => l.includes('/api/billing') && l.includes('invalid_target'))).toBe(true);
      const sentBefore = s.idp.tokenRequests.length;
      await call(a, '/api/orders/2', cookie).expect(401);
      await call(a, '/api/x', cookie).expect(401);
      expect(s.idp.tokenRequests.length).toBe(sentBefore);
    } finally {
      known.splice(index, 0, BILLING);
    }
  });

  it('a client route sends the gateway’s own token (client credentials), no session needed: one grant per expiry across replicas', async () => {
    const grants = () => s.idp.tokenRequests.filter((r) => r.grantType === 'client_credentials' && r.status === 200).length;
    const before = grants();
    const storm = () =>
      Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          request((i % 2 ? a : b).server)
            .get(`/api/machine/${i}`)
            .set(SPA),
        ),
      );
    const first = await storm();
    expect(first.map((r) => r.status)).toEqual(Array(20).fill(200));
    const body = first[0]!.body as EchoResponse;
    expect(body.aud).toBe(BILLING);
    expect(body.sub).toBe(s.idp.clientId);
    expect(body.headers.cookie).toBeUndefined();
    expect(grants() - before).toBe(1);
    // Same-origin only, like every route.
    await request(a.server).get('/api/machine/x').expect(403);
    await s.idp.waitForAccessTokenExpiry();
    const second = await storm();
    expect(second.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(grants() - before).toBe(2);
    expect((second[0]!.body as EchoResponse).headers.authorization).not.toBe(body.headers.authorization);
  });

  it('a resource the IdP does not know fails the login, with a log line naming the route', async () => {
    const unknown = await s.addInstance({
      publicUrl: s.gw.url,
      routes: routes(s.upstream.url, [{ path: '/api/stock', upstream: s.upstream.url, resource: 'https://stock.example/' }]),
    });
    const r = await request(unknown.server).get('/auth/login');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: 'login_failed' });
    expect(s.logs.some((l) => l.includes('/api/stock') && l.includes('https://stock.example/'))).toBe(true);
  });
});
