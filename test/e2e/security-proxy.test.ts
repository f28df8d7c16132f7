/**
 * The /api proxy's hygiene, run against two route set-ups: the default single route (`/api` → the upstream's
 * root) and two routes whose upstream URLs carry different base paths (`/api` → `<upstream>/root-base`,
 * `/api/orders` → `<upstream>/orders-base/v2`). Paths that would leave a route's base, refused methods, what
 * the upstream sees, what comes back, streaming, framing, an unreachable upstream, and no token in any answer
 * the gateway makes itself; then the health probes. Raw node:http / net requests wherever a client library
 * could normalise the path or the framing.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { createGatehouse, type Gatehouse } from '../../src';
import type { RouteOptions } from '../../src/config/routes';
import { createLogger } from '../../src/log/logger';
import { closeServer, loginAs, reserveServer, type ReservedServer } from '../support/login';
import { SESSION_SECRET, SPA, redisUrl, startStack, type Instance, type Stack } from '../support/stack';
import {
  issuedCookie,
  leaks,
  rawRequest,
  rawSocket,
  recordResponses,
  serveUnderBasePaths,
  settle,
  tokenForms,
  type Recorded,
} from '../support/security';

const BAD_REQUEST = { error: 'bad_request', message: 'The request is malformed.' };

/** A way into the upstream: the route path a browser calls, and the base path of the route's upstream URL. */
interface Lane {
  path: string;
  /** '' for the upstream's root */
  base: string;
}

interface Setup {
  title: string;
  /** The route table for an upstream at `origin`; none: the default single route, `/api` → the upstream's root. */
  routes?: (origin: string) => RouteOptions[];
  /** The routes the suite goes through; the first one also carries the heavier tests (5 MB, SSE, framing). */
  lanes: [Lane, ...Lane[]];
}

const SETUPS: Setup[] = [
  { title: 'the default route, /api → the upstream root', lanes: [{ path: '/api', base: '' }] },
  {
    title: 'two routes with base paths, /api → <upstream>/root-base and /api/orders → <upstream>/orders-base/v2',
    routes: (origin) => [
      { path: '/api', upstream: `${origin}/root-base` },
      { path: '/api/orders', upstream: `${origin}/orders-base/v2` },
    ],
    lanes: [
      { path: '/api/orders', base: '/orders-base/v2' },
      { path: '/api', base: '/root-base' },
    ],
  },
];

/** Paths under route path `p` that could leave its upstream base once decoded, or change the upstream's host. */
const leavingPaths = (p: string): string[] => [
  `${p}/../admin`,
  `${p}/%2e%2e/admin`,
  `${p}/%2E%2E/admin`,
  `${p}/.%2e/admin`,
  `${p}/..%2fadmin`,
  `${p}/..%2Fadmin`,
  `${p}/%5c..%5cadmin`,
  `${p}/..\\admin`,
  `${p}/x/../../admin`,
  `${p}/./x`,
  `${p}/x/..`,
  `${p}//evil.example/x`,
  `${p}/%2f%2fevil.example/x`,
  `${p}/@evil.example/x`,
  `${p}/%40evil.example/x`,
  `${p}/x%00y`,
  `${p}/%`,
  `${p}/%E0%A4%A`,
  `${p.toUpperCase()}/../admin`,
  // one level up is already out: into the parent of the route's base (another route's, or the upstream root)
  `${p}/..`,
  `${p}/../x`,
  `${p}/%2e%2e/x`,
  `${p}/%2e./x`,
  `${p}/..;/x`,
  `${p}/%252e%252e/x`,
  `${p}/x/%2e%2e/%2e%2e/x`,
];

