/**
 * The login-transaction cookies against the real IdP, gateway and Redis: every login gets a cookie of its own
 * (`gatehouse-tx-<id>`, `__Host-gatehouse-tx-<id>` over https) holding a binding the gateway just made,
 * never a value the browser brought (login CSRF, RFC 6749 §10.12); the callback checks and clears exactly
 * its own; a browser keeps a few at most.
 */
import request from 'supertest';
import { followIdp, loginAs } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';
import {
  callbackPathFor,
  cookiesNamed,
  issuedCookie,
  setCookies,
  parseSetCookie,
  startLogin,
  type ParsedCookie,
} from '../support/security';

const LOGIN_FAILED = { error: 'login_failed', message: 'The login could not be completed. Start again at /auth/login.' };
const TX_NAME = /^gatehouse-tx-[A-Za-z0-9_-]{16}$/;

/** The login-transaction cookies a response sets (non-empty) or clears (empty value). */
const txCookies = (res: { headers: Record<string, unknown> }, prefix = 'gatehouse-tx-'): ParsedCookie[] =>
  setCookies(res as never)
    .map(parseSetCookie)
    .filter((c) => c.name.startsWith(prefix));
const issuedTx = (res: { headers: Record<string, unknown> }) => {
  const set = txCookies(res).filter((c) => c.value !== '');
  if (set.length !== 1) throw new Error(`expected one tx cookie, got ${JSON.stringify(res.headers['set-cookie'])}`);
  return set[0]!;
};

