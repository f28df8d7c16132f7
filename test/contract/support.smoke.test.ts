/**
 * Proves the test support works, without the gateway: real oidc-provider (test/support/idp.ts), real Redis
 * (globalSetup / redisServer.ts), real upstream (upstream.ts), driven with openid-client 6 directly and through a
 * throwaway "mini gateway" for the login helpers.
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import * as oidc from 'openid-client';
import { Redis } from 'ioredis';
import { startTestIdp, type TestIdp } from '../support/idp';
import { startUpstream, type EchoResponse, type TestUpstream } from '../support/upstream';
import { startRedisServer, pingRedis } from '../support/redisServer';
import {
  closeServer,
  followIdp,
  idpAgent,
  idpLogout,
  loginAs,
  loginThroughForms,
  reserveServer,
  uniquePrefix,
  type Agent,
  type ReservedServer,
} from '../support/login';

const insecure = { execute: [oidc.allowInsecureRequests] };
const SCOPE = 'openid profile email offline_access';

async function discover(idp: TestIdp): Promise<oidc.Configuration> {
  return oidc.discovery(new URL(idp.issuer), idp.clientId, undefined, oidc.ClientSecretBasic(idp.clientSecret), insecure);
}

/** authorization URL + PKCE/state/nonce, as a gateway would build it */
async function authorizationRequest(config: oidc.Configuration, redirectUri: string) {
  const codeVerifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  return { url: url.href, codeVerifier, state, nonce };
}

async function codeFlow(idp: TestIdp, config: oidc.Configuration, redirectUri: string, sub: string) {
  const a = await authorizationRequest(config, redirectUri);
  const callbackUrl = await followIdp(idp, a.url, sub);
  return oidc.authorizationCodeGrant(config, new URL(callbackUrl), {
    pkceCodeVerifier: a.codeVerifier,
    expectedState: a.state,
    expectedNonce: a.nonce,
    idTokenExpected: true,
  });
}

/** the rejection of a refresh; an OAuth error body (4xx) gives a ResponseBodyError */
async function refreshFailure(config: oidc.Configuration, rt: string): Promise<unknown> {
  try {
    await oidc.refreshTokenGrant(config, rt);
  } catch (err) {
    return err;
  }
  throw new Error('refresh unexpectedly succeeded');
}

async function refreshError(config: oidc.Configuration, rt: string): Promise<oidc.ResponseBodyError> {
  const err = await refreshFailure(config, rt);
  if (err instanceof oidc.ResponseBodyError) return err;
  throw err;
}

/** a raw token-endpoint POST (client_secret_basic) to see the exact HTTP answer */
function rawRefresh(idp: TestIdp, rt: string) {
  return request(idp.issuer)
    .post('/token')
    .auth(encodeURIComponent(idp.clientId), encodeURIComponent(idp.clientSecret))
    .type('form')
    .send({ grant_type: 'refresh_token', refresh_token: rt });
}

