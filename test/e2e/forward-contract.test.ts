/**
 * What the forwarder does with what the lane hands it, on createForwarder() directly (a real upstream and a
 * real server in front, node:http): no token, no Authorization at all; an Expect: 100-continue request still
 * gets our header section, never the browser's; a route that lets the upstream set cookies never lets it set
 * one of the gateway's.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createForwarder, forwardShared, type Forwarder, type ForwardRoute } from '../../src/api/forward';
import { createMetrics } from '../../src/health/metrics';
import { createLogger } from '../../src/log/logger';
import { upstreamPath } from '../../src/api/pathGuard';
import { rawRequest, rawSocket } from '../support/security';

interface Seen {
  url: string;
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
  body: string;
}

const UPSTREAM_COOKIES = [
  'theme=dark; Path=/',
  'gatehouse=forged; Path=/',
  '__Host-Http-gatehouse=forged; Path=/; Secure',
  'gatehouse-tx-AAAAAAAAAAAAAAAA=forged; Path=/',
  '__Host-gatehouse-tx-AAAAAAAAAAAAAAAA=forged; Path=/; Secure',
  '__HOST-http-GATEHOUSE=forged; Path=/; Secure',
  '=gatehouse=forged; Path=/',
  ' gatehouse =forged',
  'gatehouse',
  'cart=3; Path=/; HttpOnly',
];

describe('the forwarder, given an exchange', () => {
  let upstream: http.Server;
  let upstreamUrl: string;
  const seen: Seen[] = [];
  const fronts: Array<{ server: http.Server; forwarder: Forwarder }> = [];

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ url: req.url ?? '', rawHeaders: req.rawHeaders, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        if (req.url === '/cookies') res.setHeader('set-cookie', UPSTREAM_COOKIES);
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const { server, forwarder } of fronts) {
      forwarder.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  /** A server whose every request goes to a forwarder for `route`, with `accessToken`. */
  async function front(route: Partial<ForwardRoute>, accessToken: string | undefined): Promise<string> {
    const forwarder = createForwarder(
      { upstream: new URL(upstreamUrl), timeoutSeconds: 5, allowSetCookie: false, ...route },
      forwardShared({
        publicOrigin: 'https://app.example',
        trustProxy: 0,
        upstreamConnectTimeoutSeconds: 2,
        upstreamSocketsPerSession: 16,
        dropHeaders: [],
      }),
      createLogger('silent'),
      createMetrics(),
    );
    const server = http.createServer((req, res) =>
      forwarder.forward(req, res, {
        upstreamPath: upstreamPath(req.url ?? '')!,
        bound: 'b',
        ...(accessToken !== undefined && { token: { accessToken } }),
      }),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    fronts.push({ server, forwarder });
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  const authorizations = (s: Seen) => s.rawHeaders.filter((_v, i) => i % 2 === 0 && s.rawHeaders[i]!.toLowerCase() === 'authorization');

  it('without an access token the upstream gets no Authorization at all, and still none of the browser’s', async () => {
    const url = await front({}, undefined);
    const r = await rawRequest(url, { path: '/api/open', headers: { Authorization: 'Bearer browser', Cookie: 'gatehouse=s%3Ax' } });
    expect(r.status).toBe(200);
    const s = seen.at(-1)!;
    expect(s.url).toBe('/open');
    expect(authorizations(s)).toEqual([]);
    expect(s.headers.cookie).toBeUndefined();
    expect(s.headers['x-forwarded-proto']).toBe('https');
  });

  it('an Expect: 100-continue request reaches the upstream with exactly our Bearer, no cookie, its body whole', async () => {
    const url = await front({}, 'ours');
    const body = JSON.stringify({ upload: 'x'.repeat(1000) });
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${url}/api/upload`, {
        method: 'POST',
        agent: false,
        headers: {
          Expect: '100-continue',
          'Content-Length': Buffer.byteLength(body),
          'Content-Type': 'application/json',
          Authorization: 'Bearer browser',
          Cookie: 'gatehouse=s%3Ax',
          'X-Forwarded-For': '1.2.3.4',
        },
      });
      req.on('continue', () => req.end(body));
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    expect(status).toBe(200);
    const s = seen.at(-1)!;
    expect(authorizations(s)).toHaveLength(1);
    expect(s.headers.authorization).toBe('Bearer ours');
    expect(s.headers.cookie).toBeUndefined();
    expect(s.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(s.headers.host).toBe(new URL(upstreamUrl).host);
    expect(s.body).toBe(body);
  });

  it('a chunked body goes upstream chunked, on a connection closed after it; a body-less POST says Content-Length: 0', async () => {
    const url = await front({}, 'ours');
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${url}/api/chunks`, { method: 'POST', agent: false, headers: { 'Content-Type': 'text/plain' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.write('first,');
      setTimeout(() => req.end('second'), 20);
    });
    expect(status).toBe(200);
    const chunked = seen.at(-1)!;
    expect([chunked.headers['transfer-encoding'], chunked.headers['content-length'], chunked.headers.connection]).toEqual([
      'chunked',
      undefined,
      'close',
    ]);
    expect(chunked.body).toBe('first,second');
    // A raw socket: an HTTP client library would add Content-Length: 0 itself.
    const empty = await rawSocket(Number(new URL(url).port), 'POST /api/empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 2000);
    expect(empty.status).toBe(200);
    expect(seen.at(-1)!.url).toBe('/empty');
    expect([seen.at(-1)!.headers['content-length'], seen.at(-1)!.headers['transfer-encoding']]).toEqual(['0', undefined]);
  });

  it('a route that allows upstream cookies passes them, but never one named like the gateway’s own', async () => {
    const allowing = await front({ allowSetCookie: true }, 'ours');
    const r = await rawRequest(allowing, { path: '/api/cookies' });
    expect(r.status).toBe(200);
    expect(r.headers['set-cookie']).toEqual(['theme=dark; Path=/', 'cart=3; Path=/; HttpOnly']);
    const closed = await front({}, 'ours');
    const none = await rawRequest(closed, { path: '/api/cookies' });
    expect(none.headers['set-cookie']).toBeUndefined();
  });
});
