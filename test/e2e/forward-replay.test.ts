/**
 * The forwarder's replay: an upstream that answers 401 invalid_token gets the request once more, with the
 * token the hook returns, when the request had no body; everything else passes through as it came. A real
 * upstream and a real server in front of createForwarder(), on node:http, no gateway around them.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createForwarder, forwardShared, type Exchange, type Forwarder } from '../../src/api/forward';
import { createMetrics, type Metrics } from '../../src/health/metrics';
import { GatewayError, sendError } from '../../src/http/errors';
import { createLogger } from '../../src/log/logger';
import { upstreamPath } from '../../src/api/pathGuard';
import { rawRequest } from '../support/security';
import { waitFor } from '../support/wait';

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  contentLength: string | undefined;
  transferEncoding: string | undefined;
  body: string;
}

const CHALLENGE = 'Bearer realm="api", error="invalid_token", error_description="The access token expired"';

/**
 * Answers 401 invalid_token to every bearer but `new-token`, and to every request on `/always`; `/scope`
 * answers 401 with a challenge that is not invalid_token; anything else echoes what arrived.
 */
async function startUpstream(): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization,
        contentLength: req.headers['content-length'],
        transferEncoding: req.headers['transfer-encoding'],
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(entry);
      const path = entry.url.split('?')[0];
      if (path === '/base/scope') {
        res.writeHead(401, { 'www-authenticate': 'Bearer realm="api", error="insufficient_scope"', 'content-type': 'text/plain' });
        return res.end('scope');
      }
      if (path === '/base/always' || entry.authorization !== 'Bearer new-token') {
        res.writeHead(401, { 'www-authenticate': CHALLENGE, 'content-type': 'application/json' });
        return res.end(JSON.stringify({ upstream: 'invalid_token', attempt: seen.length }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ upstream: 'ok', method: entry.method, body: entry.body }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('the forwarder replays a request without a body once after 401 invalid_token', () => {
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let front: http.Server;
  let frontUrl: string;
  let forwarder: Forwarder;
  let metrics: Metrics;
  /** What the hook of the next requests does; undefined: the exchange has none. */
  let hook: ((res: http.ServerResponse) => Promise<string | undefined>) | undefined;
  let hookCalls = 0;

  beforeAll(async () => {
    up = await startUpstream();
    metrics = createMetrics();
    const shared = forwardShared({
      publicOrigin: 'https://app.example',
      trustProxy: 0,
      upstreamConnectTimeoutSeconds: 2,
      upstreamSocketsPerSession: 16,
      dropHeaders: [],
    });
    forwarder = createForwarder(
      { upstream: new URL(`${up.url}/base`), timeoutSeconds: 5, allowSetCookie: false },
      shared,
      createLogger('silent'),
      metrics,
    );
    front = http.createServer((req, res) => {
      const current = hook;
      const exchange: Exchange = {
        upstreamPath: upstreamPath(req.url ?? '')!,
        token: { accessToken: 'old-token' },
        bound: 'one-session',
        ...(current && {
          retryWithNewToken: async () => {
            hookCalls++;
            const accessToken = await current(res);
            return accessToken === undefined ? undefined : { accessToken };
          },
        }),
      };
      forwarder.forward(req, res, exchange);
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    forwarder.close();
    front.closeAllConnections();
    await new Promise((r) => front.close(r));
    await up.close();
  });
  beforeEach(() => {
    up.seen.length = 0;
    hookCalls = 0;
    hook = async () => 'new-token';
  });

  const retries = async () => (await metrics.registry.getSingleMetric('gatehouse_upstream_token_retries_total')!.get()).values[0]!.value;

  it.each(['GET', 'HEAD', 'OPTIONS', 'DELETE'])(
    '%s: replayed once with the new bearer; the browser sees only the second answer',
    async (method) => {
      const before = await retries();
      const r = await rawRequest(frontUrl, { method, path: '/api/things?x=1' });
      expect(r.status).toBe(200);
      if (method !== 'HEAD') expect(JSON.parse(r.body)).toEqual({ upstream: 'ok', method, body: '' });
      expect(r.headers['www-authenticate']).toBeUndefined();
      expect(up.seen.map((s) => [s.method, s.url, s.authorization])).toEqual([
        [method, '/base/things?x=1', 'Bearer old-token'],
        [method, '/base/things?x=1', 'Bearer new-token'],
      ]);
      // The replay has no body either, and says so the way the first request did.
      expect(up.seen[1]!.body).toBe('');
      expect(up.seen[1]!.transferEncoding).toBeUndefined();
      expect(hookCalls).toBe(1);
      expect(await retries()).toBe(before + 1);
    },
  );

  it('a request with a body is never replayed: the upstream’s 401 reaches the browser as it came', async () => {
    for (const [method, body] of [
      ['POST', '{"a":1}'],
      ['PUT', 'x'],
      ['DELETE', '{"ids":[1]}'],
    ] as const) {
      up.seen.length = 0;
      const r = await rawRequest(frontUrl, {
        method,
        path: '/api/things',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        body,
      });
      expect([method, r.status]).toEqual([method, 401]);
      expect(r.headers['www-authenticate']).toBe(CHALLENGE);
      expect(JSON.parse(r.body)).toEqual({ upstream: 'invalid_token', attempt: 1 });
      expect(up.seen).toHaveLength(1);
      expect(up.seen[0]!.body).toBe(body);
    }
    // Chunked, even when empty: a body was announced, so the request is not sent again.
    up.seen.length = 0;
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${frontUrl}/api/things`, { method: 'GET', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    expect(chunked).toBe(401);
    expect(up.seen).toHaveLength(1);
    expect(hookCalls).toBe(0);
  });

  it('a hook that answers the browser itself (resolving undefined) has the last word: the upstream’s 401 is dropped', async () => {
    hook = async (res) => {
      sendError(res, 401, 'session_expired');
      return undefined;
    };
    const r = await rawRequest(frontUrl, { path: '/api/things' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ error: 'session_expired', message: 'The session has ended. Log in again at /auth/login.' });
    expect(r.headers['www-authenticate']).toBeUndefined();
    expect(up.seen).toHaveLength(1);
    expect(hookCalls).toBe(1);
  });

  it('a second 401 invalid_token passes through: one replay, never a loop', async () => {
    const r = await rawRequest(frontUrl, { path: '/api/always' });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe(CHALLENGE);
    expect(JSON.parse(r.body)).toEqual({ upstream: 'invalid_token', attempt: 2 });
    expect(up.seen.map((s) => s.authorization)).toEqual(['Bearer old-token', 'Bearer new-token']);
    expect(hookCalls).toBe(1);
  });

  it('a 401 that is not invalid_token, or an exchange without a hook, is passed through untouched', async () => {
    const scope = await rawRequest(frontUrl, { path: '/api/scope' });
    expect([scope.status, scope.body]).toEqual([401, 'scope']);
    expect(hookCalls).toBe(0);
    hook = undefined;
    up.seen.length = 0;
    const none = await rawRequest(frontUrl, { path: '/api/things' });
    expect(none.status).toBe(401);
    expect(up.seen).toHaveLength(1);
  });

  it('a hook that fails answers as the lane answers an error, and the upstream is not asked again', async () => {
    hook = () => Promise.reject(new GatewayError('token_refresh_unavailable', 503, { headers: { 'Retry-After': '2' } }));
    const r = await rawRequest(frontUrl, { path: '/api/things' });
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('2');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'token_refresh_unavailable' });
    expect(up.seen).toHaveLength(1);
  });

  it('a browser that goes away while the token is refreshed gets no replay sent on its behalf', async () => {
    let release!: (token: string) => void;
    hook = () => new Promise<string>((resolve) => (release = resolve));
    const req = http.get(`${frontUrl}/api/things`);
    req.on('error', () => undefined);
    await waitFor('the refresh hook to be called', () => hookCalls !== 0, 1000, 10);
    expect(hookCalls).toBe(1);
    req.destroy();
    await sleep(50);
    release('new-token');
    await sleep(100);
    expect(up.seen).toHaveLength(1);
  });
});