describe('test IdP (oidc-provider) driven by openid-client', () => {
  let redirect: ReservedServer;
  let idp: TestIdp;
  let config: oidc.Configuration;
  let redirectUri: string;

  beforeAll(async () => {
    redirect = await reserveServer(); // never actually called: followIdp stops at the redirect
    redirect.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => res.end('ok'));
    redirectUri = `${redirect.url}/cb`;
    idp = await startTestIdp({ redirectUri, postLogoutRedirectUri: `${redirect.url}/`, accessTokenTtl: 2 });
    config = await discover(idp);
  });

  afterAll(async () => {
    await idp?.close();
    await closeServer(redirect);
  });

  beforeEach(() => {
    idp.failRefresh(null);
    idp.delay(0);
    idp.resetCounters();
  });

  it('serves its discovery document', async () => {
    const res = await request(idp.issuer).get('/.well-known/openid-configuration').expect(200);
    expect(res.body).toMatchObject({
      issuer: idp.issuer,
      token_endpoint: `${idp.issuer}/token`,
      revocation_endpoint: `${idp.issuer}/token/revocation`,
      end_session_endpoint: `${idp.issuer}/session/end`,
      backchannel_logout_supported: true,
      backchannel_logout_session_supported: true,
    });
    expect((res.body as { code_challenge_methods_supported: string[] }).code_challenge_methods_supported).toContain('S256');
    expect(config.serverMetadata().issuer).toBe(idp.issuer);
  });

  it('requires PKCE', async () => {
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: redirectUri, scope: SCOPE, state: 'x' });
    const back = new URL(await followIdp(idp, url.href, 'alice'));
    expect(back.searchParams.get('error')).toBe('invalid_request');
  });

  it('code flow, rotation, reuse detection revokes the whole grant; counters and tokensIssued match', async () => {
    const issuedBefore = idp.tokensIssued().length;
    const t0 = await codeFlow(idp, config, redirectUri, 'alice');
    expect(t0.refresh_token).toEqual(expect.any(String));
    expect(t0.expires_in).toBe(2);
    const claims = t0.claims()!;
    expect(claims).toMatchObject({ sub: 'alice', email: 'alice@example.test', email_verified: true, name: 'Test alice' });

    const info = await oidc.fetchUserInfo(config, t0.access_token, 'alice');
    expect(info).toMatchObject({ sub: 'alice', email: 'alice@example.test', name: 'Test alice' });

    const t1 = await oidc.refreshTokenGrant(config, t0.refresh_token!);
    const t2 = await oidc.refreshTokenGrant(config, t1.refresh_token!);
    expect(new Set([t0.refresh_token, t1.refresh_token, t2.refresh_token]).size).toBe(3);
    expect(t2.id_token).toEqual(expect.any(String));

    // reuse of a rotated RT: invalid_grant, and the grant is gone, so the newest RT is dead too
    const reuse = await refreshError(config, t0.refresh_token!);
    expect(reuse.error).toBe('invalid_grant');
    const after = await refreshError(config, t2.refresh_token!);
    expect(after.error).toBe('invalid_grant');

    expect(idp.grants).toMatchObject({ authorization_code: 1, refresh_token: 4 });
    expect(idp.refreshSucceeded).toBe(2);
    expect(idp.refreshFailed).toBe(2);
    expect(idp.reuseDetected).toBe(1);
    expect(idp.grantErrors).toEqual([
      { grantType: 'refresh_token', error: 'invalid_grant', detail: 'refresh token already used' },
      { grantType: 'refresh_token', error: 'invalid_grant', detail: 'refresh token not found' },
    ]);

    const issued = idp.tokensIssued().slice(issuedBefore);
    for (const t of [t0, t1, t2]) {
      expect(issued).toContain(t.access_token);
      expect(issued).toContain(t.refresh_token);
      expect(issued).toContain(t.id_token);
    }
    expect(issued).toHaveLength(9);
  });

  it('failRefresh(503) answers 503 without reaching oidc-provider; the RT still works afterwards', async () => {
    const t0 = await codeFlow(idp, config, redirectUri, 'bob');
    idp.failRefresh(503, { error: 'temporarily_unavailable' }, { headers: { 'Retry-After': '1' } });

    const raw = await rawRefresh(idp, t0.refresh_token!);
    expect(raw.status).toBe(503);
    expect(raw.body).toEqual({ error: 'temporarily_unavailable' });
    expect(raw.headers['retry-after']).toBe('1');

    // openid-client 6 only parses OAuth error bodies of 4xx answers: a 5xx is a ClientError whose cause is the Response
    const viaClient = await refreshFailure(config, t0.refresh_token!);
    expect(viaClient).toBeInstanceOf(oidc.ClientError);
    expect(viaClient).not.toBeInstanceOf(oidc.ResponseBodyError);
    expect((viaClient as oidc.ClientError).code).toBe('OAUTH_RESPONSE_IS_NOT_CONFORM');
    expect(((viaClient as oidc.ClientError).cause as Response).status).toBe(503);

    idp.failRefresh(null);
    const t1 = await oidc.refreshTokenGrant(config, t0.refresh_token!); // never reached the IdP: not rotated yet
    expect(t1.access_token).toEqual(expect.any(String));
    expect(idp.grants.refresh_token).toBe(3);
    expect(idp.refreshFailed).toBe(2);
    expect(idp.refreshSucceeded).toBe(1);
    expect(idp.reuseDetected).toBe(0);
    expect(idp.tokenRequests.map((r) => [r.grantType, r.status, r.injected])).toEqual([
      ['authorization_code', 200, false],
      ['refresh_token', 503, true],
      ['refresh_token', 503, true],
      ['refresh_token', 200, false],
    ]);
    expect(idp.tokenRequests.every((r) => r.clientAuth === 'client_secret_basic')).toBe(true);
    expect(idp.tokenRequests[3]!.refreshToken).toBe(t0.refresh_token);
  });

  it('failRefresh(400, invalid_grant, {times: 1}) fails exactly once', async () => {
    const t0 = await codeFlow(idp, config, redirectUri, 'bob');
    idp.failRefresh(400, { error: 'invalid_grant' }, { times: 1 });
    expect((await refreshError(config, t0.refresh_token!)).error).toBe('invalid_grant');
    await expect(oidc.refreshTokenGrant(config, t0.refresh_token!)).resolves.toHaveProperty('access_token');
    expect(idp.grantErrors).toEqual([]); // the injected failure never reached oidc-provider
  });

  it('revoke(sub) makes the next refresh a genuine invalid_grant; other users are untouched', async () => {
    const carol = await codeFlow(idp, config, redirectUri, 'carol');
    const carol2 = await codeFlow(idp, config, redirectUri, 'carol');
    const dave = await codeFlow(idp, config, redirectUri, 'dave');
    expect(await idp.revoke('carol')).toBeGreaterThanOrEqual(1);

    expect((await refreshError(config, carol.refresh_token!)).error).toBe('invalid_grant');
    expect((await refreshError(config, carol2.refresh_token!)).error).toBe('invalid_grant');
    expect(idp.grantErrors.every((e) => e.error === 'invalid_grant')).toBe(true);
    await expect(oidc.fetchUserInfo(config, carol.access_token, 'carol')).rejects.toThrow();
    await expect(oidc.refreshTokenGrant(config, dave.refresh_token!)).resolves.toHaveProperty('access_token');

    // the account can log in again afterwards (fresh grant)
    const again = await codeFlow(idp, config, redirectUri, 'carol');
    await expect(oidc.refreshTokenGrant(config, again.refresh_token!)).resolves.toHaveProperty('access_token');
  });

  it('counts revocations; a revoked RT then fails with invalid_grant', async () => {
    const t0 = await codeFlow(idp, config, redirectUri, 'erin');
    await oidc.tokenRevocation(config, t0.refresh_token!, { token_type_hint: 'refresh_token' });
    expect(idp.revocations).toBe(1);
    expect((await refreshError(config, t0.refresh_token!)).error).toBe('invalid_grant');
  });

  it('delay() still answers (both phases)', async () => {
    const t0 = await codeFlow(idp, config, redirectUri, 'frank');
    idp.delay(50);
    const t1 = await oidc.refreshTokenGrant(config, t0.refresh_token!);
    idp.delay(50, 'after');
    await expect(oidc.refreshTokenGrant(config, t1.refresh_token!)).resolves.toHaveProperty('access_token');
    expect(idp.refreshSucceeded).toBe(2);
  });

  it('access tokens really expire after accessTokenTtl', async () => {
    const t0 = await codeFlow(idp, config, redirectUri, 'gina');
    await sleep(2100);
    await expect(oidc.fetchUserInfo(config, t0.access_token, 'gina')).rejects.toThrow();
  });

  it('records the client authentication used (oidc-provider accepts post for a basic client)', async () => {
    // openid-client 6 defaults to client_secret_post when given a bare secret
    const postConfig = await oidc.discovery(new URL(idp.issuer), idp.clientId, idp.clientSecret, undefined, insecure);
    const t0 = await codeFlow(idp, config, redirectUri, 'hank');
    await oidc.refreshTokenGrant(postConfig, t0.refresh_token!);
    expect(idp.tokenRequests.map((r) => r.clientAuth)).toEqual(['client_secret_basic', 'client_secret_post']);
  });
});

