/**
 * The /api forwarder against upstreams that break HTTP on purpose, written on raw node:net sockets so that
 * nothing normalises what they send. Whatever an upstream answers, or does not, the gateway stays up, the
 * browser gets a clean answer (the upstream's, 502, 504 or 503), the upstream connection is freed, and one
 * user cannot take the upstream connections of the others.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { loginAs } from '../support/login';
import { SPA, startStack, type Instance, type Stack } from '../support/stack';
import { issuedCookie, rawRequest } from '../support/security';
import { waitFor } from '../support/wait';

// ---------- a hostile upstream ----------

interface UpstreamRequest {
  method: string;
  path: string;
  /** body bytes read so far */
  bytes: number;
  remaining: number;
}

/** Answers sent as they are, byte for byte (latin1), once the request has been read. */
const SCRIPTED: Record<string, string> = {
  '/ok': 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}',
  '/phrase-200': 'HTTP/1.1 200 O\x01K\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok',
  '/phrase-404': 'HTTP/1.1 404 Not\x7fFound\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno',
  '/status-099': 'HTTP/1.1 099 Odd\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok',
  '/status-000': 'HTTP/1.1 000 Zero\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok',
  '/switch': 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
  '/204-stray': 'HTTP/1.1 204 No Content\r\nX-Upstream: 1\r\n\r\nstray bytes\r\n\r\n',
  '/304-stray': 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\nhello',
  '/head-stray': 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello',
};

interface HostileUpstream {
  url: string;
  /** `METHOD path` of every request head received, in order */
  heads: string[];
  /** connections still open that have carried a request for `path` */
  openFor(path: string): number;
  close(): Promise<void>;
}

/**
 * A keep-alive HTTP/1.1 server on raw sockets. It reads request heads and Content-Length bodies; `/early`
 * answers as soon as its head arrives (never reading the body first), `/never` and `/hold` never answer,
 * `/sse-gap` streams two events 1.5 s apart, `/upload` answers `{"bytes": n}` once the body is in, the
 * paths in SCRIPTED get their bytes, anything else `/ok`'s.
 */
async function startHostileUpstream(): Promise<HostileUpstream> {
  const carried = new Map<net.Socket, Set<string>>();
  const heads: string[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const send = (socket: net.Socket, text: string) => {
    if (!socket.destroyed) socket.write(Buffer.from(text, 'latin1'));
  };

  const answer = (req: UpstreamRequest, socket: net.Socket) => {
    if (req.path === '/early' || req.path === '/never' || req.path === '/hold') return;
    if (req.path === '/sse-gap') {
      send(socket, 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n');
      send(socket, '9\r\ndata: 1\n\n\r\n');
      const t = setTimeout(() => {
        timers.delete(t);
        send(socket, '9\r\ndata: 2\n\n\r\n0\r\n\r\n');
      }, 1500);
      timers.add(t);
      return;
    }
    if (req.path === '/upload') {
      const body = JSON.stringify({ bytes: req.bytes });
      return send(socket, `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }
    send(socket, SCRIPTED[req.path] ?? SCRIPTED['/ok']!);
  };

  const server = net.createServer((socket) => {
    const paths = new Set<string>();
    carried.set(socket, paths);
    socket.on('close', () => carried.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let current: UpstreamRequest | undefined;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (!current) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.subarray(0, end).toString('latin1');
          buf = buf.subarray(end + 4);
          const [method = '', path = ''] = head.split('\r\n')[0]!.split(' ');
          const length = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0);
          current = { method, path, bytes: 0, remaining: length };
          heads.push(`${method} ${path}`);
          paths.add(path);
          if (path === '/early') send(socket, 'HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nbig');
        }
        const take = Math.min(current.remaining, buf.length);
        buf = buf.subarray(take);
        current.remaining -= take;
        current.bytes += take;
        if (current.remaining > 0) return;
        const done = current;
        current = undefined;
        answer(done, socket);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    heads,
    openFor: (path) => [...carried.values()].filter((p) => p.has(path)).length,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const socket of carried.keys()) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A listener whose thread never accepts: the kernel completes handshakes only until its accept queue
 * (backlog 1) is full, and then drops further connection attempts, so a connect to it stalls.
 */
async function startStalledListener(): Promise<{ port: number; stop(): Promise<void> }> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const net = require('node:net');
     const { parentPort, workerData: flag } = require('node:worker_threads');
     const server = net.createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(flag, 0, 0); // this thread (and its accept loop) sleeps until stop()
       server.close();
     });`,
    { eval: true, workerData: flag },
  );
  const port = await new Promise<number>((resolve) => worker.once('message', resolve));
  // Fill the accept queue: connect until one attempt stalls.
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 10; i++) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    fillers.push(socket);
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      setTimeout(() => resolve(false), 300);
    });
    if (!connected) break;
  }
  return {
    port,
    async stop() {
      for (const s of fillers) s.destroy();
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
      await worker.terminate();
    },
  };
}