describe('security: login-transaction cookies', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  const sub = async (agent: ReturnType<Stack['gw']['agent']>) =>
    ((await agent.get('/auth/session').set(SPA).expect(200)).body as { user: { sub: string } }).user.sub;

  it('a tx cookie value planted in the browser never becomes a binding: the victim following the attacker’s callback gets 400 and keeps their own session', async () => {
    const planted = 'P'.repeat(43); // well-formed: 43 base64url characters, as a binding is
    // The attacker starts a login from a browser carrying the planted value under every tx cookie name.
    const attacker = s.gw.agent();
    attacker.jar.setCookie(`gatehouse-tx=${planted}; Path=/`, '127.0.0.1', '/');
    attacker.jar.setCookie(`gatehouse-tx-AAAAAAAAAAAAAAAA=${planted}; Path=/`, '127.0.0.1', '/');
    const l = await startLogin(attacker);
    const issued = setCookies(l.start)
      .map(parseSetCookie)
      .filter((c) => c.name.startsWith('gatehouse-tx') && c.value !== '');
    expect(issued).toHaveLength(1);
    const attackerCallback = await callbackPathFor(s.idp, l, 'mallory');

    // The victim is logged in; the attacker plants the same value in the victim's browser under the name the
    // gateway gave the attacker's login (and the old fixed name), then hands over the callback URL.
    const victim = s.gw.agent();
    await loginAs(victim, s.idp, 'victim');
    const before = (await victim.get('/auth/session').set(SPA).expect(200)).body as unknown;
    for (const name of new Set(['gatehouse-tx', issued[0]!.name])) victim.jar.setCookie(`${name}=${planted}; Path=/`, '127.0.0.1', '/');
    const grants = s.idp.grants.authorization_code;
    const res = await victim.get(attackerCallback).redirects(0);
    expect(res.status).toBe(400);
    expect(res.body).toEqual(LOGIN_FAILED);
    expect(cookiesNamed(res, 'gatehouse')).toHaveLength(0);
    expect(s.idp.grants.authorization_code).toBe(grants);
    expect((await victim.get('/auth/session').set(SPA).expect(200)).body).toEqual(before);
    expect(await sub(victim)).toBe('victim');
    expect(issued[0]!.value).not.toBe(planted); // the attacker's own login was bound to a value of the gateway's
  });

  it('each login sets a cookie of its own, gatehouse-tx-<id>: HttpOnly, Path=/, SameSite=Lax, Max-Age <= 600, a fresh value', async () => {
    const browser = s.gw.agent();
    const a = await startLogin(browser);
    const b = await startLogin(browser);
    const [ca, cb] = [issuedTx(a.start), issuedTx(b.start)];
    for (const c of [ca, cb]) {
      expect(c.name).toMatch(TX_NAME);
      expect(c.attrs.has('httponly')).toBe(true);
      expect(c.attrs.get('path')).toBe('/');
      expect(c.attrs.get('samesite')).toBe('Lax');
      expect(c.attrs.has('domain')).toBe(false);
      expect(Number(c.attrs.get('max-age'))).toBeGreaterThan(0);
      expect(Number(c.attrs.get('max-age'))).toBeLessThanOrEqual(600);
      expect(c.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
    expect(cb.name).not.toBe(ca.name);
    expect(cb.value).not.toBe(ca.value); // the second login did not reuse the first one's binding
    expect(txCookies(b.start).filter((c) => c.value === '')).toHaveLength(0); // nothing cleared below the cap
  });

  it('two tabs starting their logins at the same moment both succeed, and each callback clears only its own cookie', async () => {
    const browser = s.gw.agent();
    const [a, b] = await Promise.all([
      startLogin(browser, '/auth/login?returnTo=%2Ftab-a'),
      startLogin(browser, '/auth/login?returnTo=%2Ftab-b'),
    ]);
    const [nameA, nameB] = [issuedTx(a.start).name, issuedTx(b.start).name];
    const [pathA, pathB] = await Promise.all([callbackPathFor(s.idp, a, 'two-tabs'), callbackPathFor(s.idp, b, 'two-tabs')]);
    const ra = await browser.get(pathA).redirects(0);
    expect([ra.status, ra.headers.location]).toEqual([302, '/tab-a']);
    const cleared = txCookies(ra);
    expect(cleared.map((c) => [c.name, c.value])).toEqual([[nameA, '']]);
    expect(cleared[0]!.attrs.get('max-age')).toBe('0');
    expect(cleared[0]!.attrs.get('path')).toBe('/');
    expect(cleared[0]!.attrs.has('httponly')).toBe(true);
    expect(cleared[0]!.attrs.get('samesite')).toBe('Lax');
    const rb = await browser.get(pathB).redirects(0);
    expect([rb.status, rb.headers.location]).toEqual([302, '/tab-b']);
    expect(txCookies(rb).map((c) => [c.name, c.value])).toEqual([[nameB, '']]);
    expect(await sub(browser)).toBe('two-tabs');
    expect(browser.jar.getCookies({ domain: '127.0.0.1', path: '/', secure: false, script: false }).map((c) => c.name)).toEqual([
      'gatehouse',
    ]);
  });

  it('a failed callback clears its transaction’s cookie too: the transaction is used up', async () => {
    const browser = s.gw.agent();
    const l = await startLogin(browser);
    const name = issuedTx(l.start).name;
    const path = await callbackPathFor(s.idp, l, 'failed-callback');
    const res = await browser.get(path.replace(/iss=[^&]*/, 'iss=' + encodeURIComponent('https://evil.example'))).redirects(0);
    expect(res.status).toBe(400);
    expect(txCookies(res).map((c) => [c.name, c.value])).toEqual([[name, '']]);
  });

  it('a browser keeps at most four login cookies: a fifth login clears the oldest with the same attributes, whose callback then fails', async () => {
    const browser = s.gw.agent();
    const logins = [];
    for (let i = 0; i < 5; i++) logins.push(await startLogin(browser, `/auth/login?returnTo=%2Fn${i}`));
    const names = logins.map((l) => issuedTx(l.start).name);
    for (const l of logins.slice(0, 4)) expect(txCookies(l.start).filter((c) => c.value === '')).toHaveLength(0);
    const cleared = txCookies(logins[4]!.start).filter((c) => c.value === '');
    expect(cleared.map((c) => c.name)).toEqual([names[0]]);
    const c = cleared[0]!;
    expect([c.attrs.get('max-age'), c.attrs.get('path'), c.attrs.has('httponly'), c.attrs.get('samesite'), c.attrs.has('domain')]).toEqual([
      '0',
      '/',
      true,
      'Lax',
      false,
    ]);
    const jar = browser.jar.getCookies({ domain: '127.0.0.1', path: '/', secure: false, script: false }).map((k) => k.name);
    expect(jar.sort()).toEqual(names.slice(1).sort());

    const oldest = await browser.get(await callbackPathFor(s.idp, logins[0]!, 'five-logins')).redirects(0);
    expect(oldest.status).toBe(400);
    const newest = await browser.get(await callbackPathFor(s.idp, logins[4]!, 'five-logins')).redirects(0);
    expect([newest.status, newest.headers.location]).toEqual([302, '/n4']);
  });

  it('planted tx cookies count towards the cap and are the first to go', async () => {
    const browser = s.gw.agent();
    for (const id of ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb', 'cccccccccccccccc', 'dddddddddddddddd', 'eeeeeeeeeeeeeeee']) {
      browser.jar.setCookie(`gatehouse-tx-${id}=${'P'.repeat(43)}; Path=/`, '127.0.0.1', '/');
    }
    const l = await startLogin(browser);
    expect(
      txCookies(l.start)
        .filter((c) => c.value === '')
        .map((c) => c.name),
    ).toEqual(['gatehouse-tx-aaaaaaaaaaaaaaaa', 'gatehouse-tx-bbbbbbbbbbbbbbbb']);
    const cb = await browser.get(await callbackPathFor(s.idp, l, 'planted-many')).redirects(0);
    expect(cb.status).toBe(302);
  });
});

describe('security: login-transaction cookies over https (__Host-)', () => {
  const PUBLIC = 'https://app.example';
  const HTTPS = { 'X-Forwarded-Proto': 'https' } as const;
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ gateway: { publicUrl: PUBLIC, trustProxy: 1 } });
    await s.idp.allowGateway(PUBLIC);
  });
  afterAll(() => s.close());

  it('each login’s cookie is __Host-gatehouse-tx-<id> with Secure, and the callback clears it with the same attributes', async () => {
    const l = await startLogin(request(s.gw.server), '/auth/login?returnTo=%2Fapp', HTTPS);
    const tx = txCookies(l.start, '__Host-gatehouse-tx-').filter((c) => c.value !== '');
    expect(tx).toHaveLength(1);
    expect(tx[0]!.name).toMatch(/^__Host-gatehouse-tx-[A-Za-z0-9_-]{16}$/);
    expect([tx[0]!.attrs.has('secure'), tx[0]!.attrs.get('path'), tx[0]!.attrs.has('domain'), tx[0]!.attrs.get('samesite')]).toEqual([
      true,
      '/',
      false,
      'Lax',
    ]);
    expect(txCookies(l.start)).toHaveLength(0); // no cookie without the prefix
    const cbUrl = new URL(await followIdp(s.idp, l.authorizationUrl.href, 'https-tx'));
    const cb = await request(s.gw.server)
      .get(cbUrl.pathname + cbUrl.search)
      .set(HTTPS)
      .set('Cookie', `${tx[0]!.name}=${tx[0]!.value}`)
      .redirects(0);
    expect([cb.status, cb.headers.location]).toEqual([302, '/app']);
    issuedCookie(cb, '__Host-Http-gatehouse');
    const cleared = txCookies(cb, '__Host-gatehouse-tx-');
    expect(cleared.map((c) => [c.name, c.value])).toEqual([[tx[0]!.name, '']]);
    expect([cleared[0]!.attrs.has('secure'), cleared[0]!.attrs.get('path'), cleared[0]!.attrs.get('max-age')]).toEqual([true, '/', '0']);
  });
});
