/**
 * HTTPS deployment behind one TLS-terminating proxy (publicUrl https://app.example, trustProxy 1): the
 * __Host- cookie names and their attributes, and no unusable session when the proxy header is missing.
 * Cookies are carried by hand: a client over plain http would not send Secure ones.
 */
import request from 'supertest';
import { followIdp } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';
import {
  cookiesNamed,
  forgedCookieValue,
  issuedCookie,
  parseSetCookie,
  recordResponses,
  setCookies,
  settle,
  startLogin,
  type ParsedCookie,
  type Recorded,
} from '../support/security';

const PUBLIC = 'https://app.example';
const SESSION = '__Host-Http-gatehouse';
/** Each login has its own tx cookie, `__Host-gatehouse-tx-<id>`. */
const TX = '__Host-gatehouse-tx-';
const HTTPS = { 'X-Forwarded-Proto': 'https' } as const;

describe('security: https deployment cookies', () => {
  let s: Stack;
  let recorded: Recorded[];

  beforeAll(async () => {
    s = await startStack({ gateway: { publicUrl: PUBLIC, trustProxy: 1 } });
    await s.idp.allowGateway(PUBLIC);
    recorded = recordResponses(s.gw.server);
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);

  /** GET /auth/login, the IdP, then the callback with the tx cookie copied by hand. */
  async function login(sub: string, callbackHeaders: Record<string, string> = HTTPS) {
    const l = await startLogin(gw(), '/auth/login?returnTo=%2Fapp', HTTPS);
    const tx = issuedCookie(
      l.start,
      setCookies(l.start)
        .map(parseSetCookie)
        .find((c) => c.name.startsWith(TX))?.name ?? TX,
    );
    const cbUrl = new URL(await followIdp(s.idp, l.authorizationUrl.href, sub));
    const cb = await gw()
      .get(cbUrl.pathname + cbUrl.search)
      .set(callbackHeaders)
      .set('Cookie', `${tx.name}=${tx.value}`)
      .redirects(0);
    return { l, tx, cbUrl, cb };
  }

  function expectHostCookie(c: ParsedCookie) {
    expect(c.attrs.has('secure')).toBe(true);
    expect(c.attrs.get('path')).toBe('/');
    expect(c.attrs.has('domain')).toBe(false);
    expect(c.attrs.has('httponly')).toBe(true);
  }

  it('the login cookie is __Host-gatehouse-tx-<id> with Secure, HttpOnly, Path=/, SameSite=Lax, Max-Age <= 600 and no Domain', async () => {
    const { l, tx, cbUrl } = await login('tx-https');
    // The IdP sends the browser back to the redirect_uri it was given (in the URL, or pushed with PAR).
    expect(`${cbUrl.origin}${cbUrl.pathname}`).toBe(`${PUBLIC}/auth/callback`);
    expectHostCookie(tx);
    expect(tx.attrs.get('samesite')).toBe('Lax');
    expect(Number(tx.attrs.get('max-age'))).toBeLessThanOrEqual(600);
    expect(setCookies(l.start).filter((c) => c.startsWith('gatehouse-tx'))).toHaveLength(0);
  });

  it('the session cookie is __Host-Http-gatehouse; Secure; HttpOnly; Path=/; SameSite=Strict, without Domain, and it works', async () => {
    const { cb } = await login('https-user');
    expect(cb.status).toBe(302);
    expect(cb.headers.location).toBe('/app');
    const c = issuedCookie(cb, SESSION);
    expectHostCookie(c);
    expect(c.attrs.get('samesite')).toBe('Strict');
    expect(c.attrs.has('max-age')).toBe(false);
    expect(cookiesNamed(cb, 'gatehouse')).toHaveLength(0);
    expect(cb.headers['strict-transport-security']).toMatch(/max-age=\d+/);

    const me = await gw().get('/auth/session').set(HTTPS).set(SPA).set('Origin', PUBLIC).set('Cookie', `${SESSION}=${c.value}`);
    expect(me.status).toBe(200);
    expect((me.body as { user: { sub: string } }).user.sub).toBe('https-user');
    // the development name is not an alias of the secure one
    await gw().get('/auth/session').set(HTTPS).set(SPA).set('Cookie', `gatehouse=${c.value}`).expect(401);
    await gw().get('/auth/session').set(HTTPS).set(SPA).set('Cookie', `__Host-gatehouse=${c.value}`).expect(401);
  });

  it('every clearing cookie repeats Secure, HttpOnly, Path=/ and SameSite, without Domain (logout and 401)', async () => {
    const { cb } = await login('https-logout');
    const cookie = `${SESSION}=${issuedCookie(cb, SESSION).value}`;

    const out = await gw().post('/auth/logout').set(HTTPS).set(SPA).set('Cookie', cookie).expect(200);
    const cleared = cookiesNamed(out, SESSION);
    expect(cleared).toHaveLength(1);
    expect(cleared[0]!.value).toBe('');
    expect(cleared[0]!.attrs.get('max-age')).toBe('0');
    expectHostCookie(cleared[0]!);
    expect(cleared[0]!.attrs.get('samesite')).toBe('Strict');

    // the logged-out cookie and a forged one get the same clearing cookie on a 401
    for (const value of [cookie, `${SESSION}=${forgedCookieValue()}`]) {
      const r = await gw().get('/api/x').set(HTTPS).set(SPA).set('Cookie', value);
      expect(r.status).toBe(401);
      const c = cookiesNamed(r, SESSION);
      expect(c).toHaveLength(1);
      expect(c[0]!.value).toBe('');
      expect(c[0]!.attrs.get('max-age')).toBe('0');
      expectHostCookie(c[0]!);
    }
    expect(s.upstream.requests).toHaveLength(0);
  });

  it('a callback that arrives without X-Forwarded-Proto answers 400 login_failed and creates no session', async () => {
    const codeGrants = s.idp.grants.authorization_code;
    const keysBefore = (await s.redis!.keys(`${s.prefix}s:*`)).length;
    const { cb } = await login('no-proto', {});
    expect(cb.status).toBe(400);
    expect(cb.body).toEqual({ error: 'login_failed', message: 'The login could not be completed. Start again at /auth/login.' });
    expect(cookiesNamed(cb, SESSION)).toHaveLength(0);
    expect(cookiesNamed(cb, 'gatehouse')).toHaveLength(0);
    expect((await s.redis!.keys(`${s.prefix}s:*`)).length).toBe(keysBefore);
    expect(s.idp.grants.authorization_code).toBe(codeGrants);
  });

  it('every /auth/* response is no-store and none has X-Powered-By', async () => {
    await settle();
    const auth = recorded.filter((r) => r.url.startsWith('/auth'));
    expect(auth.length).toBeGreaterThan(5);
    for (const r of auth) expect(r.head).toMatch(/\r\ncache-control: no-store\r\n/i);
    for (const r of recorded) expect(r.head).not.toMatch(/x-powered-by/i);
  });
});
