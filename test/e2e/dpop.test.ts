/**
 * DPoP (RFC 9449) against oidc-provider with the feature on, and an upstream that verifies every proof the way a
 * resource server must (§7.1, §4.3): the proof's signature with its own embedded key, `typ`, `htm`, `htu`, `ath`,
 * a fresh `jti` (replay), and the key's thumbprint equal to the token's binding (`cnf.jkt` in a JWT access token,
 * the IdP's record for an opaque one). Nonces are tested both ways: the IdP's (openid-client asks again) and
 * the upstream's (the gateway asks once more, for a request without a body only).
 */
import { createHash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbeddedJWK, calculateJwkThumbprint, decodeJwt, jwtVerify, type JWK } from 'jose';
import type { Provider } from 'oidc-provider';
import request from 'supertest';
import WebSocket, { WebSocketServer } from 'ws';
import type { RouteOptions } from '../../src/config/routes';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';
import { issuedCookie } from '../support/security';

const ORDERS = 'https://orders.example/';
const MACHINE = 'https://machine.example/';

/** What the upstream concluded about one request. */
interface Seen {
  method: string;
  path: string;
  /** The Authorization scheme, lower case. */
  scheme: string;
  token: string;
  /** The proof's key thumbprint (RFC 7638), when the proof was good. */
  jkt?: string;
  nonce?: string;
  /** Why the proof or binding was refused; undefined when all held. */
  problem?: string;
}

