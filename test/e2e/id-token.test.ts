/**
 * The callback's code exchange and ID-token validation (OIDC Core §3.1.3.7) and the checks on what a refresh
 * returns (OIDC Core §12.2), against a SCRIPTED fake IdP
 * (test/support/fakeIdp.ts): these are the answers a real IdP never gives.
 *
 * Every test drives a real gateway (createGatehouse) on a real port, with real Redis and a recording upstream.
 * The fake IdP has no authorization endpoint: a test reads state/nonce/code_challenge from the gateway's 302
 * to the IdP and builds the callback URL itself, on the same supertest agent (which holds the tx cookie).
 *
 * Access-token expiry is reached by moving the gateway's clock (GatehouseDeps.now), never by timing asserts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { Redis } from 'ioredis';
import { createGatehouse, createLogger, type Gatehouse } from '../../src';
import { startFakeIdp, type FakeIdp, type TokenResponseOptions } from '../support/fakeIdp';
import { closeServer, reserveServer, uniquePrefix, type Agent, type ReservedServer, type Response } from '../support/login';
import { startUpstream, type TestUpstream } from '../support/upstream';

const SESSION_SECRET = 'id-token-e2e-session-secret-0123456789abcdef';
const SPA = { 'X-CSRF': '1' } as const;
/** the access-token lifetime the fake IdP announces in these tests, and a clock step past it */
const AT_TTL_S = 60;
const PAST_EXPIRY_MS = (AT_TTL_S + 1) * 1000;

function redisUrl(): string {
  const url = process.env.REDIS_URL ?? process.env.GATEHOUSE_REDIS_URL;
  if (!url) throw new Error('REDIS_URL is not set: run the tests through jest (globalSetup starts a redis-server)');
  return url;
}

// ---------- one gateway in front of one fake IdP ----------

interface Gateway {
  server: ReservedServer;
  gatehouse: Gatehouse;
  url: string;
  prefix: string;
  logs: string[];
  /** every gateway response these tests received (status, headers, body), for the "nothing leaks" checks */
  transcript: string[];
  /** moves the gateway's clock forward */
  advance(ms: number): void;
  /** the gateway's clock (epoch ms) */
  now(): number;
  agent(): Agent;
  close(): Promise<void>;
}

async function startGateway(idp: FakeIdp, upstream: TestUpstream): Promise<Gateway> {
  const server = await reserveServer();
  const prefix = uniquePrefix();
  const logs: string[] = [];
  let offset = 0;
  const gatehouse = await createGatehouse(
    {
      issuer: idp.issuer,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      publicUrl: server.url,
      upstream: upstream.url,
      sessionSecret: SESSION_SECRET,
      redisUrl: redisUrl(),
      keyPrefix: prefix,
      refreshSkewSeconds: 1,
      metricsPort: 0,
      logLevel: 'debug',
    },
    { logger: createLogger('debug', (line) => logs.push(line)), now: () => Date.now() + offset },
  );
  server.on('request', gatehouse.frontDoor);
  if (!(await gatehouse.ready())) throw new Error(`the gateway is not ready: ${logs.join('')}`);
  return {
    server,
    gatehouse,
    url: server.url,
    prefix,
    logs,
    transcript: [],
    advance: (ms) => void (offset += ms),
    now: () => Date.now() + offset,
    agent: () => request.agent(server),
    async close() {
      await closeServer(server);
      await gatehouse.close();
      const redis = new Redis(redisUrl());
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      await redis.quit();
    },
  };
}

function record(gw: Gateway, r: Response): Response {
  gw.transcript.push(`${r.status} ${JSON.stringify(r.headers)} ${typeof r.text === 'string' ? r.text : ''}`);
  return r;
}

function setCookies(r: Response): string[] {
  return ([] as string[]).concat((r.headers['set-cookie'] as string[] | string | undefined) ?? []);
}