/**
 * A throwaway stand-in for the gateway's /auth endpoints (openid-client, in-memory state) so that loginAs /
 * loginThroughForms / idpLogout are exercised without depending on src/.
 */
function miniGateway(publicUrl: string, config: oidc.Configuration) {
  const pending = new Map<string, { codeVerifier: string; nonce: string; returnTo: string }>();
  const sessions = new Map<string, { claims: oidc.IDToken; idToken: string }>();
  const logoutTokens: string[] = [];
  const cookieSid = (req: http.IncomingMessage) => /(?:^|;\s*)mini=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];

  const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', publicUrl);
    try {
      if (url.pathname === '/auth/login') {
        const codeVerifier = oidc.randomPKCECodeVerifier();
        const state = oidc.randomState();
        const nonce = oidc.randomNonce();
        pending.set(state, { codeVerifier, nonce, returnTo: url.searchParams.get('returnTo') ?? '/' });
        const location = oidc.buildAuthorizationUrl(config, {
          redirect_uri: `${publicUrl}/auth/callback`,
          scope: SCOPE,
          code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
          code_challenge_method: 'S256',
          state,
          nonce,
        });
        res.writeHead(302, { location: location.href }).end();
      } else if (url.pathname === '/auth/callback') {
        const state = url.searchParams.get('state') ?? '';
        const p = pending.get(state);
        pending.delete(state);
        if (!p) {
          res.writeHead(400).end();
          return;
        }
        const tokens = await oidc.authorizationCodeGrant(config, url, {
          pkceCodeVerifier: p.codeVerifier,
          expectedState: state,
          expectedNonce: p.nonce,
          idTokenExpected: true,
        });
        const sid = randomBytes(16).toString('hex');
        sessions.set(sid, { claims: tokens.claims()!, idToken: tokens.id_token! });
        res.writeHead(302, { location: p.returnTo, 'set-cookie': `mini=${sid}; Path=/; HttpOnly` }).end();
      } else if (url.pathname === '/me') {
        const s = sessions.get(cookieSid(req) ?? '');
        if (!s) {
          res.writeHead(401).end();
          return;
        }
        const endSession = oidc.buildEndSessionUrl(config, {
          id_token_hint: s.idToken,
          post_logout_redirect_uri: `${publicUrl}/`,
        });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: s.claims.sub, logoutUrl: endSession.href }));
      } else if (url.pathname === '/auth/backchannel-logout' && req.method === 'POST') {
        let body = '';
        for await (const chunk of req) body += String(chunk);
        logoutTokens.push(new URLSearchParams(body).get('logout_token') ?? '');
        res.writeHead(200).end();
      } else {
        res.writeHead(404).end();
      }
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  };
  return { handler, logoutTokens };
}

