/**
 * /api runs on node:http, past Express (src/api/lane.ts; docs/architecture.md). What Express gave every
 * response must still be on every /api answer, whichever step gives it: the OWASP secure headers,
 * X-Request-Id, no X-Powered-By; and the requests Express routed to /api must still reach it.
 */
import request from 'supertest';
import { loginAs } from '../support/login';
import { SPA, startStack, type Instance, type Stack } from '../support/stack';
import { issuedCookie, rawRequest, rawSocket } from '../support/security';

/** The secure headers helmet sets with Gatehouse's options on http (no HSTS). */
const SECURE_HEADERS = [
  'content-security-policy',
  'cross-origin-opener-policy',
  'cross-origin-resource-policy',
  'origin-agent-cluster',
  'referrer-policy',
  'x-content-type-options',
  'x-dns-prefetch-control',
  'x-download-options',
  'x-frame-options',
  'x-permitted-cross-domain-policies',
  'x-xss-protection',
];

describe('/api past Express: the same headers and routing as every other answer', () => {
  let s: Stack;
  let cookie: string;
  let trusting: Instance;

  beforeAll(async () => {
    s = await startStack();
    const cb = await loginAs(s.gw.agent(), s.idp, 'lane-user');
    cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
    trusting = await s.addInstance({ trustProxy: 1 });
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);

  it('every /api answer (proxied, 400, 401, 403, 405) carries the secure headers of an Express route, an X-Request-Id, no X-Powered-By', async () => {
    const reference = await gw().get('/healthz').expect(200);
    const answers = await Promise.all([
      gw().get('/api/items').set(SPA).set('Cookie', cookie).expect(200),
      gw().get('/api//evil.example').set(SPA).set('Cookie', cookie).expect(400),
      gw().get('/api/items').set(SPA).expect(401),
      gw().get('/api/items').set('Cookie', cookie).expect(403),
      gw().trace('/api/items').set(SPA).set('Cookie', cookie).expect(405),
      gw().get('/auth/session').set(SPA).expect(401),
    ]);
    for (const r of answers) {
      for (const name of SECURE_HEADERS) expect([name, r.headers[name]]).toEqual([name, reference.headers[name]]);
      expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(r.headers['x-powered-by']).toBeUndefined();
    }
    expect(new Set(answers.map((r) => r.headers['x-request-id'])).size).toBe(answers.length);
    expect(reference.headers['content-security-policy']).toContain("default-src 'self'");
  });

  it('an error answer on /api is the documented JSON, as on Express routes', async () => {
    const r = await gw().get('/api/items').set(SPA).expect(401);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.body).toEqual({ error: 'unauthenticated', message: 'No valid session. Log in at /auth/login.' });
    const head = await gw().head('/api/items').set(SPA).expect(401);
    expect(head.text ?? '').toBe('');
  });

  it('/api with a query, /api itself and /API (refused by the path guard, as under Express routing) reach the /api steps', async () => {
    const before = s.upstream.requests.length;
    await gw().get('/api?x=1').set(SPA).set('Cookie', cookie).expect(200);
    expect(s.upstream.last().url).toBe('/?x=1');
    await gw().get('/api').set(SPA).set('Cookie', cookie).expect(200);
    expect(s.upstream.last().url).toBe('/');
    const upper = await gw().get('/API/items').set(SPA).set('Cookie', cookie).expect(400);
    expect(upper.body).toMatchObject({ error: 'bad_request' });
    for (const target of ['/api\\items', '/api\\items#x']) {
      const r = await rawRequest(s.gw.url, { method: 'GET', path: target, headers: { ...SPA, Cookie: cookie } });
      expect([target, r.status]).toEqual([target, 400]);
    }
    expect(s.upstream.requests.length).toBe(before + 2);
    // Not /api: Express answers (the SPA's files, or 404 without them).
    await gw().get('/apix').set(SPA).set('Cookie', cookie).expect(404);
  });

  it('a POST, PUT or PATCH without a body reaches the upstream as Content-Length: 0, never chunked', async () => {
    for (const method of ['POST', 'PUT', 'PATCH'] as const) {
      // A raw socket: an HTTP client library would add Content-Length: 0 itself.
      const r = await rawSocket(
        s.gw.server.port,
        `${method} /api/items HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: close\r\n\r\n`,
        2000,
      );
      expect(r.status).toBe(200);
      const seen = s.upstream.last();
      expect([method, seen.headers['content-length'], seen.headers['transfer-encoding']]).toEqual([method, '0', undefined]);
    }
    await gw().delete('/api/items').set(SPA).set('Cookie', cookie).expect(200);
    expect(s.upstream.last().headers['transfer-encoding']).toBeUndefined();
    await gw().post('/api/items').set(SPA).set('Cookie', cookie).send({ a: 1 }).expect(200);
    expect(s.upstream.last().headers['content-length']).toBe('7');
  });

  it('with one trusted hop, the upstream sees the address that hop reported, never one the browser chose', async () => {
    const cb = await loginAs(trusting.agent(), s.idp, 'lane-user-2');
    const own = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
    await request(trusting.server).get('/api/items').set(SPA).set('Cookie', own).set('X-Forwarded-For', 'spoofed, 203.0.113.7').expect(200);
    expect(s.upstream.last().headers['x-forwarded-for']).toBe('203.0.113.7');
    await request(trusting.server).get('/api/items').set(SPA).set('Cookie', own).expect(200);
    expect(s.upstream.last().headers['x-forwarded-for']).toBe('127.0.0.1');
  });
});