// ---------- a raw keep-alive browser connection ----------

interface RawAnswer {
  /** 0 when nothing (whole) came before the deadline */
  status: number;
  statusLine: string;
  head: string;
  headers: Record<string, string>;
  body: string;
}

/** One browser connection to the gateway: requests written as given, answers read off the wire (latin1). */
class Browser {
  private data = '';
  private closed = false;
  readonly socket: net.Socket;

  constructor(url: string) {
    const u = new URL(url);
    this.socket = net.connect(Number(u.port), u.hostname);
    this.socket.on('data', (d: Buffer) => (this.data += d.toString('latin1')));
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => (this.closed = true));
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  /** The next answer (a body framed by Content-Length; none for HEAD, 204 and 304), or status 0 at the deadline. */
  async answer(opts: { head?: boolean; deadlineMs?: number } = {}): Promise<RawAnswer> {
    const until = Date.now() + (opts.deadlineMs ?? 5000);
    for (;;) {
      const end = this.data.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.data.slice(0, end);
        const [statusLine = '', ...lines] = head.split('\r\n');
        const headers: Record<string, string> = {};
        for (const line of lines) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim();
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0);
        const length = opts.head || status === 204 || status === 304 ? 0 : Number(headers['content-length'] ?? 0);
        if (this.data.length >= end + 4 + length) {
          const body = this.data.slice(end + 4, end + 4 + length);
          this.data = this.data.slice(end + 4 + length);
          return { status, statusLine, head, headers, body };
        }
      }
      if (this.closed || Date.now() > until) return { status: 0, statusLine: '', head: this.data, headers: {}, body: '' };
      await sleep(10);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The value of one series in Prometheus text format (`name{labels} value`), or undefined. */
function metric(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

// ---------- the tests ----------

describe('the /api forwarder against a hostile upstream', () => {
  let s: Stack;
  let up: HostileUpstream;
  /** upstream timeouts of 1 s */
  let gw: Instance;
  let cookie: string;
  let otherCookie: string;

  beforeAll(async () => {
    up = await startHostileUpstream();
    s = await startStack();
    gw = await s.addInstance({ upstream: up.url, upstreamTimeoutSeconds: 1, upstreamConnectTimeoutSeconds: 1 });
    // Instances share Redis and the key prefix: a session is valid on every one of them.
    cookie = `gatehouse=${issuedCookie(await loginAs(gw.agent(), s.idp, 'hostile-user'), 'gatehouse').value}`;
    otherCookie = `gatehouse=${issuedCookie(await loginAs(gw.agent(), s.idp, 'other-user'), 'gatehouse').value}`;
  });
  afterAll(async () => {
    await s?.close();
    await up?.close();
  });

  const get = (path: string, c = cookie, method = 'GET') =>
    `${method} /api${path} HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${c}\r\n\r\n`;
  /** One request on a fresh connection. */
  async function ask(inst: Instance, path: string, opts: { method?: string; c?: string; deadlineMs?: number } = {}): Promise<RawAnswer> {
    const b = new Browser(inst.url);
    try {
      b.write(get(path, opts.c, opts.method));
      return await b.answer({ head: opts.method === 'HEAD', deadlineMs: opts.deadlineMs });
    } finally {
      b.close();
    }
  }
  const scrape = async (inst: Instance) => (await request(inst.gatehouse.adminApp).get('/metrics').expect(200)).text;
  const stillServing = async (inst: Instance) => {
    await request(inst.server).get('/healthz').expect(200);
    expect((await ask(inst, '/ok')).body).toBe('{"ok":true}');
    await request(inst.server).get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
  };

  describe('a malformed status line neither crashes nor wedges the gateway', () => {
    it.each([
      ['/phrase-200', [200, 502]],
      ['/phrase-404', [404, 502]],
      ['/status-099', [502]],
      ['/status-000', [502]],
    ])('%s: answered with a clean status line (the status without the bad phrase, or 502 bad_gateway)', async (path, allowed) => {
      const r = await ask(gw, path);
      expect(allowed).toContain(r.status);
      // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
      expect(r.statusLine).toMatch(/^HTTP\/1\.1 \d{3} [\t\x20-\x7e\x80-\xff]*$/);
      if (r.status === 502)
        expect(JSON.parse(r.body)).toEqual({ error: 'bad_gateway', message: 'The upstream service could not be reached.' });
      await stillServing(gw);
    });

    it('every malformed answer is logged and counted', async () => {
      const before = metric(await scrape(gw), 'gatehouse_upstream_errors_total{kind="malformed"}') ?? 0;
      const logged = s.logs.length;
      for (const path of ['/phrase-200', '/status-099']) await ask(gw, path);
      expect(metric(await scrape(gw), 'gatehouse_upstream_errors_total{kind="malformed"}')).toBe(before + 2);
      expect(s.logs.slice(logged).filter((l) => /"kind":"malformed"/.test(l))).toHaveLength(2);
    });
  });

  it('an upstream 101 Switching Protocols to a request that asked for no upgrade → 502 bad_gateway at once', async () => {
    // The upstream timeout here is 1 s: an answer at all, and a 502 rather than a 504, is what the test asks.
    const r = await ask(gw, '/switch', { deadlineMs: 3000 });
    expect(r.status).toBe(502);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'bad_gateway' });
    await stillServing(gw);
  });

  it.each([
    ['GET', '/204-stray', 204, 'No Content', 'x-upstream'],
    ['GET', '/304-stray', 304, 'Not Modified', 'etag'],
    ['HEAD', '/head-stray', 200, 'OK', 'content-type'],
  ])(
    'an upstream %s %s answer followed by stray bytes reaches the browser as a clean %i, and its connection goes on serving',
    async (method, path, status, phrase, upstreamHeader) => {
      const b = new Browser(gw.url);
      try {
        b.write(get(path, cookie, method));
        const r = await b.answer({ head: method === 'HEAD' });
        expect(r.statusLine).toBe(`HTTP/1.1 ${status} ${phrase}`);
        expect(r.headers[upstreamHeader]).toBeDefined();
        b.write(get('/ok'));
        const next = await b.answer();
        expect([next.status, next.body]).toEqual([200, '{"ok":true}']);
      } finally {
        b.close();
      }
    },
  );

  describe('upstream timeouts', () => {
    it('an upstream that accepts and never answers → 504 upstream_timeout, and the session is kept', async () => {
      const r = await ask(gw, '/never', { deadlineMs: 8000 });
      expect(r.status).toBe(504);
      expect(JSON.parse(r.body)).toEqual({
        error: 'upstream_timeout',
        message: 'The upstream service did not answer in time. Retry shortly.',
      });
      expect(metric(await scrape(gw), 'gatehouse_upstream_errors_total{kind="response_timeout"}')).toBeGreaterThanOrEqual(1);
      await stillServing(gw);
    });

    it('an upstream that cannot be connected to → 504 upstream_timeout after the connect timeout', async () => {
      const stalled = await startStalledListener();
      try {
        const inst = await s.addInstance({ upstream: `http://127.0.0.1:${stalled.port}`, upstreamConnectTimeoutSeconds: 1 });
        const r = await ask(inst, '/x', { deadlineMs: 8000 });
        expect(r.status).toBe(504);
        expect(JSON.parse(r.body)).toMatchObject({ error: 'upstream_timeout' });
        expect(metric(await scrape(inst), 'gatehouse_upstream_errors_total{kind="connect_timeout"}')).toBe(1);
        await request(inst.server).get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);
      } finally {
        await stalled.stop();
      }
    });

    it('a streaming answer (SSE) is never cut by the upstream timeout, even across a silence longer than it', async () => {
      const r = await rawRequest(gw.url, { path: '/api/sse-gap', headers: { ...SPA, Cookie: cookie, Accept: 'text/event-stream' } });
      expect(r.status).toBe(200);
      expect(r.body).toBe('data: 1\n\ndata: 2\n\n');
    });

    it('a slow upload whose bytes keep coming is not cut by the upstream timeout', async () => {
      const b = new Browser(gw.url);
      try {
        const piece = Buffer.alloc(256, 'u');
        b.write(`POST /api/upload HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nContent-Length: ${piece.length * 6}\r\n\r\n`);
        for (let i = 0; i < 6; i++) {
          b.write(piece);
          await sleep(400); // 2.4 s in all, more than the 1 s timeout; never 1 s without a byte
        }
        const r = await b.answer();
        expect([r.status, r.body]).toEqual([200, JSON.stringify({ bytes: piece.length * 6 })]);
      } finally {
        b.close();
      }
    });
  });

