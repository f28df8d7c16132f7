/**
 * gatehouse-bff/client's openSocket against a real WebSocket peer: Node's own WebSocket (the browser's API)
 * connects to a `ws` server on the loopback that closes as Gatehouse does (1008 session_ended, 1001, 1011),
 * cuts the connection without a close frame (1006), or refuses the handshake. The fetch for /auth/session is
 * injected, as in client.test.ts; `location` is set to a page of the server's origin.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { createGatehouseClient, type GatehouseClientOptions, type GatehouseSocketOptions } from '../../client/index';
import { waitFor } from '../support/wait';

interface Seen {
  /** What the server saw of each handshake: its target and sub-protocols. */
  handshakes: Array<{ url: string; protocol: string | undefined }>;
  sessionChecks: Array<{ url: string; init: RequestInit }>;
  unauthenticated: Array<{ reason: string; status: number; body: unknown }>;
  navigations: string[];
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

let server: http.Server;
let wss: WebSocketServer;
let origin: string;
const seen: Seen = { handshakes: [], sessionChecks: [], unauthenticated: [], navigations: [] };

/** The peer: the path says what it does once the socket is open (or instead of opening it). */
beforeAll(async () => {
  wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => [...protocols][0] ?? false });
  server = http.createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    seen.handshakes.push({ url: req.url ?? '', protocol: req.headers['sec-websocket-protocol'] });
    const path = new URL(req.url ?? '/', 'http://peer').pathname;
    if (path === '/api/refused') return void socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    wss.handleUpgrade(req, socket, head, (ws) => {
      const [, what, code, reason] = path.split('/');
      if (what === 'echo') ws.on('message', (data) => ws.send(`echo ${(data as Buffer).toString()}`));
      else if (what === 'close') ws.close(Number(code), reason ?? '');
      else if (what === 'cut') socket.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  for (const ws of wss.clients) ws.terminate();
  return new Promise<void>((r) => server.close(() => r()));
});

beforeEach(() => {
  seen.handshakes = [];
  seen.sessionChecks = [];
  seen.unauthenticated = [];
  seen.navigations = [];
  setLocation(`${origin}/orders/7?tab=items#line-3`);
});
afterEach(() => {
  delete (globalThis as { location?: unknown }).location;
});

function setLocation(href: string): void {
  const url = new URL(href);
  const loc = { href, pathname: url.pathname, search: url.search, hash: url.hash, assign: (u: string) => seen.navigations.push(u) };
  Object.defineProperty(globalThis, 'location', { value: loc, configurable: true, writable: true });
}

/** A client whose /auth/session answers `session` (a Response, or an Error to throw: offline). */
function client(session: Response | Error = json(200, { authenticated: true }), options: GatehouseClientOptions = {}) {
  return createGatehouseClient({
    fetch: async (input, init = {}) => {
      seen.sessionChecks.push({ url: input as string, init });
      if (session instanceof Error) throw session;
      return session;
    },
    onUnauthenticated: (reason, response) => {
      seen.unauthenticated.push({ reason, status: response.status, body: undefined });
      void response.json().then((body: unknown) => (seen.unauthenticated.at(-1)!.body = body));
    },
    sleep: async () => undefined,
    ...options,
  });
}

/**
 * Opens `path` (sending `send` once open) and resolves at its close, after the session check: the close,
 * sessionEnded and the messages. The first message closes the socket (1000 done).
 */
function run(c: ReturnType<typeof createGatehouseClient>, path: string, o: GatehouseSocketOptions = {}, send?: string) {
  return new Promise<{ code: number; reason: string; ended: boolean; opened: boolean; messages: string[] }>((resolve) => {
    const messages: string[] = [];
    let opened = false;
    const ws = c.openSocket(path, {
      ...o,
      onOpen: () => {
        opened = true;
        if (send !== undefined) ws.send(send);
      },
      onMessage: (event) => {
        messages.push(String(event.data));
        ws.close(1000, 'done');
      },
      onClose: (event, ended) => resolve({ code: event.code, reason: event.reason, ended, opened, messages }),
    });
  });
}