async function me(agent: Agent): Promise<{ sub: string; logoutUrl: string }> {
  const res = await agent.get('/me').expect(200);
  return res.body as { sub: string; logoutUrl: string };
}

describe('login helpers against a mini gateway', () => {
  let gw: ReservedServer;
  let idp: TestIdp;
  let mini: ReturnType<typeof miniGateway>;
  let devGw: ReservedServer;
  let devIdp: TestIdp;

  beforeAll(async () => {
    gw = await reserveServer();
    idp = await startTestIdp({
      redirectUri: `${gw.url}/auth/callback`,
      postLogoutRedirectUri: `${gw.url}/`,
      backchannelLogoutUri: `${gw.url}/auth/backchannel-logout`,
    });
    mini = miniGateway(gw.url, await discover(idp));
    gw.on('request', (req, res) => void mini.handler(req, res));

    devGw = await reserveServer();
    devIdp = await startTestIdp({ redirectUri: `${devGw.url}/auth/callback`, interactions: 'dev' });
    const devMini = miniGateway(devGw.url, await discover(devIdp));
    devGw.on('request', (req, res) => void devMini.handler(req, res));
  });

  afterAll(async () => {
    await idp?.close();
    await devIdp?.close();
    await closeServer(gw);
    await closeServer(devGw);
  });

  it('loginAs logs the given user in and returns the callback response', async () => {
    const agent = request.agent(gw);
    const cb = await loginAs(agent, idp, 'alice', '/dashboard');
    expect(cb.status).toBe(302);
    expect(cb.headers.location).toBe('/dashboard');
    expect(cb.idp.callbackUrl.startsWith(`${gw.url}/auth/callback?`)).toBe(true);
    expect(cb.idp.formsSubmitted).toEqual([]);
    expect((await me(agent)).sub).toBe('alice');
  });

  it('concurrent loginAs of different users do not mix accounts up', async () => {
    const users = ['u1', 'u2', 'u3', 'u4'];
    const agents = users.map(() => request.agent(gw));
    await Promise.all(users.map((u, i) => loginAs(agents[i]!, idp, u)));
    const subs = await Promise.all(agents.map(async (a) => (await me(a)).sub));
    expect(subs).toEqual(users);
  });

  it('idpLogout ends the IdP session and the IdP delivers a back-channel logout token', async () => {
    const agent = request.agent(gw);
    const jar = idpAgent(idp);
    await loginAs(agent, idp, 'bob', { idpAgent: jar });
    const { logoutUrl } = await me(agent);
    const before = mini.logoutTokens.length;

    const final = await idpLogout(jar, idp, logoutUrl);
    expect(final).toBe(`${gw.url}/`);
    expect(mini.logoutTokens.length).toBe(before + 1);
    expect(idp.backchannelLogouts.at(-1)).toMatchObject({ ok: true, accountId: 'bob', clientId: idp.clientId });
  });

  it("loginThroughForms submits the 'dev' login and consent forms", async () => {
    const agent = request.agent(devGw);
    const cb = await loginThroughForms(agent, devIdp, 'zoe');
    expect(cb.status).toBe(302);
    expect(cb.idp.formsSubmitted).toEqual(['login', 'consent']);
    expect((await me(agent)).sub).toBe('zoe');
  });

  it('allowGateway registers a second gateway URL on a running IdP', async () => {
    const second = await reserveServer();
    try {
      await idp.allowGateway(second.url);
      const mini2 = miniGateway(second.url, await discover(idp));
      second.on('request', (req, res) => void mini2.handler(req, res));
      const agent = request.agent(second);
      expect((await loginAs(agent, idp, 'yann')).status).toBe(302);
      expect((await me(agent)).sub).toBe('yann');
    } finally {
      await closeServer(second);
    }
  });
});

