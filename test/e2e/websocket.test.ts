/**
 * WebSocket routes against real peers: the test IdP (oidc-provider), Redis, and an upstream WebSocket server
 * (`ws`). The sockets live on replicas other than the one where their session ends, so every close below
 * travels through the session-change announcements.
 */
import type http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import WebSocket from 'ws';
import type { RouteOptions } from '../../src/config/routes';
import { idpAgent, idpLogout, loginAs } from '../support/login';
import { startStack, SPA, type Instance, type Stack } from '../support/stack';
import { issuedCookie } from '../support/security';
import { waitFor } from '../support/wait';

const ADMIN_TOKEN = 'admin-token-of-the-websocket-test-0123456789';

interface Opened {
  ws: WebSocket;
  /** The gateway's 101, as the browser got it. */
  answer: http.IncomingMessage;
  messages: Array<string | Buffer>;
  closed: Promise<{ code: number; reason: string; at: number }>;
}
interface Refused {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function wsUrl(inst: Instance, path: string): string {
  return `${inst.url.replace(/^http/, 'ws')}${path}`;
}

/** Opens a WebSocket as a browser would (Origin, the session cookie); rejects with what refused it. */
function connect(inst: Instance, path: string, o: { cookie?: string; origin?: string | null } = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(inst, path), {
      ...(o.origin !== null && { origin: o.origin ?? inst.gatehouse.config.publicOrigin }),
      headers: o.cookie ? { Cookie: o.cookie } : {},
      maxPayload: 64 * 1024 * 1024,
    });
    const messages: Array<string | Buffer> = [];
    let answer: http.IncomingMessage | undefined;
    ws.on('upgrade', (res) => (answer = res));
    ws.on('message', (data, isBinary) => messages.push(isBinary ? (data as Buffer) : (data as Buffer).toString('utf8')));
    const closed = new Promise<{ code: number; reason: string; at: number }>((r) =>
      ws.on('close', (code, reason) => r({ code, reason: reason.toString(), at: Date.now() })),
    );
    ws.on('open', () => resolve({ ws, answer: answer!, messages, closed }));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        reject(Object.assign(new Error(`refused ${res.statusCode}`), { refused: { status: res.statusCode!, headers: res.headers, body } })),
      );
    });
    ws.on('error', (err) => reject(err));
  });
}

async function refusal(p: Promise<Opened>): Promise<Refused> {
  try {
    const opened = await p;
    opened.ws.terminate();
    throw new Error('the upgrade was accepted');
  } catch (err) {
    const refused = (err as { refused?: Refused }).refused;
    if (!refused) throw err;
    return refused;
  }
}

async function nextMessage(o: Opened, count: number): Promise<void> {
  await waitFor(`message ${count}`, () => o.messages.length >= count, 5000, 10);
}