/** The handler's Response body is read asynchronously: waits for it. */
async function handlerBodies(): Promise<unknown[]> {
  await waitFor('the handler to read the bodies', () => seen.unauthenticated.every((u) => u.body !== undefined), 1000, 5);
  return seen.unauthenticated.map((u) => u.body);
}

describe('gatehouse-bff/client openSocket', () => {
  it('opens the same-origin ws: URL of a path, with its query and sub-protocols, and passes messages on', async () => {
    const c = client();
    const first = await new Promise((resolve) => {
      const ws = c.openSocket('/echo?room=7#ignored', {
        protocols: ['chat.v1'],
        onOpen: () => ws.close(),
        onClose: (event, ended) => resolve({ url: ws.url, protocol: ws.protocol, code: event.code, ended }),
      });
    });
    expect(first).toEqual({ url: `${origin.replace(/^http/, 'ws')}/echo?room=7`, protocol: 'chat.v1', code: 1005, ended: false });
    const r = await run(c, '/echo?room=8', { protocols: 'chat.v2' }, 'ping');
    expect(r).toMatchObject({ opened: true, code: 1000, reason: 'done', ended: false });
    expect(r.messages[0]).toBe('echo ping');
    expect(seen.handshakes.at(-1)).toEqual({ url: '/echo?room=8', protocol: 'chat.v2' });
    expect(seen.sessionChecks).toEqual([]);
  });

  it('resolves a relative path against the page, and uses wss: on an https page', () => {
    const urls: string[] = [];
    class Recorder {
      constructor(url: string) {
        urls.push(url);
      }
      addEventListener(): void {}
    }
    setLocation('https://app.example/shop/cart?x=1');
    const c = client(undefined, { WebSocket: Recorder as unknown as GatehouseClientOptions['WebSocket'] });
    c.openSocket('/api/live/feed');
    c.openSocket('live?since=3');
    expect(urls).toEqual(['wss://app.example/api/live/feed', 'wss://app.example/shop/live?since=3']);
  });

  it('refuses a URL of another origin', () => {
    const c = client();
    expect(() => c.openSocket('https://evil.example/api/live')).toThrow(/this page's origin, not https:\/\/evil\.example/);
    expect(() => c.openSocket('//evil.example/api/live')).toThrow(/origin/);
    expect(() => c.openSocket(`${origin.replace(/^http/, 'ws')}/api/live`)).toThrow(/origin/);
    expect(seen.handshakes).toEqual([]);
  });

  it('1008 session_ended: calls the unauthenticated handler at once with a 401 unauthenticated, asks nothing, never reopens', async () => {
    const r = await run(client(), '/close/1008/session_ended');
    expect(r).toMatchObject({ code: 1008, reason: 'session_ended', ended: true });
    expect(seen.unauthenticated).toMatchObject([{ reason: 'unauthenticated', status: 401 }]);
    expect(await handlerBodies()).toMatchObject([{ error: 'unauthenticated' }]);
    expect(seen.sessionChecks).toEqual([]);
    expect(seen.handshakes).toHaveLength(1);
  });

  it('1008 session_ended with the default handler: navigates to the login, back to the current page', async () => {
    const c = createGatehouseClient({ fetch: () => Promise.reject(new Error('no fetch expected')) });
    const r = await run(c, '/close/1008/session_ended');
    expect(r.ended).toBe(true);
    expect(seen.navigations).toEqual([`/auth/login?returnTo=${encodeURIComponent('/orders/7?tab=items#line-3')}`]);
  });

  it('a socket’s own onUnauthenticated replaces the client’s', async () => {
    const mine: string[] = [];
    const r = await run(client(), '/close/1008/session_ended', {
      onUnauthenticated: (reason, res) => mine.push(`${reason} ${res.status}`),
    });
    expect(r.ended).toBe(true);
    expect(mine).toEqual(['unauthenticated 401']);
    expect(seen.unauthenticated).toEqual([]);
  });

  it.each([
    [1008, 'policy'],
    [1001, 'shutdown'],
    [1011, 'session_unchecked'],
    [1009, 'message_too_big'],
    [1000, 'done'],
  ])('%i %s: leaves the session alone (no handler, no check), sessionEnded false', async (code, reason) => {
    const r = await run(client(), `/close/${code}/${reason}`);
    expect(r).toMatchObject({ code, reason, ended: false });
    expect(seen.unauthenticated).toEqual([]);
    expect(seen.sessionChecks).toEqual([]);
  });

  it('1006 (cut without a close frame) and the session is gone: asks /auth/session with X-CSRF, then the handler', async () => {
    const r = await run(client(json(401, { error: 'unauthenticated', message: 'x' })), '/cut');
    expect(r).toMatchObject({ opened: true, code: 1006, ended: true });
    expect(seen.sessionChecks).toHaveLength(1);
    const check = seen.sessionChecks[0]!;
    expect(check.url).toBe('/auth/session');
    expect(new Headers(check.init.headers).get('X-CSRF')).toBe('1');
    expect(check.init.credentials).toBe('same-origin');
    expect(seen.unauthenticated).toMatchObject([{ reason: 'unauthenticated', status: 401 }]);
    expect(await handlerBodies()).toEqual([{ error: 'unauthenticated', message: 'x' }]); // the real answer, still readable
  });

  it('1006 with basePath: the check goes to <basePath>/auth/session; a session_expired answer is passed on as such', async () => {
    const r = await run(client(json(401, { error: 'session_expired' }), { basePath: '/bff/' }), '/cut');
    expect(r.ended).toBe(true);
    expect(seen.sessionChecks.map((c) => c.url)).toEqual(['/bff/auth/session']);
    expect(seen.unauthenticated).toMatchObject([{ reason: 'session_expired', status: 401 }]);
  });

  it('1006 from a refused handshake (the browser hides its 401): the check finds the session gone', async () => {
    const r = await run(client(json(401, { error: 'unauthenticated' })), '/api/refused');
    expect(r).toMatchObject({ opened: false, code: 1006, ended: true });
    expect(seen.unauthenticated).toMatchObject([{ reason: 'unauthenticated' }]);
  });

  it('1006 while the session is alive: no handler, sessionEnded false (opening again is fine)', async () => {
    const r = await run(client(json(200, { authenticated: true })), '/cut');
    expect(r).toMatchObject({ code: 1006, ended: false });
    expect(seen.sessionChecks).toHaveLength(1);
    expect(seen.unauthenticated).toEqual([]);
  });

  it('1006 while the gateway cannot be asked (offline): no handler, sessionEnded false', async () => {
    const r = await run(client(new TypeError('Failed to fetch')), '/cut');
    expect(r).toMatchObject({ code: 1006, ended: false });
    expect(seen.unauthenticated).toEqual([]);
  });

  it('1006 and the check answers 503: retried like any call, then the session is found gone', async () => {
    const answers = [json(503, { error: 'session_store_unavailable' }), json(401, { error: 'unauthenticated' })];
    const c = client(undefined, {
      fetch: async (input) => (seen.sessionChecks.push({ url: input as string, init: {} }), answers.shift()!),
    });
    const r = await run(c, '/cut');
    expect(r.ended).toBe(true);
    expect(seen.sessionChecks).toHaveLength(2);
  });

  it('says so when there is no WebSocket', () => {
    const c = client(undefined, { WebSocket: undefined });
    const saved = globalThis.WebSocket;
    try {
      (globalThis as { WebSocket?: unknown }).WebSocket = undefined;
      expect(() => c.openSocket('/api/live')).toThrow(/no `WebSocket` here/);
    } finally {
      globalThis.WebSocket = saved;
    }
  });
});