describe('upstream', () => {
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream();
  });
  afterAll(async () => {
    await upstream?.close();
  });
  beforeEach(() => upstream.reset());

  it('echoes and records method, url, headers and body', async () => {
    const res = await request(upstream.url)
      .post('/things/1?x=1&x=2&y=z')
      .set('Authorization', 'Bearer opaque-token')
      .set('X-Custom', 'yes')
      .send({ hello: 'world' })
      .expect(200);
    const echo = res.body as EchoResponse;
    expect(echo).toMatchObject({ method: 'POST', path: '/things/1', query: { x: ['1', '2'], y: 'z' }, sub: null });
    expect(echo.headers.authorization).toBe('Bearer opaque-token');
    expect(JSON.parse(echo.body)).toEqual({ hello: 'world' });
    expect(upstream.requests).toHaveLength(1);
    expect(upstream.last()).toMatchObject({ method: 'POST', url: '/things/1?x=1&x=2&y=z', body: '{"hello":"world"}' });
    expect(upstream.last().headers['x-custom']).toBe('yes');
  });

  it('decodes sub from a JWT bearer', async () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const jwt = `${b64({ alg: 'none' })}.${b64({ sub: 'alice' })}.sig`;
    const res = await request(upstream.url).get('/x').set('Authorization', `Bearer ${jwt}`).expect(200);
    expect((res.body as EchoResponse).sub).toBe('alice');
  });

  it('streams /sse as 3 separate events', async () => {
    const chunks = await new Promise<string[]>((resolve, reject) => {
      http
        .get(`${upstream.url}/sse`, (res) => {
          expect(res.headers['content-type']).toBe('text/event-stream');
          const got: string[] = [];
          res.setEncoding('utf8');
          res.on('data', (c: string) => got.push(c));
          res.on('end', () => resolve(got));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    const events = chunks.join('').split('\n\n').filter(Boolean);
    expect(events).toEqual(['data: {"n":1}', 'data: {"n":2}', 'data: {"n":3}']);
    expect(chunks.length).toBeGreaterThanOrEqual(2); // arrived in pieces, not as one buffered body
  });

  it('/set-cookie, /status/:code, /slow, /big-upload', async () => {
    const sc = await request(upstream.url).get('/set-cookie').expect(200);
    expect(sc.headers['set-cookie']).toEqual(['gatehouse=evil; Path=/', '__Host-Http-gatehouse=evil; Path=/; Secure']);
    await request(upstream.url).get('/status/418').expect(418, { status: 418 });
    await request(upstream.url).delete('/status/204').expect(204);
    const slow = await request(upstream.url).get('/slow?ms=20').expect(200);
    expect((slow.body as EchoResponse).path).toBe('/slow');
    const big = Buffer.alloc(3 * 1024 * 1024, 1);
    const up = await request(upstream.url).put('/big-upload').type('application/octet-stream').send(big).expect(200);
    expect(up.body).toEqual({ bytes: big.length });
    expect(upstream.last()).toMatchObject({ url: '/big-upload', bodyBytes: big.length, body: '' });
  });
});

describe('redis', () => {
  it('the suite-wide Redis from globalSetup answers PING', async () => {
    expect(process.env.REDIS_URL).toMatch(/^rediss?:\/\//);
    const redis = new Redis(process.env.REDIS_URL!);
    try {
      expect(await redis.ping()).toBe('PONG');
      const key = `${uniquePrefix()}smoke`;
      await redis.set(key, '1', 'EX', 10);
      expect(await redis.get(key)).toBe('1');
      await redis.del(key);
    } finally {
      await redis.quit();
    }
  });

  it('startRedisServer gives a private server that can be killed and restarted on the same port', async () => {
    const srv = await startRedisServer();
    try {
      expect(srv.url).toBe(`redis://127.0.0.1:${srv.port}`);
      expect(await pingRedis(srv.port)).toBe(true);
      await srv.kill();
      expect(srv.running).toBe(false);
      expect(await pingRedis(srv.port)).toBe(false);
      await srv.restart();
      expect(srv.running).toBe(true);
      expect(await pingRedis(srv.port)).toBe(true);
    } finally {
      await srv.stop();
    }
    expect(await pingRedis(srv.port)).toBe(false);
  });
});
