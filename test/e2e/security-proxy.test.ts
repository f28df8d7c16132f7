/**
 * The /api proxy (R46–R51, DESIGN.md /api table, STANDARDS.md §2 rows 9, 14–17) and the health probes,
 * with raw node:http / net requests wherever a client library could normalise the path or the framing.
 */
import http from 'node:http';
import request from 'supertest';
import { createGatehouse, type Gatehouse } from '../../src';
import { createLogger } from '../../src/log/logger';
import { closeServer, loginAs, reserveServer, type ReservedServer } from '../support/login';
import { SESSION_SECRET, SPA, redisUrl, startStack, type Stack } from '../support/stack';
import { issuedCookie, leaks, rawRequest, rawSocket, recordResponses, settle, tokenForms, type Recorded } from './security-support';

const BAD_REQUEST = { error: 'bad_request', message: 'The request is malformed.' };

describe('security: the /api proxy (R46–R51)', () => {
  let s: Stack;
  let recorded: Recorded[];
  let cookie: string;
  let port: number;

  beforeAll(async () => {
    s = await startStack();
    recorded = recordResponses(s.gw.server);
    port = s.gw.server.port;
    const cb = await loginAs(s.gw.agent(), s.idp, 'proxy-user');
    cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);
  const authed = { ...SPA, Cookie: '' };
  const withSession = (extra: http.OutgoingHttpHeaders = {}): http.OutgoingHttpHeaders => ({ ...authed, Cookie: cookie, ...extra });
  /** The access tokens the IdP issued (any of them may be the current one). */
  const accessTokens = () => new Set(s.idp.tokensIssued().filter((t) => t.split('.').length !== 3));

  describe('R49 (§2 row 14): paths that would leave the upstream base → 400 bad_request, upstream untouched', () => {
    const paths = [
      '/api/../admin',
      '/api/%2e%2e/admin',
      '/api/%2E%2E/admin',
      '/api/.%2e/admin',
      '/api/..%2fadmin',
      '/api/..%2Fadmin',
      '/api/%5c..%5cadmin',
      '/api/..\\admin',
      '/api/x/../../admin',
      '/api/./x',
      '/api/x/..',
      '/api//evil.example/x',
      '/api/%2f%2fevil.example/x',
      '/api/@evil.example/x',
      '/api/%40evil.example/x',
      '/api/x%00y',
      '/api/%',
      '/api/%E0%A4%A',
      '/API/../admin',
    ];

    it.each(paths)('%s', async (path) => {
      const before = s.upstream.requests.length;
      for (const method of ['GET', 'POST']) {
        const r = await rawRequest(s.gw.url, { method, path, headers: withSession(), body: method === 'POST' ? '{}' : undefined });
        expect(r.status).toBe(400);
        expect(JSON.parse(r.body)).toEqual(BAD_REQUEST);
      }
      expect(s.upstream.requests.length).toBe(before);
    });

    it('an absolute-form request line (GET http://evil.example/api/x HTTP/1.1)', async () => {
      const before = s.upstream.requests.length;
      for (const target of ['http://evil.example/api/x', `http://127.0.0.1:${port}/api/x`, 'evil.example:80']) {
        const r = await rawSocket(
          port,
          `GET ${target} HTTP/1.1\r\nHost: evil.example\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: close\r\n\r\n`,
        );
        expect(r.status).toBe(400);
      }
      expect(s.upstream.requests.length).toBe(before);
    });
  });

  it('R49 (§2 row 15): TRACE /api/x → 405 method_not_allowed, upstream untouched', async () => {
    const before = s.upstream.requests.length;
    const r = await rawRequest(s.gw.url, { method: 'TRACE', path: '/api/x', headers: withSession() });
    expect(r.status).toBe(405);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'method_not_allowed' });
    expect(s.upstream.requests.length).toBe(before);
  });

  it('§2 row 15: CONNECT answers 405 method_not_allowed and is never forwarded', async () => {
    const before = s.upstream.requests.length;
    for (const target of ['/api/x', 'evil.example:443', `127.0.0.1:${new URL(s.upstream.url).port}`]) {
      const r = await rawSocket(port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\n\r\n`, 1000);
      // Node hands CONNECT to the server's 'connect' event, never to Express: guardServer() answers it.
      expect(r.status).toBe(405);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'method_not_allowed' });
    }
    expect(s.upstream.requests.length).toBe(before);
    await gw().get('/healthz').expect(200);
  });

  it('R46–R48 (§2 row 16): the upstream sees exactly one Authorization (the gateway’s Bearer), no cookie, no browser identity or hop-by-hop headers', async () => {
    const r = await rawRequest(s.gw.url, {
      method: 'POST',
      path: '/api/echo?x=1',
      headers: {
        ...SPA,
        Cookie: `${cookie}; other=1`,
        Authorization: 'Bearer attacker',
        'Proxy-Authorization': 'Basic YXR0YWNrZXI6eA==',
        'X-Forwarded-For': '1.2.3.4',
        'X-Forwarded-Host': 'evil.example',
        'X-Forwarded-Proto': 'gopher',
        'X-Forwarded-Port': '1',
        Forwarded: 'for=1.2.3.4;host=evil.example;proto=https',
        'X-Real-IP': '1.2.3.4',
        'X-User-Id': 'admin',
        'X-Auth-Request-User': 'admin',
        Connection: 'authorization, x-internal',
        'X-Internal': '1',
        'Keep-Alive': 'timeout=99',
        'Content-Type': 'application/json',
      },
      body: '{"hello":"upstream"}',
    });
    expect(r.status).toBe(200);
    const seen = s.upstream.last();
    expect(seen.body).toBe('{"hello":"upstream"}');
    const auth = seen.rawHeaders.filter((_v, i) => i % 2 === 0 && seen.rawHeaders[i]!.toLowerCase() === 'authorization');
    expect(auth).toHaveLength(1);
    const bearer = /^Bearer (\S+)$/.exec(String(seen.headers.authorization))?.[1];
    expect(bearer).toBeDefined();
    expect(accessTokens().has(bearer!)).toBe(true);
    expect(seen.headers.cookie).toBeUndefined();
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['x-internal']).toBeUndefined();
    expect(seen.headers['x-user-id']).toBeUndefined();
    expect(seen.headers['x-auth-request-user']).toBeUndefined();
    expect(seen.headers['x-real-ip']).toBeUndefined();
    expect(seen.headers.forwarded).toBeUndefined();
    expect(seen.headers['x-forwarded-port']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers['x-csrf']).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe(new URL(s.gw.url).host);
    expect(seen.headers.host).toBe(new URL(s.upstream.url).host);
    expect(JSON.stringify(seen.rawHeaders)).not.toMatch(/1\.2\.3\.4|evil\.example|attacker|admin/);
    expect(seen.url).toBe('/echo?x=1');
  });

  it('R47 / request smuggling: a Connection header naming Content-Length, Transfer-Encoding or Host is refused with 400 and nothing reaches the upstream', async () => {
    const smuggled = 'GET /admin HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer attacker\r\n\r\n';
    const before = s.upstream.requests.length;
    const attempts = [
      `GET /api/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: content-length\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      `GET /api/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`,
      `DELETE /api/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: host\r\nContent-Length: 0\r\n\r\n`,
    ];
    for (const raw of attempts) {
      const r = await rawSocket(port, raw, 1000);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'bad_request' });
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(s.upstream.requests.slice(before)).toEqual([]);
  });

  it('R47: an Upgrade request on a plain route is not upgraded and the upstream sees no Upgrade', async () => {
    const r = await rawRequest(s.gw.url, {
      path: '/api/ws',
      headers: withSession({
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version': '13',
      }),
    }).catch((e: Error) => ({ status: 0, headers: {}, rawHeaders: [], body: e.message }));
    expect(r.status).not.toBe(101);
    const seen = s.upstream.requests.filter((q) => q.url === '/ws');
    for (const q of seen) {
      expect(q.headers.upgrade).toBeUndefined();
      expect(q.headers.connection ?? '').not.toMatch(/upgrade/i);
    }
  });

  it('R50 (§2 row 17): an upstream Set-Cookie never reaches the browser', async () => {
    const r = await rawRequest(s.gw.url, { path: '/api/set-cookie', headers: withSession() });
    expect(r.status).toBe(200);
    expect(r.headers['set-cookie']).toBeUndefined();
    expect(r.rawHeaders.filter((h) => /^set-cookie$/i.test(h))).toEqual([]);
    // the session still works (nothing overwrote it)
    await gw().get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
  });

  it('R51: a response without Cache-Control gets no-store; an upstream policy is kept', async () => {
    const plain = await gw().get('/api/status/201').set(SPA).set('Cookie', cookie);
    expect(plain.status).toBe(201);
    expect(plain.headers['cache-control']).toBe('no-store');
    const echo = await gw().get('/api/anything').set(SPA).set('Cookie', cookie);
    expect(echo.headers['cache-control']).toBe('no-store');
    const sse = await rawRequest(s.gw.url, { path: '/api/sse', headers: withSession() });
    expect(sse.headers['cache-control']).toBe('no-cache');
  });

  it('/api query strings pass through unchanged', async () => {
    const query = '?a=1&a=2&b=x%20y&c=%2F..%2F&d=%E2%9C%93&e=&f';
    const r = await rawRequest(s.gw.url, { path: `/api/things${query}`, headers: withSession() });
    expect(r.status).toBe(200);
    expect(s.upstream.last().url).toBe(`/things${query}`);
    expect(s.upstream.last().url).not.toContain('access_token');
  });

  it('a streamed 5 MB POST body arrives intact at the upstream', async () => {
    const size = 5 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/api/big-upload',
          agent: false,
          headers: withSession({ 'Content-Type': 'application/octet-stream' }),
        },
        (r) => {
          let body = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => (body += c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump(); // chunked: no Content-Length, so nothing can be buffered to compute one
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ bytes: size });
    expect(s.upstream.last()).toMatchObject({ url: '/big-upload', bodyBytes: size });
  });

  it('SSE: the 3 events stream through, the first one before the upstream has finished its response', async () => {
    let upstreamFinished = false;
    const onUpstream = (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.url === '/sse') res.on('finish', () => (upstreamFinished = true));
    };
    s.upstream.server.on('request', onUpstream);
    try {
      const chunks: Array<{ text: string; upstreamFinished: boolean }> = [];
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.get(
          { host: '127.0.0.1', port, path: '/api/sse', agent: false, headers: withSession({ Accept: 'text/event-stream' }) },
          (r) => {
            r.setEncoding('utf8');
            r.on('data', (c: string) => chunks.push({ text: c, upstreamFinished }));
            r.on('end', () => resolve(r.statusCode ?? 0));
          },
        );
        req.on('error', reject);
      });
      expect(status).toBe(200);
      const events = chunks
        .map((c) => c.text)
        .join('')
        .split('\n\n')
        .filter(Boolean);
      expect(events).toEqual(['data: {"n":1}', 'data: {"n":2}', 'data: {"n":3}']);
      // order, not timing: the browser had event 1 while the upstream was still writing
      const firstWithEvent = chunks.find((c) => c.text.includes('"n":1'))!;
      expect(firstWithEvent.upstreamFinished).toBe(false);
      expect(firstWithEvent.text).not.toContain('"n":3');
      expect(upstreamFinished).toBe(true);
    } finally {
      s.upstream.server.off('request', onUpstream);
    }
  });

  it('§2 row 9: Transfer-Encoding: chunked together with Content-Length → 400 from Node and nothing forwarded', async () => {
    const before = s.upstream.requests.length;
    const body = '5\r\nhello\r\n0\r\n\r\n';
    const r = await rawSocket(
      port,
      `POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nContent-Type: text/plain\r\n` +
        `Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n${body}` +
        `GET /api/smuggled HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\n\r\n`,
    );
    expect(r.status).toBe(400);
    await settle();
    expect(s.upstream.requests.length).toBe(before);
    await gw().get('/healthz').expect(200);
  });

  describe('upstream unreachable', () => {
    let dead: { server: ReservedServer; gatehouse: Gatehouse; deadPort: number };

    beforeAll(async () => {
      // a port that was just free: nothing listens there
      const tmp = await reserveServer();
      const deadPort = tmp.port;
      await closeServer(tmp);
      const server = await reserveServer();
      const gatehouse = await createGatehouse(
        {
          issuer: s.idp.issuer,
          clientId: s.idp.clientId,
          clientSecret: s.idp.clientSecret,
          publicUrl: server.url,
          upstream: `http://127.0.0.1:${deadPort}/base`,
          sessionSecret: SESSION_SECRET,
          redisUrl: redisUrl(),
          keyPrefix: s.prefix, // shares the sessions of the main gateway, like a replica
          refreshSkewSeconds: 1,
          metricsPort: 0,
        },
        { logger: createLogger('silent') },
      );
      server.on('request', gatehouse.frontDoor);
      dead = { server, gatehouse, deadPort };
    });
    afterAll(async () => {
      await closeServer(dead.server);
      await dead.gatehouse.close();
    });

    it('→ 502 bad_gateway whose answer names no host, port, error code or stack', async () => {
      for (const method of ['GET', 'POST']) {
        const r = await rawRequest(dead.server.url, {
          method,
          path: '/api/things?q=1',
          headers: withSession(),
          body: method === 'POST' ? 'x' : undefined,
        });
        expect(r.status).toBe(502);
        expect(JSON.parse(r.body)).toEqual({ error: 'bad_gateway', message: 'The upstream service could not be reached.' });
        const text = JSON.stringify(r.rawHeaders) + r.body;
        for (const bad of ['127.0.0.1', String(dead.deadPort), 'ECONNREFUSED', 'connect', ' at ', 'node_modules', '/base', 'Error'])
          expect(text).not.toContain(bad);
      }
    });
  });

  describe('health probes', () => {
    it('/healthz → 200 {"status":"ok"}', async () => {
      const r = await gw().get('/healthz');
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ status: 'ok' });
    });

    it('/readyz → 200 while Redis and the IdP are fine', async () => {
      const r = await gw().get('/readyz');
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ status: 'ok' });
    });
  });

  it('R65, R67: no gateway-made error carries a token, and no response has X-Powered-By', async () => {
    await settle();
    expect(recorded.length).toBeGreaterThan(20);
    const tokens = tokenForms(s.idp.tokensIssued());
    // proxied upstream responses are the test upstream's echo (it reflects the Authorization it got): only
    // the gateway's own answers are searched here; security-storage.test.ts searches every response
    const own = recorded.filter(
      (r) => r.status >= 400 || r.url.startsWith('/auth') || r.url.startsWith('/health') || r.url.startsWith('/ready'),
    );
    expect(own.length).toBeGreaterThan(10);
    expect(own.flatMap((r) => leaks(r.head + '\n' + r.body, tokens))).toEqual([]);
    for (const r of recorded) expect(r.head).not.toMatch(/x-powered-by/i);
  });
});
