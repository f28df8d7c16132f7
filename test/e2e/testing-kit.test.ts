import request from 'supertest';
import type { GatehouseOptions } from 'gatehouse-bff';
import { createTestGatehouse, loginAs, type EchoResponse, type TestGatehouse } from 'gatehouse-bff/testing';

// Your own settings; the kit wires the IdP, the public URL, the upstream and the secrets.
const settings: Partial<GatehouseOptions> = { sessionIdleSeconds: 900 };
// The header every /api call of the SPA carries (Gatehouse's CSRF check).
const SPA = { 'X-CSRF': '1' };

let gw: TestGatehouse;
beforeAll(async () => {
  // A real OpenID provider, an echo upstream and the in-memory store.
  // Options: { redisUrl } for Redis, { upstream } for your own API, { idp: { accessTokenTtl } }, ...
  gw = await createTestGatehouse({ gateway: settings });
});
afterEach(() => gw.idp.failRefresh(null));
afterAll(() => gw.close());

test('a logged-in user reaches the API with a Bearer token and no cookie', async () => {
  const agent = request.agent(gw.app);
  await loginAs(agent, 'alice');

  const res = await agent.get('/api/orders?page=2').set(SPA).expect(200);
  const received = res.body as EchoResponse; // what the echo upstream received
  expect(received.url).toBe('/orders?page=2');
  expect(received.headers.authorization).toMatch(/^Bearer /);
  expect(received.headers.cookie).toBeUndefined();
});

test('an expired access token costs exactly one refresh, however many calls need it', async () => {
  const agent = request.agent(gw.app);
  await loginAs(agent, 'bob');
  const before = gw.idp.grants.refresh_token;

  await gw.idp.waitForAccessTokenExpiry(); // the test IdP's access tokens live 2 s
  await Promise.all([agent.get('/api/a').set(SPA).expect(200), agent.get('/api/b').set(SPA).expect(200)]);
  expect(gw.idp.grants.refresh_token - before).toBe(1);
});

test('a user revoked at the IdP gets 401 session_expired and must log in again', async () => {
  const agent = request.agent(gw.app);
  await loginAs(agent, 'carol');

  await gw.idp.revoke('carol');
  await gw.idp.waitForAccessTokenExpiry();
  const res = await agent.get('/api/orders').set(SPA).expect(401);
  expect(res.body).toMatchObject({ error: 'session_expired' });
  await agent.get('/auth/session').set(SPA).expect(401);
});

test('an IdP that cannot refresh gets 503 with Retry-After, and the session survives', async () => {
  const agent = request.agent(gw.app);
  await loginAs(agent, 'dave');

  gw.idp.failRefresh(503);
  await gw.idp.waitForAccessTokenExpiry();
  const res = await agent.get('/api/orders').set(SPA).expect(503);
  expect(res.body).toMatchObject({ error: 'token_refresh_unavailable' });
  const retryAfter = Number(res.headers['retry-after']);
  expect(retryAfter).toBeGreaterThan(0);

  gw.idp.failRefresh(null); // the IdP is back: after Retry-After, the same cookie works again
  await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000));
  await agent.get('/api/orders').set(SPA).expect(200);
});
