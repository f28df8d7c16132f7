/**
 * Login and callback against the real IdP: the authorization request (OIDC Core §3.1.2.1, PKCE per RFC 7636),
 * the login-transaction cookie, the callback's failure modes and the headers of every /auth/* response.
 */
import { OPEN_REDIRECT_PAYLOADS } from '../support/payloads';
import request from 'supertest';
import { followIdp, loginAs } from '../support/login';
import { SESSION_SECRET, SPA, startStack, type Stack } from '../support/stack';
import {
  b64urlSha256,
  callbackPathFor,
  cookiesNamed,
  forgedCookieValue,
  issuedCookie,
  leaks,
  parseSetCookie,
  recordResponses,
  scannable,
  sessionIdOf,
  setCookies,
  settle,
  signedCookieValue,
  startLogin,
  tokenForms,
  type Recorded,
} from '../support/security';

const LOGIN_FAILED = { error: 'login_failed', message: 'The login could not be completed. Start again at /auth/login.' };
const B64URL = /^[A-Za-z0-9_-]+$/;

/** The name of the login-transaction cookie (one per login: gatehouse-tx-<id>) that a /auth/login response sets. */
const txCookieName = (res: request.Response) =>
  setCookies(res)
    .map(parseSetCookie)
    .find((c) => c.name.startsWith('gatehouse-tx-') && c.value !== '')!.name;