describe('WebSockets through the gateway', () => {
  let s: Stack;
  /** Two replicas with WebSocket routes, sharing the first one's origin (so its cookie and Origin). */
  let a: Instance;
  let b: Instance;
  const routes = (upstream: string): RouteOptions[] => [
    { path: '/api', upstream },
    { path: '/api/live', upstream: `${upstream}/ws-base`, websocket: true, timeoutSeconds: 1 },
    { path: '/api/public-live', upstream, websocket: true, token: 'none' },
  ];

  beforeAll(async () => {
    s = await startStack({ backchannel: true, gateway: { adminToken: ADMIN_TOKEN, metricsPort: 9465 } });
    a = await s.addInstance({ publicUrl: s.gw.url, routes: JSON.stringify(routes(s.upstream.url)), websocketsPerSession: 32 });
    b = await s.addInstance({ publicUrl: s.gw.url, routes: JSON.stringify(routes(s.upstream.url)) });
  });
  afterAll(() => s.close());

  /** Logs `sub` in (through the first replica) and returns its session cookie as a Cookie header. */
  const login = async (sub: string, jar?: ReturnType<typeof idpAgent>): Promise<string> => {
    const cb = await loginAs(s.gw.agent(), s.idp, sub, jar ? { idpAgent: jar } : undefined);
    return `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  };

  describe('before the upgrade: refused with a plain HTTP answer, nothing sent upstream', () => {
    let cookie: string;
    beforeAll(async () => {
      cookie = await login('ws-refused');
    });

    it.each([
      ['missing', null],
      ['foreign', 'https://evil.example'],
      ['null', 'null'],
      ['same host, other scheme', 'https://127.0.0.1'],
    ])('Origin %s → 403 csrf (cross-site WebSocket hijacking)', async (_name, origin) => {
      const before = s.upstream.upgrades.length;
      const r = await refusal(connect(a, '/api/live/ws/echo', { cookie, origin }));
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'csrf' });
      expect(s.upstream.upgrades.length).toBe(before);
    });

    it('no session → 401 unauthenticated', async () => {
      const before = s.upstream.upgrades.length;
      const r = await refusal(connect(a, '/api/live/ws/echo'));
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'unauthenticated' });
      expect(s.upstream.upgrades.length).toBe(before);
    });

    it('a route without websocket, a path no route matches, and a path outside /api → 404 not_found', async () => {
      const before = s.upstream.upgrades.length;
      for (const path of ['/api/ws/echo', '/auth/session', '/elsewhere']) {
        const r = await refusal(connect(a, path, { cookie }));
        expect(r.status).toBe(404);
        expect(JSON.parse(r.body)).toMatchObject({ error: 'not_found' });
      }
      expect(s.upstream.upgrades.length).toBe(before);
    });

    it('the path guard applies: a path that would leave the route’s base → 400', async () => {
      const before = s.upstream.upgrades.length;
      // (a URL parser would resolve `..` and `%2e%2e` before sending: these it keeps)
      for (const path of ['/api/live/..%2fx', '/api/live/%5c..%5cx', '/api/live/x%00y']) {
        const r = await refusal(connect(a, path, { cookie }));
        expect(r.status).toBe(400);
      }
      expect(s.upstream.upgrades.length).toBe(before);
    });

    it('an upgrade to another protocol on a WebSocket route → 400, and the connection is closed', async () => {
      const port = Number(new URL(a.url).port);
      const answer = await new Promise<string>((resolve) => {
        const sock = net.connect(port, '127.0.0.1', () =>
          sock.write(
            `GET /api/live/ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nOrigin: ${a.gatehouse.config.publicOrigin}\r\nCookie: ${cookie}\r\n\r\n`,
          ),
        );
        let got = '';
        sock.on('data', (c: Buffer) => (got += c.toString()));
        sock.on('close', () => resolve(got));
      });
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    });

    it('the upstream refusing the upgrade: its status passes, its Set-Cookie does not', async () => {
      const r = await refusal(connect(a, '/api/live/ws/refuse', { cookie }));
      expect(r.status).toBe(403);
      expect(r.headers['set-cookie']).toBeUndefined();
    });

    it('an upstream that never answers the handshake → 504 upstream_timeout', async () => {
      const r = await refusal(connect(a, '/api/live/ws/silent', { cookie }));
      expect(r.status).toBe(504);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'upstream_timeout' });
    });

    it('more sockets than a session may have on a replica → 429 too_many_sockets', async () => {
      const own = await login('ws-limit');
      const open = await Promise.all(Array.from({ length: 8 }, () => connect(b, '/api/live/ws/echo', { cookie: own })));
      const r = await refusal(connect(b, '/api/live/ws/echo', { cookie: own }));
      expect(r.status).toBe(429);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'too_many_sockets' });
      // another replica counts its own
      const elsewhere = await connect(a, '/api/live/ws/echo', { cookie: own });
      for (const o of [...open, elsewhere]) o.ws.close();
    });
  });

  describe('an open socket', () => {
    it('the upstream sees exactly one bearer, no cookie, the handshake fields, and the route’s base path', async () => {
      const cookie = await login('ws-headers');
      const before = s.upstream.upgrades.length;
      const o = await connect(a, '/api/live/ws/echo?room=1', { cookie });
      const up = s.upstream.upgrades[before]!;
      expect(up.url).toBe('/ws-base/ws/echo?room=1');
      const names = up.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names.filter((n) => n === 'authorization')).toHaveLength(1);
      expect(up.headers.authorization).toMatch(/^Bearer \S+$/);
      expect(up.headers.cookie).toBeUndefined();
      expect(up.headers.upgrade).toBe('websocket');
      expect(up.headers.connection).toMatch(/upgrade/i);
      expect(up.headers['sec-websocket-key']).toBeDefined();
      expect(up.headers['sec-websocket-version']).toBe('13');
      await nextMessage(o, 1);
      expect(o.messages[0]).toBe(`hello ${up.headers.authorization}`);
      // The upstream's 101 carried a Set-Cookie: the browser's did not.
      expect(o.answer.headers['set-cookie']).toBeUndefined();
      o.ws.close();
    });

    it('carries text and binary messages both ways, 1 MiB ones too', async () => {
      const cookie = await login('ws-messages');
      const o = await connect(a, '/api/live/ws/echo', { cookie });
      await nextMessage(o, 1);
      const big = Buffer.alloc(1024 * 1024, 7);
      big[12345] = 42;
      o.ws.send('text é');
      o.ws.send(Buffer.from([0, 1, 2, 255]));
      o.ws.send(big);
      await nextMessage(o, 4);
      expect(o.messages[1]).toBe('text é');
      expect(o.messages[2]).toEqual(Buffer.from([0, 1, 2, 255]));
      expect(Buffer.compare(o.messages[3] as Buffer, big)).toBe(0);
      o.ws.close();
      expect((await o.closed).code).toBe(1005);
    });

    it('a message over the limit closes the socket with 1009 and the upstream never gets it', async () => {
      const cookie = await login('ws-too-big');
      const o = await connect(a, '/api/live/ws/echo', { cookie });
      await nextMessage(o, 1);
      o.ws.send(Buffer.alloc(5 * 1024 * 1024));
      const closed = await o.closed;
      expect(closed.code).toBe(1009);
      expect(o.messages).toHaveLength(1);
    });

    it('a `none` route needs no session and sends no Authorization', async () => {
      const before = s.upstream.upgrades.length;
      const o = await connect(a, '/api/public-live/ws/echo');
      expect(s.upstream.upgrades[before]!.headers.authorization).toBeUndefined();
      await nextMessage(o, 1);
      expect(o.messages[0]).toBe('hello ');
      o.ws.close();
    });
  });

  describe('the socket lives with its session: closed within a second on another replica, 1008 session_ended', () => {
    const expectEnded = async (o: Opened, since: number) => {
      const closed = await Promise.race([o.closed, sleep(3000).then(() => undefined)]);
      expect(closed).toMatchObject({ code: 1008, reason: 'session_ended' });
      expect(closed!.at - since).toBeLessThan(1000);
    };

    it('logout in another tab, on another replica', async () => {
      const cookie = await login('ws-logout');
      const o = await connect(a, '/api/live/ws/ticker?ms=20', { cookie });
      await nextMessage(o, 3);
      const t = Date.now();
      await request(b.server).post('/auth/logout').set(SPA).set('Cookie', cookie).expect(200);
      await expectEnded(o, t);
    });

    it('the kill switch', async () => {
      const cookie = await login('ws-kill');
      const o = await connect(a, '/api/live/ws/echo', { cookie });
      const t = Date.now();
      await request(s.gw.gatehouse.adminApp)
        .post('/admin/sessions/revoke')
        .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
        .send({ sub: 'ws-kill' })
        .expect(200);
      await expectEnded(o, t);
    });

    it('back-channel logout from the IdP', async () => {
      const jar = idpAgent(s.idp);
      const cookie = await login('ws-backchannel', jar);
      const o = await connect(b, '/api/live/ws/echo', { cookie });
      const t = Date.now();
      await idpLogout(jar, s.idp, `${s.idp.issuer}/session/end`);
      await expectEnded(o, t);
    });

    it('invalid_grant: a grant revoked at the IdP is noticed by the socket’s own refresh, with no HTTP call', async () => {
      const cookie = await login('ws-revoked');
      const o = await connect(a, '/api/live/ws/echo', { cookie });
      await s.idp.revoke('ws-revoked');
      // The access token (2 s) is refreshed ahead of its end while the socket is open: the refresh gets invalid_grant.
      const closed = await Promise.race([o.closed, sleep(6000).then(() => undefined)]);
      expect(closed).toMatchObject({ code: 1008, reason: 'session_ended' });
      await request(b.server).get('/auth/session').set(SPA).set('Cookie', cookie).expect(401);
    });

    it('session changes that cannot be received close the sockets (1011) rather than leave them unchecked', async () => {
      const cookie = await login('ws-unchecked');
      const o = await connect(a, '/api/live/ws/echo', { cookie });
      // Cut every subscriber connection of this Redis: the replicas lose their subscription and make it again.
      await s.redis!.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      const closed = await Promise.race([o.closed, sleep(3000).then(() => undefined)]);
      expect(closed).toMatchObject({ code: 1011 });
      // Once subscribed again, sockets open as before.
      let again: Opened | undefined;
      for (let i = 0; i < 50 && !again; i++)
        again = await connect(a, '/api/live/ws/echo', { cookie }).catch(() => sleep(100).then(() => undefined));
      expect(again).toBeDefined();
      again!.ws.close();
    });
  });

  it('refresh before the upgrade when the token is due: 20 concurrent upgrades, one refresh grant', async () => {
    const cookie = await login('ws-storm');
    await s.idp.waitForAccessTokenExpiry();
    const before = s.idp.refreshSucceeded;
    const opened = await Promise.all(Array.from({ length: 20 }, () => connect(a, '/api/live/ws/echo', { cookie })));
    for (const o of opened) await nextMessage(o, 1);
    expect(s.idp.refreshSucceeded - before).toBe(1);
    // every socket got the refreshed token
    expect(new Set(opened.map((o) => o.messages[0])).size).toBe(1);
    for (const o of opened) o.ws.close();
  });

  it('data from the browser is activity: the idle window slides while messages flow, and a silent socket lets its session end', async () => {
    const idle = await s.addInstance({ publicUrl: s.gw.url, routes: JSON.stringify(routes(s.upstream.url)), sessionIdleSeconds: 3 });
    const cb = await loginAs(idle.agent(), s.idp, 'ws-idle');
    const cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
    const talking = await connect(idle, '/api/live/ws/echo', { cookie });
    const start = Date.now();
    while (Date.now() - start < 5000) {
      talking.ws.send('ping');
      await sleep(250);
    }
    await request(idle.server).get('/auth/session').set(SPA).set('Cookie', cookie).expect(200);

    // Messages from the upstream only (a ticker): no activity of the browser's, so the session ends at its idle end.
    const listening = await connect(idle, '/api/live/ws/ticker?ms=100', { cookie });
    talking.ws.close();
    const closed = await Promise.race([listening.closed, sleep(6000).then(() => undefined)]);
    expect(closed).toMatchObject({ code: 1008, reason: 'session_ended' });
    expect(closed!.at - start - 5000).toBeLessThan(3000 + 1000);
  });

  it('graceful shutdown closes open sockets with 1001', async () => {
    const stopping = await s.addInstance({ publicUrl: s.gw.url, routes: JSON.stringify(routes(s.upstream.url)) });
    const cookie = await login('ws-shutdown');
    const o = await connect(stopping, '/api/live/ws/echo', { cookie });
    const closesBefore = s.upstream.closes.length;
    await stopping.gatehouse.closeSockets();
    expect((await o.closed).code).toBe(1001);
    await waitFor('the upstream socket to close', () => s.upstream.closes.length > closesBefore, 5000);
    expect(s.upstream.closes.at(-1)).toBe(1001);
    // and no new socket opens
    const r = await refusal(connect(stopping, '/api/live/ws/echo', { cookie }));
    expect(r.status).toBe(503);
  });
});