describe.each(SETUPS)('security: the /api proxy, $title', (setup) => {
  const [main] = setup.lanes;
  const bases = setup.lanes.map((l) => l.base);
  let s: Stack;
  let gateway: Instance;
  let recorded: Recorded[];
  let cookie: string;
  let port: number;

  beforeAll(async () => {
    s = await startStack();
    if (setup.routes) {
      serveUnderBasePaths(s.upstream, bases);
      gateway = await s.addInstance({ routes: setup.routes(s.upstream.url) });
    } else gateway = s.gw;
    recorded = recordResponses(gateway.server);
    port = gateway.server.port;
    const cb = await loginAs(gateway.agent(), s.idp, 'proxy-user');
    cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  });
  afterAll(() => s?.close());

  const gw = () => request(gateway.server);
  const authed = { ...SPA, Cookie: '' };
  const withSession = (extra: http.OutgoingHttpHeaders = {}): http.OutgoingHttpHeaders => ({ ...authed, Cookie: cookie, ...extra });
  /** The access tokens the IdP issued (any of them may be the current one). */
  const accessTokens = () => new Set(s.idp.tokensIssued().filter((t) => t.split('.').length !== 3));

  describe('paths that would leave the upstream base → 400 bad_request, upstream untouched', () => {
    const paths = [...new Set(setup.lanes.flatMap((l) => leavingPaths(l.path)))];

    it.each(paths)('%s', async (path) => {
      const before = s.upstream.requests.length;
      for (const method of ['GET', 'POST']) {
        const r = await rawRequest(gateway.url, { method, path, headers: withSession(), body: method === 'POST' ? '{}' : undefined });
        expect(r.status).toBe(400);
        expect(JSON.parse(r.body)).toEqual(BAD_REQUEST);
      }
      expect(s.upstream.requests.length).toBe(before);
    });

    it('an absolute-form request line (GET http://evil.example/api/x HTTP/1.1) or an authority-form one', async () => {
      const before = s.upstream.requests.length;
      const targets = [
        ...setup.lanes.flatMap(({ path }) => [`http://evil.example${path}/x`, `http://127.0.0.1:${port}${path}/x`]),
        'evil.example:80',
      ];
      for (const target of targets) {
        const r = await rawSocket(
          port,
          `GET ${target} HTTP/1.1\r\nHost: evil.example\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: close\r\n\r\n`,
        );
        expect([target, r.status]).toEqual([target, 400]);
      }
      expect(s.upstream.requests.length).toBe(before);
    });
  });

  it('TRACE → 405 method_not_allowed, upstream untouched', async () => {
    const before = s.upstream.requests.length;
    for (const { path } of setup.lanes) {
      const r = await rawRequest(gateway.url, { method: 'TRACE', path: `${path}/x`, headers: withSession() });
      expect(r.status).toBe(405);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'method_not_allowed' });
    }
    expect(s.upstream.requests.length).toBe(before);
  });

  it('CONNECT answers 405 method_not_allowed and is never forwarded', async () => {
    const before = s.upstream.requests.length;
    const targets = [...setup.lanes.map(({ path }) => `${path}/x`), 'evil.example:443', `127.0.0.1:${new URL(s.upstream.url).port}`];
    for (const target of targets) {
      const r = await rawSocket(port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\n\r\n`, 1000);
      // Node hands CONNECT to the server's 'connect' event, never to Express: guardServer() answers it.
      expect(r.status).toBe(405);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'method_not_allowed' });
    }
    expect(s.upstream.requests.length).toBe(before);
    await gw().get('/healthz').expect(200);
  });

  it.each(setup.lanes)(
    'through $path: the upstream sees the request under its base path with exactly one Authorization (the gateway’s Bearer), no cookie, no browser identity or hop-by-hop headers',
    async ({ path, base }) => {
      const r = await rawRequest(gateway.url, {
        method: 'POST',
        path: `${path}/echo?x=1`,
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
      expect(seen.headers['x-forwarded-host']).toBe(new URL(gateway.url).host);
      expect(seen.headers.host).toBe(new URL(s.upstream.url).host);
      expect(JSON.stringify(seen.rawHeaders)).not.toMatch(/1\.2\.3\.4|evil\.example|attacker|admin/);
      expect(seen.url).toBe(`${base}/echo?x=1`);
    },
  );

  it('a Connection header naming Content-Length, Transfer-Encoding or Host is refused with 400 and nothing reaches the upstream (request smuggling)', async () => {
    const smuggled = 'GET /admin HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer attacker\r\n\r\n';
    const before = s.upstream.requests.length;
    const attempts = setup.lanes.flatMap(({ path }) => [
      `GET ${path}/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: content-length\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      `GET ${path}/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`,
      `DELETE ${path}/x HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nConnection: host\r\nContent-Length: 0\r\n\r\n`,
    ]);
    // each on its own connection, all at once: each waits out its connection's 1 s
    const answers = await Promise.all(attempts.map((raw) => rawSocket(port, raw, 1000)));
    for (const r of answers) {
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'bad_request' });
      expect(r.head).toMatch(/^Connection: close\r?$/im); // the connection is not reused after such a request
    }
    await sleep(100);
    expect(s.upstream.requests.slice(before)).toEqual([]);
  });

  it.each(setup.lanes)(
    'through $path: an Upgrade request on a plain route is not upgraded and the upstream sees no Upgrade',
    async ({ path, base }) => {
      // An upgrade that reached the upstream would be its server's 'upgrade' event, not a request.
      const upgradesSeen: string[] = [];
      const onUpgrade = (req: http.IncomingMessage, socket: Duplex) => {
        upgradesSeen.push(req.url ?? '');
        if (s.upstream.server.listenerCount('upgrade') === 1) socket.destroy(); // nobody else will answer it
      };
      s.upstream.server.on('upgrade', onUpgrade);
      try {
        const r = await rawRequest(gateway.url, {
          path: `${path}/ws`,
          headers: withSession({
            Connection: 'Upgrade',
            Upgrade: 'websocket',
            'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
            'Sec-WebSocket-Version': '13',
          }),
        }).catch((e: Error) => ({ status: 0, headers: {}, rawHeaders: [], body: e.message }));
        expect(r.status).not.toBe(101);
        await settle();
        expect(upgradesSeen).toEqual([]);
        const seen = s.upstream.requests.filter((q) => q.url === `${base}/ws`);
        for (const q of seen) {
          expect(q.headers.upgrade).toBeUndefined();
          expect(q.headers.connection ?? '').not.toMatch(/upgrade/i);
        }
      } finally {
        s.upstream.server.off('upgrade', onUpgrade);
      }
    },
  );

  it.each(setup.lanes)('through $path: an upstream Set-Cookie never reaches the browser', async ({ path, base }) => {
    const r = await rawRequest(gateway.url, { path: `${path}/set-cookie`, headers: withSession() });
    expect(r.status).toBe(200);
    expect(s.upstream.last().url).toBe(`${base}/set-cookie`);
    expect(r.headers['set-cookie']).toBeUndefined();
    expect(r.rawHeaders.filter((h) => /^set-cookie$/i.test(h))).toEqual([]);
    // the session still works (nothing overwrote it)
    await gw().get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
  });

  it.each(setup.lanes)(
    'through $path: a response without Cache-Control gets no-store; an upstream policy is kept',
    async ({ path, base }) => {
      const plain = await gw().get(`${path}/status/201`).set(SPA).set('Cookie', cookie);
      expect(plain.status).toBe(201);
      expect(s.upstream.last().url).toBe(`${base}/status/201`);
      expect(plain.headers['cache-control']).toBe('no-store');
      const echo = await gw().get(`${path}/anything`).set(SPA).set('Cookie', cookie);
      expect(echo.headers['cache-control']).toBe('no-store');
      const sse = await rawRequest(gateway.url, { path: `${path}/sse`, headers: withSession() });
      expect(sse.headers['cache-control']).toBe('no-cache');
    },
  );

  it.each(setup.lanes)('through $path: query strings pass through unchanged', async ({ path, base }) => {
    const query = '?a=1&a=2&b=x%20y&c=%2F..%2F&d=%E2%9C%93&e=&f';
    const r = await rawRequest(gateway.url, { path: `${path}/things${query}`, headers: withSession() });
    expect(r.status).toBe(200);
    expect(s.upstream.last().url).toBe(`${base}/things${query}`);
    expect(s.upstream.last().url).not.toContain('access_token');
  });

  it(`through ${main.path}: a streamed 5 MB POST body arrives intact at the upstream`, async () => {
    const size = 5 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: `${main.path}/big-upload`,
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
    expect(s.upstream.last()).toMatchObject({ url: `${main.base}/big-upload`, bodyBytes: size });
  });

  it(`through ${main.path}: SSE, the 3 events stream through, the first one before the upstream has finished its response`, async () => {
    let upstreamFinished = false;
    let upstreamSawIt = false;
    const onUpstream = (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.url !== `${main.base}/sse`) return;
      upstreamSawIt = true;
      res.on('finish', () => (upstreamFinished = true));
    };
    s.upstream.server.on('request', onUpstream);
    try {
      const chunks: Array<{ text: string; upstreamFinished: boolean }> = [];
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.get(
          { host: '127.0.0.1', port, path: `${main.path}/sse`, agent: false, headers: withSession({ Accept: 'text/event-stream' }) },
          (r) => {
            r.setEncoding('utf8');
            r.on('data', (c: string) => chunks.push({ text: c, upstreamFinished }));
            r.on('end', () => resolve(r.statusCode ?? 0));
          },
        );
        req.on('error', reject);
      });
      expect(status).toBe(200);
      expect(upstreamSawIt).toBe(true);
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

  it(`through ${main.path}: Transfer-Encoding: chunked together with Content-Length → 400 from Node and nothing forwarded`, async () => {
    const before = s.upstream.requests.length;
    const body = '5\r\nhello\r\n0\r\n\r\n';
    const r = await rawSocket(
      port,
      `POST ${main.path}/x HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nContent-Type: text/plain\r\n` +
        `Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n${body}` +
        `GET ${main.path}/smuggled HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\n\r\n`,
    );
    expect(r.status).toBe(400);
    await settle();
    expect(s.upstream.requests.length).toBe(before);
    await gw().get('/healthz').expect(200);
  });

  describe('upstream unreachable', () => {
    let dead: { server: ReservedServer; gatehouse: Gatehouse; deadPort: number };
    /** What the unreachable upstream's URLs carry beyond the origin: none of it may show. */
    const hidden = setup.routes ? bases : ['/base'];

    beforeAll(async () => {
      // a port that was just free: nothing listens there
      const tmp = await reserveServer();
      const deadPort = tmp.port;
      await closeServer(tmp);
      const origin = `http://127.0.0.1:${deadPort}`;
      const upstream = setup.routes ? { routes: setup.routes(origin) } : { upstream: `${origin}/base` };
      const server = await reserveServer();
      const gatehouse = await createGatehouse(
        {
          issuer: s.idp.issuer,
          clientId: s.idp.clientId,
          clientSecret: s.idp.clientSecret,
          publicUrl: server.url,
          ...upstream,
          sessionSecret: SESSION_SECRET,
          redisUrl: redisUrl(),
          keyPrefix: s.prefix, // shares the sessions of the gateway above, like a replica
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

    it('→ 502 bad_gateway whose answer names no host, port, base path, error code or stack', async () => {
      for (const { path } of setup.lanes) {
        for (const method of ['GET', 'POST']) {
          const r = await rawRequest(dead.server.url, {
            method,
            path: `${path}/things?q=1`,
            headers: withSession(),
            body: method === 'POST' ? 'x' : undefined,
          });
          expect(r.status).toBe(502);
          expect(JSON.parse(r.body)).toEqual({ error: 'bad_gateway', message: 'The upstream service could not be reached.' });
          const text = JSON.stringify(r.rawHeaders) + r.body;
          for (const bad of ['127.0.0.1', String(dead.deadPort), 'ECONNREFUSED', 'connect', ' at ', 'node_modules', ...hidden, 'Error'])
            expect(text).not.toContain(bad);
        }
      }
    });
  });

  it('every request the upstream received was under a route’s base path', () => {
    expect(s.upstream.requests.length).toBeGreaterThan(5);
    const outside = s.upstream.requests.map((q) => q.url).filter((url) => !bases.some((b) => url.startsWith(`${b}/`)));
    expect(outside).toEqual([]);
  });

  it('no gateway-made error carries a token, and no response has X-Powered-By', async () => {
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

describe('security: health probes', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s?.close());

  it('/healthz → 200 {"status":"ok"}', async () => {
    const r = await request(s.gw.server).get('/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ status: 'ok' });
  });

  it('/readyz → 200 while Redis and the IdP are fine', async () => {
    const r = await request(s.gw.server).get('/readyz');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'ok' });
  });
});
