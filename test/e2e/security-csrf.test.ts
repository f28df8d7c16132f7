/**
 * CSRF and CORS, always with a valid session cookie: only a same-origin request carrying `X-CSRF: 1` gets
 * through, on /api, /auth/session and /auth/logout alike, and a refused request never reaches the upstream.
 */
import request from 'supertest';
import { loginAs } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';
import { issuedCookie, recordResponses, settle, type Recorded } from '../support/security';

const CSRF = { error: 'csrf', message: 'Cross-site request refused. Send X-CSRF: 1 from the same origin.' };

describe('security: CSRF and CORS', () => {
  let s: Stack;
  let recorded: Recorded[];
  let cookie: string;

  beforeAll(async () => {
    s = await startStack();
    recorded = recordResponses(s.gw.server);
    const cb = await loginAs(s.gw.agent(), s.idp, 'csrf-victim');
    cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);

  interface Variant {
    method: 'GET' | 'POST';
    headers: Record<string, string>;
    /** a form body (text/plain), else JSON {a:1} for POST */
    text?: string;
  }
  const EVIL = 'https://evil.example';
  const refused: Array<[string, Variant]> = [
    ['POST without X-CSRF', { method: 'POST', headers: {} }],
    ['GET without X-CSRF', { method: 'GET', headers: {} }],
    ['X-CSRF with a value other than 1', { method: 'POST', headers: { 'X-CSRF': 'true' } }],
    ['Origin: https://evil.example', { method: 'POST', headers: { ...SPA, Origin: EVIL } }],
    ['Origin: null', { method: 'POST', headers: { ...SPA, Origin: 'null' } }],
    ['an Origin on another port of the same host', { method: 'POST', headers: { ...SPA, Origin: 'http://127.0.0.1:1' } }],
    ['Sec-Fetch-Site: cross-site', { method: 'POST', headers: { ...SPA, 'Sec-Fetch-Site': 'cross-site' } }],
    ['Sec-Fetch-Site: same-site', { method: 'POST', headers: { ...SPA, 'Sec-Fetch-Site': 'same-site' } }],
    [
      'a text/plain form POST',
      { method: 'POST', headers: { 'Content-Type': 'text/plain', Origin: EVIL, 'Sec-Fetch-Site': 'cross-site' }, text: 'a=1' },
    ],
    ['a text/plain POST without Origin or Sec-Fetch-Site', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, text: 'a=1' }],
  ];

  /** Sends the variant to `path` with the victim's cookie; `method` overrides the variant's. */
  function send(path: string, v: Variant, method: 'GET' | 'POST' = v.method): request.Test {
    if (method === 'GET') return gw().get(path).set(v.headers).set('Cookie', cookie);
    const req = gw().post(path).set(v.headers).set('Cookie', cookie);
    return v.text === undefined ? req.send({ a: 1 }) : req.send(v.text);
  }

  describe('/api/x is refused with 403 csrf and the upstream records nothing', () => {
    it.each(refused)('%s', async (_name, v) => {
      const before = s.upstream.requests.length;
      const r = await send('/api/x', v);
      expect(r.status).toBe(403);
      expect(r.body).toEqual(CSRF);
      expect(s.upstream.requests.length).toBe(before);
    });
  });

  describe('the same rule guards GET /auth/session', () => {
    it.each(refused.filter(([, v]) => v.text === undefined))('%s', async (_name, v) => {
      const r = await send('/auth/session', v, 'GET');
      expect(r.status).toBe(403);
      expect(r.body).toEqual(CSRF);
      expect(r.text).not.toContain('csrf-victim');
    });
  });

  describe('a cross-site POST /auth/logout is refused and the session survives', () => {
    it.each(refused)('%s', async (_name, v) => {
      const r = await send('/auth/logout', v, 'POST');
      expect(r.status).toBe(403);
      expect(r.body).toEqual(CSRF);
      expect(r.headers['set-cookie']).toBeUndefined();
      await gw().get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
    });
  });

  it('GET /auth/logout → 405 with Allow: POST, and the session survives', async () => {
    for (const headers of [{}, SPA]) {
      const r = await gw().get('/auth/logout').set(headers).set('Cookie', cookie);
      expect(r.status).toBe(405);
      expect(r.body).toMatchObject({ error: 'method_not_allowed' });
      expect(r.headers.allow).toBe('POST');
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    await gw().get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
  });

  it('OPTIONS /api/x from a foreign Origin gets no Access-Control-Allow-* headers and reaches nothing', async () => {
    const before = s.upstream.requests.length;
    for (const path of ['/api/x', '/auth/session', '/auth/logout']) {
      const r = await gw()
        .options(path)
        .set('Cookie', cookie)
        .set('Origin', 'https://evil.example')
        .set('Access-Control-Request-Method', 'POST')
        .set('Access-Control-Request-Headers', 'x-csrf, content-type');
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(Object.keys(r.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    }
    // and a credentialed request from there is not made readable either
    const r = await gw().get('/api/x').set(SPA).set('Cookie', cookie).set('Origin', 'https://evil.example');
    expect(Object.keys(r.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    expect(s.upstream.requests.length).toBe(before);
  });

  it('a same-origin request with X-CSRF: 1 goes through (Origin and Sec-Fetch-Site same-origin, or absent)', async () => {
    const before = s.upstream.requests.length;
    await gw()
      .post('/api/x')
      .set(SPA)
      .set('Cookie', cookie)
      .set('Origin', s.gw.url)
      .set('Sec-Fetch-Site', 'same-origin')
      .send({ a: 1 })
      .expect(200);
    await gw().get('/api/x').set(SPA).set('Cookie', cookie).expect(200);
    await gw().get('/auth/session').set(SPA).set('Cookie', cookie).set('Origin', s.gw.url).set('Sec-Fetch-Site', 'same-origin').expect(200);
    expect(s.upstream.requests.length).toBe(before + 2);
    expect(s.upstream.last().headers['x-csrf']).toBeUndefined();
  });

  it('a same-origin POST /auth/logout ends the session; a post_logout_redirect_uri in the request is ignored', async () => {
    const out = await gw()
      .post(`/auth/logout?post_logout_redirect_uri=${encodeURIComponent('https://evil.example/')}`)
      .set(SPA)
      .set('Cookie', cookie)
      .set('Origin', s.gw.url)
      .send('post_logout_redirect_uri=https://evil.example/')
      .expect(200);
    const logoutUrl = new URL(String((out.body as { logoutUrl: string }).logoutUrl));
    expect(logoutUrl.origin).toBe(new URL(s.idp.issuer).origin);
    expect(logoutUrl.searchParams.getAll('post_logout_redirect_uri')).toEqual([`${s.gw.url}/`]);
    expect(out.text).not.toContain('evil.example');
    await gw().get('/auth/session').set(SPA).set('Cookie', cookie).expect(401);
  });

  it('every refusal is no-store and no response has X-Powered-By', async () => {
    await settle();
    const refusals = recorded.filter((r) => r.status === 403);
    expect(refusals.length).toBeGreaterThan(20);
    for (const r of refusals) expect(r.head).toMatch(/\r\ncache-control: no-store\r\n/i);
    for (const r of recorded) expect(r.head).not.toMatch(/x-powered-by/i);
  });
});