/** `gatehouse=<value>` set by `r` (a session cookie with a value), or undefined */
function sessionCookie(r: Response): string | undefined {
  return setCookies(r)
    .find((c) => c.startsWith('gatehouse=') && !c.startsWith('gatehouse=;'))
    ?.split(';')[0];
}

const CLEARING = /^gatehouse=; .*Max-Age=0/;

// ---------- the login flow, by hand ----------

interface LoginStart {
  state: string;
  nonce: string;
  codeChallenge: string;
  redirectUri: string;
  authorizationUrl: URL;
}

/** GET /auth/login on `agent`: expects the 302 to the fake IdP and returns its protocol parameters. */
async function beginLogin(gw: Gateway, agent: Agent, idp: FakeIdp): Promise<LoginStart> {
  const r = record(gw, await agent.get('/auth/login').redirects(0));
  expect(r.status).toBe(302);
  const url = new URL(String(r.headers.location));
  expect(`${url.origin}${url.pathname}`).toBe(idp.authorizationEndpoint);
  const q = url.searchParams;
  const param = (name: string) => {
    const v = q.get(name);
    if (!v) throw new Error(`the authorization URL has no ${name}: ${url.href}`);
    return v;
  };
  expect(param('code_challenge_method')).toBe('S256');
  return {
    state: param('state'),
    nonce: param('nonce'),
    codeChallenge: param('code_challenge'),
    redirectUri: param('redirect_uri'),
    authorizationUrl: url,
  };
}

interface CallbackOptions {
  code?: string;
  state?: string;
  /** the RFC 9207 `iss` response parameter; omitted when undefined */
  iss?: string;
  headers?: Record<string, string>;
}

async function callback(gw: Gateway, agent: Agent, start: LoginStart, o: CallbackOptions = {}): Promise<Response> {
  const q = new URLSearchParams({ code: o.code ?? `code-${randomBytes(8).toString('hex')}`, state: o.state ?? start.state });
  if (o.iss !== undefined) q.set('iss', o.iss);
  return record(
    gw,
    await agent
      .get(`/auth/callback?${q.toString()}`)
      .set(o.headers ?? {})
      .redirects(0),
  );
}

/** A whole successful login of `sub` on a fresh agent; returns the agent, its session cookie and the tokens issued. */
async function login(gw: Gateway, idp: FakeIdp, opts: TokenResponseOptions = {}) {
  const agent = gw.agent();
  const start = await beginLogin(gw, agent, idp);
  // The IdP issues the ID token on the gateway's clock (which the tests move forward), as a real IdP shares our time.
  const iat = Math.floor(gw.now() / 1000);
  const body = await idp.tokenResponse({
    nonce: start.nonce,
    expiresIn: AT_TTL_S,
    ...opts,
    claims: { iat, exp: iat + 300, ...opts.claims },
  });
  idp.next(body);
  const cb = await callback(gw, agent, start);
  if (cb.status !== 302) throw new Error(`login answered ${cb.status} ${cb.text}\n${gw.logs.slice(-5).join('')}`);
  const cookie = sessionCookie(cb);
  if (!cookie) throw new Error(`login set no session cookie: ${JSON.stringify(setCookies(cb))}`);
  return { agent, cookie, accessToken: String(body.access_token), refreshToken: String(body.refresh_token), start };
}

async function api(gw: Gateway, agent: Agent, path = '/things'): Promise<Response> {
  return record(gw, await agent.get(`/api${path}`).set(SPA));
}

/** The same request with an explicit cookie (e.g. a cleared one replayed). */
async function apiWithCookie(gw: Gateway, cookie: string, path = '/things'): Promise<Response> {
  return record(gw, await request(gw.server).get(`/api${path}`).set(SPA).set('Cookie', cookie));
}

function upstreamSaw(upstream: TestUpstream, accessToken: string): boolean {
  return upstream.requests.some((r) => r.rawHeaders.some((h) => h.includes(accessToken)));
}