  it('an upstream that answers before reading the request body gets its connection back, not held open for ever', async () => {
    const body = Buffer.alloc(4096, 'b');
    const browsers: Browser[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const b = new Browser(gw.url);
        browsers.push(b);
        b.write(`POST /api/early HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\nCookie: ${cookie}\r\nContent-Length: ${body.length}\r\n\r\n`);
        b.write(body.subarray(0, 256));
        const r = await b.answer();
        expect([r.status, r.body]).toEqual([413, 'big']);
        b.write(body.subarray(256)); // the browser finishes its request, and keeps its connection
      }
      // Closed, or reused: six early answers never hold six upstream connections.
      await waitFor('the early answers’ upstream connections to close', () => up.openFor('/early') <= 1, 3000);
      await stillServing(gw);
    } finally {
      for (const b of browsers) b.close();
    }
  });

  describe('one session cannot take the upstream connections of the others', () => {
    let busy: Instance;
    beforeAll(async () => {
      busy = await s.addInstance({ upstream: up.url, upstreamSocketsPerSession: 4 });
    });

    it('past its bound of requests in flight a session gets 503 upstream_busy with Retry-After, and another session is served', async () => {
      const holding: Browser[] = [];
      try {
        const held = up.heads.filter((h) => h === 'GET /hold').length;
        for (let i = 0; i < 4; i++) {
          const b = new Browser(busy.url);
          b.write(get('/hold'));
          holding.push(b);
        }
        await waitFor(
          'the four held requests to reach the upstream',
          () => up.heads.filter((h) => h === 'GET /hold').length === held + 4,
          3000,
        );

        const refused = await ask(busy, '/ok');
        expect(refused.status).toBe(503);
        expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
        expect(JSON.parse(refused.body)).toEqual({
          error: 'upstream_busy',
          message: 'Too many requests of this session are in progress upstream. Retry shortly.',
        });
        expect(metric(await scrape(busy), 'gatehouse_upstream_busy_total')).toBe(1);

        const other = await ask(busy, '/ok', { c: otherCookie });
        expect([other.status, other.body]).toEqual([200, '{"ok":true}']);
      } finally {
        for (const b of holding) b.close();
      }
      // Its requests done (here: abandoned), the session is served again.
      let again: RawAnswer | undefined;
      for (let i = 0; i < 20 && again?.status !== 200; i++) {
        again = await ask(busy, '/ok');
        if (again.status !== 200) await sleep(100);
      }
      expect(again?.status).toBe(200);
    });
  });
});