interface DpopUpstream {
  url: string;
  seen: Seen[];
  /** When set, proofs must carry this nonce (RFC 9449 §9); a proof without it gets use_dpop_nonce. */
  nonce: string | undefined;
  /** Answer the next requests 401 `DPoP error="invalid_token"` (a token revoked early). */
  refuseTokens: number;
  close(): Promise<void>;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

/** A resource server that checks DPoP proofs and token bindings; `bindingOf` finds an opaque token's key. */
async function startDpopUpstream(bindingOf: (token: string) => Promise<string | undefined>): Promise<DpopUpstream> {
  const jtis = new Set<string>();
  const up: DpopUpstream = { url: '', seen: [], nonce: undefined, refuseTokens: 0, close: async () => undefined };

  async function verify(req: IncomingMessage): Promise<Seen> {
    const path = req.url ?? '/';
    const [scheme = '', token = ''] = (req.headers.authorization ?? '').split(' ', 2);
    const seen: Seen = { method: req.method ?? '', path, scheme: scheme.toLowerCase(), token };
    const proof = req.headers.dpop;
    if (seen.scheme !== 'dpop') return { ...seen, problem: `scheme ${scheme}` };
    if (typeof proof !== 'string') return { ...seen, problem: 'no proof' };
    try {
      const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256'] });
      const jkt = await calculateJwkThumbprint(protectedHeader.jwk as JWK);
      const nonce = typeof payload.nonce === 'string' ? payload.nonce : undefined;
      const checked: Seen = { ...seen, jkt, ...(nonce !== undefined && { nonce }) };
      if (payload.htm !== req.method) return { ...checked, problem: `htm ${String(payload.htm)}` };
      if (payload.htu !== `${up.url}${path.replace(/\?.*$/s, '')}`) return { ...checked, problem: `htu ${String(payload.htu)}` };
      if (payload.ath !== sha256(token)) return { ...checked, problem: 'ath' };
      if (typeof payload.jti !== 'string' || jtis.has(payload.jti)) return { ...checked, problem: 'jti replayed' };
      jtis.add(payload.jti);
      if (Math.abs(Date.now() / 1000 - (payload.iat ?? 0)) > 60) return { ...checked, problem: 'iat' };
      const bound = token.split('.').length === 3 ? (decodeJwt(token).cnf as { jkt?: string } | undefined)?.jkt : await bindingOf(token);
      if (bound !== jkt) return { ...checked, problem: 'the token is bound to another key' };
      return checked;
    } catch (err) {
      return { ...seen, problem: `proof: ${(err as Error).message}` };
    }
  }

  /** The answer to a checked request, as a resource server gives it: 401 with a DPoP challenge when refused. */
  function verdict(seen: Seen): { status: number; headers: Record<string, string> } {
    const challenge = (error: string) => ({ 'WWW-Authenticate': `DPoP algs="ES256", error="${error}"` });
    if (seen.problem) return { status: 401, headers: challenge('invalid_dpop_proof') };
    if (up.nonce !== undefined && seen.nonce !== up.nonce)
      return { status: 401, headers: { ...challenge('use_dpop_nonce'), 'DPoP-Nonce': up.nonce } };
    if (up.refuseTokens > 0) {
      up.refuseTokens--;
      return { status: 401, headers: challenge('invalid_token') };
    }
    return { status: 200, headers: {} };
  }

  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((req, res) => {
    void (async () => {
      req.resume();
      const seen = await verify(req);
      up.seen.push(seen);
      const { status, headers } = verdict(seen);
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify({ jkt: seen.jkt ?? null, problem: seen.problem ?? null }));
    })();
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    void (async () => {
      const seen = await verify(req);
      up.seen.push(seen);
      if (seen.problem) return void socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data) => ws.send(`echo:${(data as Buffer).toString()}`)));
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  up.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  up.close = async () => {
    for (const c of wss.clients) c.terminate();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
  return up;
}

describe('DPoP: sender-constrained tokens', () => {
  let s: Stack;
  let up: DpopUpstream;

  beforeAll(async () => {
    // The IdP starts after the upstream (whose URL the routes name): an opaque token's binding is looked up there.
    const idp: { provider?: Provider } = {};
    up = await startDpopUpstream(async (token) => (await idp.provider?.AccessToken.find(token))?.jkt);
    const routes: RouteOptions[] = [
      { path: '/api', upstream: up.url },
      { path: '/api/orders', upstream: `${up.url}/orders`, resource: ORDERS },
      { path: '/api/machine', upstream: `${up.url}/machine`, token: 'client', resource: MACHINE },
      { path: '/api/live', upstream: `${up.url}/live`, websocket: true },
    ];
    s = await startStack({
      idp: { resources: [ORDERS, MACHINE], accessTokenTtl: 4 },
      gateway: { dpop: true, routes: JSON.stringify(routes), refreshSkewSeconds: 1 },
    });
    idp.provider = s.idp.provider as Provider;
  });
  afterAll(async () => {
    await s?.close();
    await up?.close();
  });
  beforeEach(() => {
    up.seen.length = 0;
    up.nonce = undefined;
    up.refuseTokens = 0;
  });

  const login = async (sub: string): Promise<string> => {
    const cb = await loginAs(s.gw.agent(), s.idp, sub);
    return `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  };
  const get = (path: string, cookie: string) => request(s.gw.server).get(path).set(SPA).set('Cookie', cookie);
  const refreshes = () => s.idp.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
  const problems = () => up.seen.filter((x) => x.problem !== undefined);

  it('the login proves a key: every call upstream is `Authorization: DPoP` with a fresh proof of that key', async () => {
    const cookie = await login('dpop-basic');
    const codeExchange = s.idp.tokenRequests.filter((r) => r.grantType === 'authorization_code').at(-1)!;
    expect(codeExchange.dpop).toBe(true);
    await get('/api/a?x=1', cookie).expect(200);
    await get('/api/b', cookie).expect(200);
    await request(s.gw.server).post('/api/c').set(SPA).set('Cookie', cookie).send({ n: 1 }).expect(200);
    expect(problems()).toEqual([]);
    expect(up.seen.map((x) => [x.method, x.scheme])).toEqual([
      ['GET', 'dpop'],
      ['GET', 'dpop'],
      ['POST', 'dpop'],
    ]);
    expect(new Set(up.seen.map((x) => x.jkt)).size).toBe(1);

    // Another session has a key of its own.
    const other = await login('dpop-other');
    await get('/api/a', other).expect(200);
    expect(up.seen.at(-1)!.jkt).not.toBe(up.seen[0]!.jkt);
  });

  it('a proof the browser sends is never forwarded: the upstream gets the gateway’s', async () => {
    const cookie = await login('dpop-forged');
    await get('/api/a', cookie).set('DPoP', 'eyJ.forged.proof').expect(200);
    expect(problems()).toEqual([]);
  });

  it('the private key is never in Redis in clear', async () => {
    await login('dpop-stored');
    const keys = await s.redis!.keys(`${s.prefix}*`);
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      const type = await s.redis!.type(key);
      const values = type === 'string' ? [await s.redis!.get(key)] : type === 'hash' ? Object.values(await s.redis!.hgetall(key)) : [];
      for (const v of values) expect(v ?? '').not.toMatch(/"kty"|"crv"|P-256/);
    }
  });

  it('an API’s token and every refreshed token stay bound to the session’s key (proofs on every refresh)', async () => {
    const cookie = await login('dpop-refresh');
    await get('/api/a', cookie).expect(200);
    await get('/api/orders/1', cookie).expect(200);
    const [plain, orders] = up.seen;
    expect(orders!.jkt).toBe(plain!.jkt);
    expect(decodeJwt(orders!.token).aud).toBe(ORDERS);
    // Past the access tokens' end: both are refreshed, with proofs, and the new tokens bound to the same key.
    const before = s.idp.tokenRequests.length;
    await sleep(4200);
    await get('/api/a', cookie).expect(200);
    await get('/api/orders/2', cookie).expect(200);
    const grants = s.idp.tokenRequests.slice(before).filter((r) => r.grantType === 'refresh_token');
    expect(grants.length).toBeGreaterThanOrEqual(2);
    expect(grants.every((r) => r.dpop && r.status === 200)).toBe(true);
    const [, , plain2, orders2] = up.seen;
    expect(plain2!.token).not.toBe(plain!.token);
    expect(orders2!.token).not.toBe(orders!.token);
    expect([plain2!.jkt, orders2!.jkt]).toEqual([plain!.jkt, plain!.jkt]);
    expect(problems()).toEqual([]);
  });

  it('the upstream’s nonce: asked once more with it, then sent with it from the start; no refresh for it', async () => {
    const cookie = await login('dpop-nonce');
    up.nonce = 'nonce-1';
    const grants = refreshes();
    await get('/api/a', cookie).expect(200);
    expect(up.seen.map((x) => x.nonce)).toEqual([undefined, 'nonce-1']);
    await get('/api/b', cookie).expect(200);
    expect(up.seen.map((x) => x.nonce)).toEqual([undefined, 'nonce-1', 'nonce-1']);
    expect(refreshes()).toBe(grants);
  });

  it('a request with a body is not sent again for a nonce: the upstream’s 401 reaches the browser', async () => {
    const cookie = await login('dpop-nonce-body');
    up.nonce = `nonce-${Date.now()}`; // one the gateway has not seen
    const grants = refreshes();
    const res = await request(s.gw.server).post('/api/c').set(SPA).set('Cookie', cookie).send({ n: 1 });
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/use_dpop_nonce/);
    expect(up.seen).toHaveLength(1);
    expect(refreshes()).toBe(grants);
  });

  it('`DPoP error="invalid_token"` from the upstream: one refresh, and the request sent again with the new token', async () => {
    const cookie = await login('dpop-invalid-token');
    await get('/api/a', cookie).expect(200);
    up.seen.length = 0;
    up.refuseTokens = 1;
    await get('/api/a', cookie).expect(200);
    expect(up.seen).toHaveLength(2);
    expect(up.seen[1]!.token).not.toBe(up.seen[0]!.token);
    expect(up.seen[1]!.jkt).toBe(up.seen[0]!.jkt);
    expect(problems()).toEqual([]);
  });

  it('the gateway’s own token (client route) is DPoP-bound too', async () => {
    await request(s.gw.server).get('/api/machine/jobs').set(SPA).expect(200);
    const [seen] = up.seen;
    expect(seen!.scheme).toBe('dpop');
    expect(decodeJwt(seen!.token).aud).toBe(MACHINE);
    expect(s.idp.tokenRequests.filter((r) => r.grantType === 'client_credentials').every((r) => r.dpop)).toBe(true);
    expect(problems()).toEqual([]);
  });

  it('a WebSocket handshake carries a proof for the upstream’s http URI', async () => {
    const cookie = await login('dpop-socket');
    const ws = new WebSocket(`${s.gw.url.replace(/^http/, 'ws')}/api/live/feed`, {
      origin: s.gw.gatehouse.config.publicOrigin,
      headers: { Cookie: cookie },
    });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('hi'));
      ws.on('message', (m) => resolve((m as Buffer).toString()));
      ws.on('error', reject);
    });
    ws.close();
    expect(echoed).toBe('echo:hi');
    expect(up.seen.map((x) => [x.path, x.scheme, x.problem])).toEqual([['/live/feed', 'dpop', undefined]]);
  });
});

describe('DPoP with an IdP that demands its own nonce', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ idp: { dpopNonce: true, accessTokenTtl: 2 }, gateway: { dpop: true, refreshSkewSeconds: 1 } });
  });
  afterAll(() => s?.close());

  it('login and refresh succeed: each token request asked once more with the IdP’s nonce', async () => {
    const agent = s.gw.agent();
    await loginAs(agent, s.idp, 'dpop-idp-nonce');
    await agent.get('/api/a').set(SPA).expect(200);
    await s.idp.waitForAccessTokenExpiry();
    await agent.get('/api/a').set(SPA).expect(200);
    const answered = s.idp.tokenRequests.map((r) => [r.grantType, r.status]);
    expect(answered).toEqual([
      ['authorization_code', 400],
      ['authorization_code', 200],
      ['refresh_token', 400],
      ['refresh_token', 200],
    ]);
    expect(s.idp.tokenRequests.every((r) => r.dpop)).toBe(true);
    // The refresh answered use_dpop_nonce did not spend the refresh token.
    expect(s.idp.reuseDetected).toBe(0);
  });
});