/** The login failed as every failed login does: 400 login_failed, no session cookie; the agent has no session afterwards. */
async function expectLoginRefused(gw: Gateway, agent: Agent, r: Response, upstream: TestUpstream, accessToken?: string): Promise<void> {
  expect(r.status).toBe(400);
  expect(r.body).toEqual({ error: 'login_failed', message: expect.any(String) as unknown });
  expect(sessionCookie(r)).toBeUndefined();
  const after = await api(gw, agent);
  expect({ status: after.status, error: (after.body as { error?: string }).error }).toEqual({ status: 401, error: 'unauthenticated' });
  const session = record(gw, await agent.get('/auth/session').set(SPA));
  expect(session.status).toBe(401);
  if (accessToken !== undefined) expect(upstreamSaw(upstream, accessToken)).toBe(false);
}

const sha256b64url = (s: string) => createHash('sha256').update(s).digest('base64url');

// =====================================================================================================

describe('login against a scripted IdP', () => {
  let idp: FakeIdp;
  let upstream: TestUpstream;
  let gw: Gateway;

  beforeAll(async () => {
    idp = await startFakeIdp();
    upstream = await startUpstream();
    gw = await startGateway(idp, upstream);
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await idp?.close();
  });
  afterEach(() => idp.clearQueue());

  it('logs in with a valid token response from the fake IdP (the control case): 302, session cookie, token upstream', async () => {
    const { agent, accessToken } = await login(gw, idp, { sub: 'control-alice' });
    const session = record(gw, await agent.get('/auth/session').set(SPA));
    expect(session.status).toBe(200);
    expect((session.body as { user: { sub: string } }).user.sub).toBe('control-alice');
    const r = await api(gw, agent);
    expect(r.status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${accessToken}`);
  });

  it('exchanges the code with grant_type, the PKCE verifier of the challenge and the configured redirect_uri, even when Host and X-Forwarded-Host are evil.example', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    expect(start.redirectUri).toBe(`${gw.url}/auth/callback`);
    idp.next(await idp.tokenResponse({ nonce: start.nonce }));
    const before = idp.tokenRequests.length;
    const cb = await callback(gw, agent, start, {
      code: 'code-r13',
      headers: { Host: 'evil.example', 'X-Forwarded-Host': 'evil.example' },
    });
    expect(cb.status).toBe(302);
    expect(String(cb.headers.location)).not.toContain('evil.example');
    expect(idp.tokenRequests.length - before).toBe(1);
    const tr = idp.tokenRequests.at(-1)!;
    expect(tr.grantType).toBe('authorization_code');
    expect(tr.code).toBe('code-r13');
    expect(tr.redirectUri).toBe(`${gw.url}/auth/callback`);
    expect(tr.codeVerifier).toMatch(/^[A-Za-z0-9._~-]{43,128}$/);
    expect(sha256b64url(tr.codeVerifier!)).toBe(start.codeChallenge);
    expect(tr.basic).toEqual({ clientId: idp.clientId, clientSecret: idp.clientSecret });
  });

  it('a callback with a wrong state answers 400 login_failed and sends no token request', async () => {
    const agent = gw.agent();
    await beginLogin(gw, agent, idp);
    const before = idp.tokenRequests.length;
    const r = record(gw, await agent.get(`/auth/callback?code=c-wrong-state&state=${randomBytes(32).toString('base64url')}`).redirects(0));
    await expectLoginRefused(gw, agent, r, upstream);
    expect(idp.tokenRequests.length).toBe(before);
  });

  it("a callback carrying another browser's state answers 400 login_failed and sends no token request", async () => {
    const victim = gw.agent();
    const attacker = gw.agent();
    const start = await beginLogin(gw, victim, idp);
    await beginLogin(gw, attacker, idp);
    const before = idp.tokenRequests.length;
    const r = await callback(gw, attacker, start);
    await expectLoginRefused(gw, attacker, r, upstream);
    expect(idp.tokenRequests.length).toBe(before);
  });

  it('a callback whose iss parameter names another issuer (mix-up) answers 400 and sends no token request', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    const before = idp.tokenRequests.length;
    const r = await callback(gw, agent, start, { iss: 'https://evil.example' });
    await expectLoginRefused(gw, agent, r, upstream);
    expect(idp.tokenRequests.length).toBe(before);
  });

  it('a code the IdP rejects at the exchange (invalid_grant, as a PKCE failure) answers 400 login_failed, no session, nothing reflected', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    idp.next(() => ({ status: 400, body: { error: 'invalid_grant', error_description: 'MARKER-pkce-9d2 PKCE verification failed' } }));
    const before = idp.tokenRequests.length;
    const r = await callback(gw, agent, start, { code: 'attacker-code' });
    expect(idp.tokenRequests.length - before).toBe(1);
    expect(idp.tokenRequests.at(-1)!.code).toBe('attacker-code');
    await expectLoginRefused(gw, agent, r, upstream);
    expect(r.text).not.toContain('MARKER-pkce-9d2');
  });

  // Every ID-token (OIDC Core §3.1.3.7) and token-response forgery, one per test. `make` builds the token response
  // for the nonce of this login; `accepts` notes what openid-client 6 does on its own (documentation only: the
  // assertion is always that the GATEWAY refuses).
  const OTHER_AUD = 'another-client';
  type Variant = [name: string, make: (idp: FakeIdp, nonce: string, at: string) => Promise<Record<string, unknown>>];
  const variants: Variant[] = [
    ['an ID token with a wrong nonce', (i, _n, at) => i.tokenResponse({ accessToken: at, nonce: 'not-the-nonce-that-was-sent' })],
    ['an ID token without a nonce', (i, _n, at) => i.tokenResponse({ accessToken: at })],
    [
      'an ID token from another issuer',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { iss: 'https://evil.example' } }),
    ],
    ['an ID token for another audience', (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { aud: OTHER_AUD } })],
    [
      'an ID token with an extra untrusted audience and no azp',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { aud: [i.clientId, OTHER_AUD] } }),
    ],
    [
      // openid-client accepts this one (an extra audience is allowed once azp names the client)
      'an ID token with an extra untrusted audience even when azp names the client',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { aud: [i.clientId, OTHER_AUD], azp: i.clientId } }),
    ],
    [
      // openid-client checks azp only when aud has several members: it accepts this one
      'an ID token whose azp names another client (single aud)',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { azp: OTHER_AUD } }),
    ],
    [
      'an ID token whose azp names another client (aud with two members)',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { aud: [i.clientId, OTHER_AUD], azp: OTHER_AUD } }),
    ],
    [
      'an expired ID token',
      (i, n, at) => {
        const now = Math.floor(Date.now() / 1000);
        return i.tokenResponse({ accessToken: at, nonce: n, claims: { iat: now - 7200, exp: now - 3600 } });
      },
    ],
    [
      // openid-client checks only iat's type on a token-endpoint ID token: it accepts this one
      'an ID token issued an hour in the future',
      (i, n, at) => {
        const now = Math.floor(Date.now() / 1000);
        return i.tokenResponse({ accessToken: at, nonce: n, claims: { iat: now + 3600, exp: now + 3900 } });
      },
    ],
    ['an ID token without sub', (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, claims: { sub: undefined } })],
    ['an unsigned ID token (alg none)', (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, key: 'none' })],
    [
      'an ID token signed HS256 with the client secret while RS256 is advertised',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, key: 'hs256-with-client-secret' }),
    ],
    [
      'an ID token signed by a key that is not in the JWKS, under the JWKS key id',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, key: 'other' }),
    ],
    [
      'an ID token signed by a key that is not in the JWKS, under an unknown key id',
      (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, key: 'other', header: { kid: 'unknown-kid' } }),
    ],
    ['a token response without an id_token', (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, idToken: null })],
    ['a token response with token_type "mac"', (i, n, at) => i.tokenResponse({ accessToken: at, nonce: n, tokenType: 'mac' })],
  ];

  it.each(variants)('%s fails the login: 400 login_failed, no session, the access token never goes upstream', async (_name, make) => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    const accessToken = `fake-at-forged-${randomBytes(12).toString('hex')}`;
    idp.next(await make(idp, start.nonce, accessToken));
    const before = idp.tokenRequests.length;
    const r = await callback(gw, agent, start);
    expect(idp.tokenRequests.length - before).toBe(1);
    await expectLoginRefused(gw, agent, r, upstream, accessToken);
  });

  it('every token request of these logins carried client_secret_basic authentication and nothing was left unscripted', () => {
    expect(idp.tokenRequests.length).toBeGreaterThan(0);
    for (const tr of idp.tokenRequests) {
      expect(tr.grantType).toBe('authorization_code');
      expect(tr.basic).toEqual({ clientId: idp.clientId, clientSecret: idp.clientSecret });
    }
    expect(idp.unscripted).toBe(0);
  });
});

// =====================================================================================================

describe('an IdP advertising authorization_response_iss_parameter_supported', () => {
  let idp: FakeIdp;
  let upstream: TestUpstream;
  let gw: Gateway;

  beforeAll(async () => {
    idp = await startFakeIdp({ issParameterSupported: true });
    upstream = await startUpstream();
    gw = await startGateway(idp, upstream);
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await idp?.close();
  });
  afterEach(() => idp.clearQueue());

  it('a callback without iss answers 400 login_failed and sends no token request', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    const r = await callback(gw, agent, start);
    await expectLoginRefused(gw, agent, r, upstream);
    expect(idp.tokenRequests).toHaveLength(0);
  });

  it('a callback whose iss names another issuer answers 400 login_failed and sends no token request', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    const r = await callback(gw, agent, start, { iss: 'https://evil.example' });
    await expectLoginRefused(gw, agent, r, upstream);
    expect(idp.tokenRequests).toHaveLength(0);
  });

  it('a callback whose iss is exactly the issuer logs in (the control case)', async () => {
    const agent = gw.agent();
    const start = await beginLogin(gw, agent, idp);
    idp.next(await idp.tokenResponse({ nonce: start.nonce }));
    const r = await callback(gw, agent, start, { iss: idp.issuer });
    expect(r.status).toBe(302);
    expect(sessionCookie(r)).toBeDefined();
    expect(idp.tokenRequests).toHaveLength(1);
  });
});

// =====================================================================================================

describe('what a refresh returns', () => {
  let idp: FakeIdp;
  let upstream: TestUpstream;
  let gw: Gateway;

  beforeAll(async () => {
    idp = await startFakeIdp();
    upstream = await startUpstream();
    gw = await startGateway(idp, upstream);
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await idp?.close();
  });
  afterEach(() => idp.clearQueue());

  const refreshes = () => idp.tokenRequests.filter((t) => t.grantType === 'refresh_token');

  /** The session ended as a refresh that cannot be trusted ends it: 401 session_expired with a clearing cookie, and the old cookie is dead. */
  async function expectSessionEnded(r: Response, agent: Agent, cookie: string): Promise<void> {
    expect({ status: r.status, error: (r.body as { error?: string }).error }).toEqual({ status: 401, error: 'session_expired' });
    expect(setCookies(r)).toEqual(expect.arrayContaining([expect.stringMatching(CLEARING)]));
    const next = await api(gw, agent);
    expect({ status: next.status, error: (next.body as { error?: string }).error }).toEqual({ status: 401, error: 'unauthenticated' });
    const replay = await apiWithCookie(gw, cookie);
    expect(replay.status).toBe(401);
    const session = record(gw, await request(gw.server).get('/auth/session').set(SPA).set('Cookie', cookie));
    expect(session.status).toBe(401);
  }

  /** A refresh failure that keeps the session: 503 token_refresh_unavailable now, and the next good refresh works with the same cookie and the same refresh token. */
  async function expectKeptAfter503(r: Response, agent: Agent, sub: string, refreshToken: string): Promise<void> {
    expect({ status: r.status, error: (r.body as { error?: string }).error }).toEqual({ status: 503, error: 'token_refresh_unavailable' });
    expect(r.headers['retry-after']).toBeDefined();
    expect(setCookies(r).filter((c) => CLEARING.test(c))).toEqual([]);
    const fresh = await idp.tokenResponse({ sub, expiresIn: AT_TTL_S });
    idp.next(fresh);
    const before = refreshes().length;
    // After a transient failure the session's refresh cools down for Retry-After (real time, in Redis).
    await sleep(1100);
    const ok = await api(gw, agent);
    expect(ok.status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${String(fresh.access_token)}`);
    expect(
      refreshes()
        .slice(before)
        .map((t) => t.refreshToken),
    ).toEqual([refreshToken]);
  }

  it('a refreshed ID token for another sub ends the session: 401 session_expired, cookie cleared, session gone', async () => {
    const { agent, cookie } = await login(gw, idp, { sub: 'r43-alice' });
    gw.advance(PAST_EXPIRY_MS);
    const next = await idp.tokenResponse({ sub: 'r43-mallory', expiresIn: AT_TTL_S });
    idp.next(next);
    const r = await api(gw, agent);
    expect(refreshes().at(-1)?.refreshToken).toBeDefined();
    await expectSessionEnded(r, agent, cookie);
    expect(upstreamSaw(upstream, String(next.access_token))).toBe(false);
  });

  it('a refreshed ID token from another iss ends the session: 401 session_expired, cookie cleared, session gone', async () => {
    const { agent, cookie } = await login(gw, idp, { sub: 'r43-bob' });
    gw.advance(PAST_EXPIRY_MS);
    const next = await idp.tokenResponse({ sub: 'r43-bob', expiresIn: AT_TTL_S, claims: { iss: 'https://other-issuer.example' } });
    idp.next(next);
    const r = await api(gw, agent);
    await expectSessionEnded(r, agent, cookie);
    expect(upstreamSaw(upstream, String(next.access_token))).toBe(false);
  });

  it('a refresh without an id_token, then one with the same sub, both keep the session and proxy the new token', async () => {
    const { agent } = await login(gw, idp, { sub: 'r43-carol' });
    gw.advance(PAST_EXPIRY_MS);
    const noIdToken = await idp.tokenResponse({ idToken: null, expiresIn: AT_TTL_S });
    idp.next(noIdToken);
    const r1 = await api(gw, agent);
    expect(r1.status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${String(noIdToken.access_token)}`);

    gw.advance(PAST_EXPIRY_MS);
    const sameSub = await idp.tokenResponse({ sub: 'r43-carol', expiresIn: AT_TTL_S });
    idp.next(sameSub);
    const r2 = await api(gw, agent);
    expect(r2.status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${String(sameSub.access_token)}`);
    const session = record(gw, await agent.get('/auth/session').set(SPA));
    expect((session.body as { user: { sub: string } }).user.sub).toBe('r43-carol');
  });

  it('when a refresh returns no refresh_token, the next refresh sends the original refresh token again', async () => {
    const { agent, refreshToken } = await login(gw, idp, { sub: 'r38-dave' });
    const before = refreshes().length;
    gw.advance(PAST_EXPIRY_MS);
    const first = await idp.tokenResponse({ refreshToken: null, idToken: null, expiresIn: AT_TTL_S });
    idp.next(first);
    expect((await api(gw, agent)).status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${String(first.access_token)}`);

    gw.advance(PAST_EXPIRY_MS);
    const second = await idp.tokenResponse({ idToken: null, expiresIn: AT_TTL_S });
    idp.next(second);
    expect((await api(gw, agent)).status).toBe(200);
    expect(upstream.last().headers.authorization).toBe(`Bearer ${String(second.access_token)}`);
    expect(
      refreshes()
        .slice(before)
        .map((t) => t.refreshToken),
    ).toEqual([refreshToken, refreshToken]);
  });

  it('a refresh response without an access_token keeps the session (503 token_refresh_unavailable), and the refresh token it rotated replaces the old one', async () => {
    const { agent } = await login(gw, idp, { sub: 'r16-erin' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next({ token_type: 'Bearer', expires_in: AT_TTL_S, refresh_token: 'fake-rt-rotated-by-a-broken-response' });
    const r = await api(gw, agent);
    // RFC 6749 §6: the IdP superseded the old refresh token when it issued this one, whatever else was wrong.
    await expectKeptAfter503(r, agent, 'r16-erin', 'fake-rt-rotated-by-a-broken-response');
  });

  it('a refresh whose new ID token fails validation (bad signature) keeps the session and the refresh token it rotated', async () => {
    const { agent } = await login(gw, idp, { sub: 'r38-sig' });
    gw.advance(PAST_EXPIRY_MS);
    const broken = await idp.tokenResponse({ sub: 'r38-sig', expiresIn: AT_TTL_S, refreshToken: 'fake-rt-rotated-with-a-forged-id-token' });
    broken.id_token = await idp.idToken({ sub: 'r38-sig', key: 'other' });
    idp.next(broken);
    const r = await api(gw, agent);
    await expectKeptAfter503(r, agent, 'r38-sig', 'fake-rt-rotated-with-a-forged-id-token');
  });

  it('a refresh answered 400 invalid_grant ends the session (401 session_expired) and its error_description reaches no response', async () => {
    const marker = 'MARKER-7f3';
    const { agent, cookie } = await login(gw, idp, { sub: 'grant-frank' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next(() => ({ status: 400, body: { error: 'invalid_grant', error_description: marker } }));
    const r = await api(gw, agent);
    await expectSessionEnded(r, agent, cookie);
    for (const line of gw.transcript) expect(line).not.toContain(marker);
  });

  it('a refresh answered 400 invalid_client keeps the session (503 token_refresh_unavailable)', async () => {
    const { agent, refreshToken } = await login(gw, idp, { sub: 'client-gina' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next(() => ({ status: 400, body: { error: 'invalid_client', error_description: 'MARKER-client-1b4' } }));
    const r = await api(gw, agent);
    await expectKeptAfter503(r, agent, 'client-gina', refreshToken);
    expect(r.text).not.toContain('MARKER-client-1b4');
  });

  it('a refresh answered 401 invalid_client with a Basic challenge keeps the session (503 token_refresh_unavailable)', async () => {
    const { agent, refreshToken } = await login(gw, idp, { sub: 'client-hank' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next(() => ({ status: 401, body: { error: 'invalid_client' }, headers: { 'www-authenticate': 'Basic realm="fake"' } }));
    const r = await api(gw, agent);
    await expectKeptAfter503(r, agent, 'client-hank', refreshToken);
  });

  it('a refresh answered 500 with a JSON invalid_grant body is not invalid_grant: 503, the session is kept', async () => {
    const { agent, refreshToken } = await login(gw, idp, { sub: 'five-ivy' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next(() => ({ status: 500, body: { error: 'invalid_grant' } }));
    const r = await api(gw, agent);
    await expectKeptAfter503(r, agent, 'five-ivy', refreshToken);
  });

  it('a refresh answered 200 with a body that is not JSON keeps the session (503 token_refresh_unavailable)', async () => {
    const { agent, refreshToken } = await login(gw, idp, { sub: 'html-jack' });
    gw.advance(PAST_EXPIRY_MS);
    idp.next(() => ({ status: 200, body: '<html>maintenance</html>', headers: { 'content-type': 'text/html' } }));
    const r = await api(gw, agent);
    await expectKeptAfter503(r, agent, 'html-jack', refreshToken);
  });

  it('every refresh request carried grant_type=refresh_token, client_secret_basic and nothing was left unscripted', () => {
    expect(refreshes().length).toBeGreaterThan(0);
    for (const tr of refreshes()) {
      expect(tr.basic).toEqual({ clientId: idp.clientId, clientSecret: idp.clientSecret });
      expect(tr.refreshToken).toMatch(/^fake-rt-/);
    }
    expect(idp.unscripted).toBe(0);
  });
});