describe('security: login and callback', () => {
  let s: Stack;
  let recorded: Recorded[];
  let authorizationEndpoint: string;
  let redirectUri: string;

  beforeAll(async () => {
    // The authorization request's parameters are checked where a browser sees them: not pushed (par: off).
    // The pushed ones are checked in par.test.ts.
    s = await startStack({ gateway: { par: 'off' } });
    recorded = recordResponses(s.gw.server);
    const meta = await request(s.idp.issuer).get('/.well-known/openid-configuration').expect(200);
    authorizationEndpoint = String((meta.body as { authorization_endpoint: string }).authorization_endpoint);
    redirectUri = `${s.gw.url}/auth/callback`;
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);
  const sessionCookies = (res: request.Response) => cookiesNamed(res, 'gatehouse').filter((c) => c.value !== '');

  it('redirects to the authorization endpoint with the code flow and a PKCE S256 challenge', async () => {
    const { start, authorizationUrl: url } = await startLogin(gw());
    expect(start.status).toBe(302);
    expect(url.origin + url.pathname).toBe(authorizationEndpoint);
    const p = url.searchParams;
    expect(p.getAll('response_type')).toEqual(['code']);
    expect(p.get('scope')!.split(' ')).toContain('openid');
    expect(p.getAll('client_id')).toEqual([s.idp.clientId]);
    expect(p.getAll('redirect_uri')).toEqual([redirectUri]);
    expect(p.has('response_mode')).toBe(false);
    expect(p.getAll('code_challenge_method')).toEqual(['S256']);
    expect(p.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('state and nonce carry at least 128 bits and are fresh and distinct over 50 logins', async () => {
    const states = new Set<string>();
    const nonces = new Set<string>();
    const challenges = new Set<string>();
    const agent = s.gw.agent(); // half the logins from one browser (tx cookie reused), half from new ones
    for (let i = 0; i < 50; i++) {
      const l = await startLogin(i % 2 ? agent : gw());
      for (const v of [l.state, l.nonce]) {
        expect(v).toMatch(B64URL);
        expect(Buffer.from(v, 'base64url').length).toBeGreaterThanOrEqual(16);
      }
      expect(l.state).not.toBe(l.nonce);
      expect(l.challenge).not.toBe(l.state);
      expect(l.challenge).not.toBe(l.nonce);
      states.add(l.state);
      nonces.add(l.nonce);
      challenges.add(l.challenge);
    }
    expect(states.size).toBe(50);
    expect(nonces.size).toBe(50);
    expect(challenges.size).toBe(50);
    for (const st of states) expect(nonces.has(st)).toBe(false);
  });

  it('ignores protocol parameters sent by the caller', async () => {
    const q = new URLSearchParams({
      redirect_uri: 'https://evil.example/cb',
      response_type: 'token',
      response_mode: 'fragment',
      scope: 'admin',
      client_id: 'x',
      code_challenge: 'AAA',
      code_challenge_method: 'plain',
      state: 'attacker-state',
      nonce: 'attacker-nonce',
      acr_values: 'attacker',
    });
    const { authorizationUrl: url } = await startLogin(gw(), `/auth/login?${q.toString()}`);
    const p = url.searchParams;
    expect(url.origin + url.pathname).toBe(authorizationEndpoint);
    for (const name of new Set(p.keys())) expect(p.getAll(name)).toHaveLength(1);
    expect(p.get('redirect_uri')).toBe(redirectUri);
    expect(p.get('response_type')).toBe('code');
    expect(p.get('client_id')).toBe(s.idp.clientId);
    expect(p.get('scope')!.split(' ')).not.toContain('admin');
    expect(p.get('code_challenge_method')).toBe('S256');
    expect(p.get('code_challenge')).not.toBe('AAA');
    expect(p.get('state')).not.toBe('attacker-state');
    expect(p.get('nonce')).not.toBe('attacker-nonce');
    expect(p.has('response_mode')).toBe(false);
    expect(p.has('acr_values')).toBe(false);
    expect(p.has('prompt')).toBe(false); // only when the SPA asks for one of three (silent-login.test.ts)
  });

  it('the login’s gatehouse-tx-<id> cookie is HttpOnly, Path=/, SameSite=Lax, Max-Age <= 600, and holds no state, nonce or verifier', async () => {
    const l = await startLogin(gw());
    const tx = issuedCookie(l.start, txCookieName(l.start));
    expect(tx.attrs.has('httponly')).toBe(true);
    expect(tx.attrs.get('path')).toBe('/');
    expect(tx.attrs.get('samesite')).toBe('Lax');
    const maxAge = Number(tx.attrs.get('max-age'));
    expect(maxAge).toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(600);
    expect(tx.attrs.has('domain')).toBe(false);
    expect(tx.value).not.toContain(l.state);
    expect(tx.value).not.toContain(l.nonce);
    expect(tx.value).not.toContain(l.challenge);
    // not the PKCE verifier either: its S256 hash is not the challenge
    expect(b64urlSha256(tx.value)).not.toBe(l.challenge);
    expect(b64urlSha256(decodeURIComponent(tx.value))).not.toBe(l.challenge);
  });

  it('the session cookie is HttpOnly, Path=/, SameSite=Strict, session-only, no Domain, a signed 256-bit id under 200 bytes', async () => {
    const cb = await loginAs(s.gw.agent(), s.idp, 'cookie-attrs');
    expect(cb.status).toBe(302);
    const c = issuedCookie(cb, 'gatehouse');
    expect(c.attrs.has('httponly')).toBe(true);
    expect(c.attrs.get('path')).toBe('/');
    expect(c.attrs.get('samesite')).toBe('Strict');
    expect(c.attrs.has('domain')).toBe(false);
    expect(c.attrs.has('max-age')).toBe(false);
    expect(c.attrs.has('expires')).toBe(false);
    expect(c.attrs.has('secure')).toBe(false); // http:// development URL
    expect(`${c.name}=${c.value}`.length).toBeLessThan(200);
    const id = sessionIdOf(c.value);
    expect(id).toMatch(/^[A-Za-z0-9_-]{43,}$/);
    expect(id.startsWith('eyJ')).toBe(false);
  });

  it('the gateway authenticates itself on every token request', () => {
    expect(s.idp.tokenRequests.length).toBeGreaterThan(0);
    for (const t of s.idp.tokenRequests) expect(t.clientAuth).toBe('client_secret_basic');
  });

  it('a session cookie planted before login is never adopted', async () => {
    const planted = signedCookieValue('planted-id-0123456789abcdefghijklmnopqrstuvw', SESSION_SECRET);
    const agent = s.gw.agent();
    agent.jar.setCookie(`gatehouse=${planted}; Path=/`, '127.0.0.1', '/');
    const cb = await loginAs(agent, s.idp, 'fixation');
    expect(cb.status).toBe(302);
    expect(issuedCookie(cb, 'gatehouse').value).not.toBe(planted);
    await gw().get('/auth/session').set(SPA).set('Cookie', `gatehouse=${planted}`).expect(401);
  });

  it('two tabs of one browser logging in at once both succeed', async () => {
    const browser = s.gw.agent();
    const a = await startLogin(browser, '/auth/login?returnTo=%2Ftab-a');
    const b = await startLogin(browser, '/auth/login?returnTo=%2Ftab-b');
    expect(a.state).not.toBe(b.state);
    const [cbA, cbB] = await Promise.all([callbackPathFor(s.idp, a, 'tabs'), callbackPathFor(s.idp, b, 'tabs')]);
    const ra = await browser.get(cbA).redirects(0);
    const rb = await browser.get(cbB).redirects(0);
    expect([ra.status, ra.headers.location]).toEqual([302, '/tab-a']);
    expect([rb.status, rb.headers.location]).toEqual([302, '/tab-b']);
    expect(sessionCookies(ra)).toHaveLength(1);
    expect(sessionCookies(rb)).toHaveLength(1);
    const me = await browser.get('/auth/session').set(SPA).expect(200);
    expect((me.body as { user: { sub: string } }).user.sub).toBe('tabs');
  });

  it('a replayed callback answers 400 login_failed, with no second token request and no new session', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'replay');
    expect(cb.status).toBe(302);
    const codeGrants = s.idp.grants.authorization_code;
    const sessionKeys = async () => (await s.redis!.keys(`${s.prefix}s:*`)).sort();
    const before = await sessionKeys();
    const url = new URL(cb.idp.callbackUrl);
    const replay = await browser.get(url.pathname + url.search).redirects(0);
    expect(replay.status).toBe(400);
    expect(replay.body).toEqual(LOGIN_FAILED);
    expect(sessionCookies(replay)).toHaveLength(0);
    expect(replay.headers.location).toBeUndefined();
    expect(s.idp.grants.authorization_code).toBe(codeGrants);
    // from another browser too
    const other = await gw()
      .get(url.pathname + url.search)
      .redirects(0);
    expect(other.status).toBe(400);
    expect(s.idp.grants.authorization_code).toBe(codeGrants);
    expect(await sessionKeys()).toEqual(before);
    await browser.get('/auth/session').set(SPA).expect(200); // the session of the first callback is untouched
  });

  describe('callbacks with bad state, parameters or cookies answer 400 and never reach the token endpoint', () => {
    type Variant = (ctx: {
      browser: ReturnType<Stack['gw']['agent']>;
      path: string;
      state: string;
      tx: string;
    }) => Promise<request.Response>;
    const variants: Array<[string, Variant]> = [
      ['no state', ({ browser, path }) => browser.get(path.replace(/([?&])state=[^&]*&?/, '$1')).redirects(0)],
      ['a wrong state', ({ browser, path }) => browser.get(path.replace(/state=[^&]*/, 'state=' + 'A'.repeat(43))).redirects(0)],
      [
        "another browser's state (foreign tx cookie)",
        async ({ path }) => {
          const other = s.gw.agent();
          await startLogin(other); // the other browser has a tx cookie of its own
          return other.get(path).redirects(0);
        },
      ],
      ['no tx cookie', ({ path }) => request(s.gw.server).get(path).redirects(0)],
      ['a duplicate state', ({ browser, path, state }) => browser.get(`${path}&state=${state}`).redirects(0)],
      ['a duplicate code', ({ browser, path }) => browser.get(`${path}&code=second-code`).redirects(0)],
      [
        'a tx cookie with a made-up value',
        ({ path, tx }) =>
          request(s.gw.server)
            .get(path)
            .set('Cookie', `${tx}=${'B'.repeat(43)}`)
            .redirects(0),
      ],
      [
        'an iss other than the issuer',
        ({ browser, path }) => browser.get(path.replace(/iss=[^&]*/, 'iss=' + encodeURIComponent('https://evil.example'))).redirects(0),
      ],
      ['no iss although the IdP advertises it', ({ browser, path }) => browser.get(path.replace(/&?iss=[^&]*/, '')).redirects(0)],
      [
        'two tx cookies',
        ({ path, tx }) =>
          request(s.gw.server)
            .get(path)
            .set('Cookie', `${tx}=${'B'.repeat(43)}; ${tx}=${'C'.repeat(43)}`)
            .redirects(0),
      ],
    ];

    it.each(variants)('%s → 400 login_failed, no session cookie, no token request', async (_name, variant) => {
      const browser = s.gw.agent();
      const l = await startLogin(browser);
      const path = await callbackPathFor(s.idp, l, 'bad-callback');
      const codeGrants = s.idp.grants.authorization_code;
      const res = await variant({ browser, path, state: l.state, tx: txCookieName(l.start) });
      expect(res.status).toBe(400);
      expect(res.body).toEqual(LOGIN_FAILED);
      expect(sessionCookies(res)).toHaveLength(0);
      expect(res.headers.location).toBeUndefined();
      expect(s.idp.grants.authorization_code).toBe(codeGrants);
    });
  });

  it("an attacker's code injected with the victim's state fails PKCE at the IdP → 400, no session", async () => {
    const attacker = s.gw.agent();
    const attackerLogin = await startLogin(attacker);
    const attackerCode = new URL(await callbackPathFor(s.idp, attackerLogin, 'attacker'), s.gw.url).searchParams.get('code')!;
    const victim = s.gw.agent();
    const victimLogin = await startLogin(victim);
    const victimCb = new URL(await callbackPathFor(s.idp, victimLogin, 'victim'), s.gw.url);
    victimCb.searchParams.set('code', attackerCode);
    const errorsBefore = s.idp.grantErrors.length;
    const res = await victim.get(victimCb.pathname + victimCb.search).redirects(0);
    expect(res.status).toBe(400);
    expect(res.body).toEqual(LOGIN_FAILED);
    expect(sessionCookies(res)).toHaveLength(0);
    expect(s.idp.grantErrors.slice(errorsBefore)).toEqual([
      expect.objectContaining({ grantType: 'authorization_code', error: 'invalid_grant' }),
    ]);
    await victim.get('/auth/session').set(SPA).expect(401);
  });

  it('logging in as another user in the same browser ends the previous session', async () => {
    const browser = s.gw.agent();
    const first = issuedCookie(await loginAs(browser, s.idp, 'first-user'), 'gatehouse').value;
    const second = issuedCookie(await loginAs(browser, s.idp, 'second-user'), 'gatehouse').value;
    expect(second).not.toBe(first);
    await gw().get('/auth/session').set(SPA).set('Cookie', `gatehouse=${first}`).expect(401);
    const me = await gw().get('/auth/session').set(SPA).set('Cookie', `gatehouse=${second}`).expect(200);
    expect((me.body as { user: { sub: string } }).user.sub).toBe('second-user');
  });

  it('an IdP error response with HTML in error_description fails closed and reflects nothing', async () => {
    const browser = s.gw.agent();
    const l = await startLogin(browser);
    const codeGrants = s.idp.grants.authorization_code;
    const q = new URLSearchParams({
      error: 'access_denied',
      error_description: '<script>alert(1)</script>',
      state: l.state,
      iss: s.idp.issuer,
    });
    const res = await browser.get(`/auth/callback?${q.toString()}`).redirects(0);
    expect(res.status).toBe(400);
    expect(res.body).toEqual(LOGIN_FAILED);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    for (const bad of ['<script>', 'alert', 'access_denied', '%3Cscript']) {
      expect(res.text).not.toContain(bad);
      expect(JSON.stringify(res.headers)).not.toContain(bad);
    }
    expect(sessionCookies(res)).toHaveLength(0);
    expect(s.idp.grants.authorization_code).toBe(codeGrants);
  });

  describe('a returnTo payload never leads off-origin after a full login', () => {
    const payloads = OPEN_REDIRECT_PAYLOADS;

    it.each(payloads.map((p) => [p.length > 64 ? `10 KiB path (${p.length} chars)` : JSON.stringify(p), p]))(
      '%s',
      async (_label, payload) => {
        const cb = await loginAs(s.gw.agent(), s.idp, 'redirects', payload);
        expect(cb.status).toBe(302);
        const loc = String(cb.headers.location);
        expect(loc).not.toMatch(/[\r\n\t\\]/);
        expect(loc.startsWith('/')).toBe(true);
        expect(loc.startsWith('//')).toBe(false);
        expect(new URL(loc, s.gw.url).origin).toBe(s.gw.url);
        expect(decodeURIComponent(loc)).not.toContain('evil.example');
        if (payload.includes('evil.example') || !payload.startsWith('/')) expect(loc).toBe('/');
        // no header smuggled in through the payload
        expect(cookiesNamed(cb, 'a')).toHaveLength(0);
      },
    );

    it('two returnTo parameters (one off-origin) → /', async () => {
      const browser = s.gw.agent();
      const l = await startLogin(browser, '/auth/login?returnTo=%2Fok&returnTo=%2F%2Fevil.example');
      const cb = await browser.get(await callbackPathFor(s.idp, l, 'redirects')).redirects(0);
      expect(cb.status).toBe(302);
      expect(['/', '/ok']).toContain(cb.headers.location);
    });

    it('a plain same-origin path with query and hash is kept', async () => {
      const cb = await loginAs(s.gw.agent(), s.idp, 'redirects', '/reports/2026?tab=a%20b#top');
      expect(cb.headers.location).toBe('/reports/2026?tab=a%20b#top');
    });
  });

  it('Host and X-Forwarded-Host never change redirect_uri or the code exchange', async () => {
    const browser = s.gw.agent();
    const spoof = { Host: 'evil.example', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https' };
    const errorsBefore = s.idp.grantErrors.length;
    const start = await browser.get('/auth/login?returnTo=%2Fhome').set(spoof).redirects(0);
    expect(start.status).toBe(302);
    const url = new URL(String(start.headers.location));
    expect(url.searchParams.get('redirect_uri')).toBe(redirectUri);
    const cbUrl = new URL(await followIdp(s.idp, url.href, 'host-spoof'));
    expect(cbUrl.origin).toBe(s.gw.url);
    // the IdP refuses the code for any other redirect_uri, so a successful login proves the configured one was sent
    const cb = await browser
      .get(cbUrl.pathname + cbUrl.search)
      .set(spoof)
      .redirects(0);
    expect(cb.status).toBe(302);
    expect(cb.headers.location).toBe('/home');
    expect(s.idp.grantErrors.slice(errorsBefore)).toEqual([]);
  });

  it('a forged but well-formed cookie is not turned into a session by the callback either', async () => {
    const forged = forgedCookieValue();
    const browser = s.gw.agent();
    browser.jar.setCookie(`gatehouse=${forged}; Path=/`, '127.0.0.1', '/');
    const cb = await loginAs(browser, s.idp, 'forged-then-login');
    expect(cb.status).toBe(302);
    expect(issuedCookie(cb, 'gatehouse').value).not.toBe(forged);
  });

  it('every /auth/* response is no-store, the callback sends Referrer-Policy: no-referrer, and no response has X-Powered-By', async () => {
    await gw().get('/auth/session').set(SPA).expect(401);
    await gw().post('/auth/logout').set(SPA).expect(200);
    await gw().get('/auth/logout').expect(405);
    await gw().get('/auth/callback').expect(400);
    await gw().get('/auth/nope').expect(404);
    await settle();
    const auth = recorded.filter((r) => r.url.startsWith('/auth'));
    expect(auth.length).toBeGreaterThan(100);
    for (const r of auth)
      expect({ url: r.url.slice(0, 80), cacheControl: /\r\ncache-control: no-store\r\n/i.test(r.head + '\r\n') }).toEqual({
        url: r.url.slice(0, 80),
        cacheControl: true,
      });
    const callbacks = auth.filter((r) => r.url.startsWith('/auth/callback'));
    expect(callbacks.some((r) => r.status === 302)).toBe(true);
    for (const r of callbacks) expect(r.head).toMatch(/\r\nreferrer-policy: no-referrer\r\n/i);
    for (const r of recorded) expect(r.head).not.toMatch(/x-powered-by/i);
  });

  it('no token the IdP issued appears in any response of this file', async () => {
    await settle();
    const tokens = tokenForms(s.idp.tokensIssued());
    expect(tokens.length).toBeGreaterThan(0);
    const found = recorded.flatMap((r) => leaks(scannable(r, s.idp.issuer), tokens).map((l) => `${r.url.slice(0, 60)}: ${l}`));
    expect(found).toEqual([]);
  });
});
