/**
 * Graceful shutdown of the built gateway (dist/src/main.js) as a real process: SIGTERM turns /readyz 503,
 * stops accepting, lets requests in flight finish and streams go on until GATEHOUSE_SHUTDOWN_SECONDS, then exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { Redis } from 'ioredis';
import { buildOnce } from '../support/build';
import { startTestIdp, type TestIdp } from '../support/idp';
import { startUpstream, type TestUpstream } from '../support/upstream';
import { findFreePort } from '../support/redisServer';
import { redisUrl, SESSION_SECRET, SPA } from '../support/stack';
import { loginAs, uniquePrefix, type LoginResponse } from '../support/login';
import { waitFor } from '../support/wait';

const main = join(__dirname, '..', '..', 'dist', 'src', 'main.js');

interface Gateway {
  url: string;
  port: number;
  child: ChildProcess;
  /** everything the process wrote so far */
  out(): string;
  exit: Promise<number | null>;
}

/** One request on a connection of its own (never a pooled keep-alive one). */
function getOnce(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, headers }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      })
      .on('error', reject);
  });
}

/** `name=value` pairs of the cookies the login set (for clients other than the supertest agent). */
function cookiesOf(login: LoginResponse): string {
  const set = (login.headers['set-cookie'] ?? []) as unknown as string[];
  return set
    .map((c) => c.split(';')[0]!)
    .filter((c) => !c.endsWith('='))
    .join('; ');
}

describe('graceful shutdown (dist/src/main.js)', () => {
  let idp: TestIdp;
  let upstream: TestUpstream;
  let redis: Redis;
  const prefix = uniquePrefix();
  const children: ChildProcess[] = [];

  const env = (port: number, more: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH,
    GATEHOUSE_ISSUER: idp.issuer,
    GATEHOUSE_CLIENT_ID: idp.clientId,
    GATEHOUSE_CLIENT_SECRET: idp.clientSecret,
    GATEHOUSE_PUBLIC_URL: `http://127.0.0.1:${port}`,
    GATEHOUSE_PORT: String(port),
    GATEHOUSE_UPSTREAM: upstream.url,
    GATEHOUSE_SESSION_SECRET: SESSION_SECRET,
    GATEHOUSE_REDIS_URL: redisUrl(),
    GATEHOUSE_KEY_PREFIX: prefix,
    GATEHOUSE_REFRESH_SKEW_SECONDS: '1',
    GATEHOUSE_METRICS_PORT: '0',
    ...more,
  });

  function spawnGateway(port: number, e: NodeJS.ProcessEnv): Gateway {
    // process.execPath is the Node 24 that runs jest; only the variables given here reach the gateway.
    const child = spawn(process.execPath, [main], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { url: `http://127.0.0.1:${port}`, port, child, out: () => out, exit };
  }

  async function startGateway(more: NodeJS.ProcessEnv = {}): Promise<Gateway> {
    const port = await findFreePort();
    await idp.allowGateway(`http://127.0.0.1:${port}`);
    const gw = spawnGateway(port, env(port, more));
    for (let i = 0; i < 150; i++) {
      const ready = await getOnce(`${gw.url}/readyz`).catch(() => undefined);
      if (ready?.status === 200) return gw;
      await sleep(100);
    }
    throw new Error(`the gateway did not become ready:\n${gw.out()}`);
  }

  beforeAll(async () => {
    buildOnce();
    idp = await startTestIdp({ redirectUri: [], postLogoutRedirectUri: [] });
    upstream = await startUpstream();
    redis = new Redis(redisUrl());
  }, 90_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await upstream.close();
    await idp.close();
  });

  it('on SIGTERM finishes a slow upstream request, refuses new connections, answers /readyz 503 on an open connection, exits 0', async () => {
    const gw = await startGateway();
    const browser = request.agent(gw.url);
    const login = await loginAs(browser, idp, 'sigterm-slow');
    const before = upstream.requests.length;

    // A second connection with a slow request in flight, on which /readyz is sent (pipelined) after the signal:
    // an open keep-alive connection that is busy is not closed by the drain, so it can still ask.
    const socket = net.connect(gw.port, '127.0.0.1');
    let raw = '';
    socket.on('data', (d: Buffer) => (raw += d.toString()));
    const rawClosed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write(`GET /api/slow?ms=1500 HTTP/1.1\r\nHost: 127.0.0.1:${gw.port}\r\nCookie: ${cookiesOf(login)}\r\nX-CSRF: 1\r\n\r\n`);
    const slow = browser.get('/api/slow?ms=1500').set(SPA);
    const slowDone = slow.then((r) => r); // supertest sends on then()

    // Both requests reached the upstream: they are in flight at the gateway when the signal comes.
    await waitFor('the slow requests to reach the upstream', () => upstream.requests.length >= before + 2);
    gw.child.kill('SIGTERM');
    await waitFor('the draining log line', () => gw.out().includes('"draining"'));

    const fresh = await getOnce(`${gw.url}/healthz`).then(
      (r) => r.status,
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect([503, 'ECONNREFUSED']).toContain(fresh);
    socket.write(`GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:${gw.port}\r\n\r\n`);

    const res = await slowDone;
    expect(res.status).toBe(200);
    expect((res.body as { path: string }).path).toBe('/slow');
    expect(await gw.exit).toBe(0);
    await rawClosed;
    expect([...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1])).toEqual(['200', '503']); // responses in order
    expect(raw).toContain('"path":"/slow"');
    expect(raw).toContain('"draining":true');
    const drained = JSON.parse(
      gw
        .out()
        .split('\n')
        .find((l) => l.includes('"drained"'))!,
    ) as { forceClosed: number; seconds: number };
    expect(drained).toMatchObject({ forceClosed: 0, closedInTime: true });
    // Connections that went idle during the drain were closed, not left until keepAliveTimeout (5 s).
    expect(drained.seconds).toBeLessThan(4);
  });

  it('cuts an SSE stream still open at GATEHOUSE_SHUTDOWN_SECONDS and exits 0', async () => {
    const gw = await startGateway({ GATEHOUSE_SHUTDOWN_SECONDS: '1' });
    const login = await loginAs(request.agent(gw.url), idp, 'sigterm-sse');
    let events = 0;
    let eventsAtSignal = 0;
    // 100 events 100 ms apart: ten seconds of stream, far past the one-second drain.
    const streamEnded = new Promise<void>((resolve, reject) => {
      http
        .get(`${gw.url}/api/sse?events=100`, { agent: false, headers: { Cookie: cookiesOf(login), ...SPA } }, (res) => {
          expect(res.statusCode).toBe(200);
          res.on('data', (d: Buffer) => (events += d.toString().split('data: ').length - 1));
          res.on('close', () => resolve());
        })
        .on('error', reject);
    });
    await waitFor('the first events', () => events >= 2);
    eventsAtSignal = events;
    gw.child.kill('SIGTERM');

    expect(await gw.exit).toBe(0);
    await streamEnded;
    expect(events).toBeGreaterThan(eventsAtSignal); // the stream went on during the drain
    expect(events).toBeLessThan(100); // and was cut, not finished
    const drained = gw
      .out()
      .split('\n')
      .find((l) => l.includes('"drained"'));
    expect(drained).toContain('"forceClosed":1');
  });

  it('lets a refresh holding the lock finish after its browser went away, so the rotated token is kept', async () => {
    const gw = await startGateway();
    const browser = request.agent(gw.url);
    const login = await loginAs(browser, idp, 'sigterm-refresh');
    await sleep(1100); // the access token (2 s) is now within the skew: the next /api request refreshes
    const refreshes = idp.tokenRequests.filter((t) => t.grantType === 'refresh_token').length;
    const [failed, grantErrors] = [idp.refreshFailed, idp.grantErrors.length];
    idp.delay(1500);
    try {
      const req = http.get(`${gw.url}/api/x`, { agent: false, headers: { Cookie: cookiesOf(login), ...SPA } });
      req.on('error', () => undefined);
      await waitFor(
        'the refresh to reach the IdP',
        () => idp.tokenRequests.filter((t) => t.grantType === 'refresh_token').length > refreshes,
      );
      req.destroy(); // nobody waits for this refresh any more, yet the IdP is about to rotate the refresh token
      await sleep(100);
      gw.child.kill('SIGTERM');
      expect(await gw.exit).toBe(0);
    } finally {
      idp.delay(0);
    }
    expect(idp.refreshFailed).toBe(failed);
    expect(await redis.keys(`${prefix}l:*`)).toEqual([]); // the lock was released, not left to expire

    // Another instance reads the session the first one stored: the rotated refresh token was written (with the
    // old one, the IdP would answer invalid_grant and the session would end).
    const next = await startGateway();
    const after = await getOnce(`${next.url}/api/x`, { Cookie: cookiesOf(login), ...SPA });
    expect(after.status).toBe(200);
    expect(idp.refreshFailed).toBe(failed);
    expect(idp.grantErrors.slice(grantErrors)).toEqual([]);
    next.child.kill('SIGTERM');
    expect(await next.exit).toBe(0);
  });

  it('exits at once with code 130 on a second SIGINT during the drain (Ctrl+C twice)', async () => {
    const gw = await startGateway();
    const login = await loginAs(request.agent(gw.url), idp, 'sigint-twice');
    const before = upstream.requests.length;
    const slow = getOnce(`${gw.url}/api/slow?ms=20000`, { Cookie: cookiesOf(login), ...SPA }).then(
      (r) => r.status,
      (err: NodeJS.ErrnoException) => err.code,
    );
    await waitFor('the slow request to reach the upstream', () => upstream.requests.length > before);
    gw.child.kill('SIGINT');
    await waitFor('the draining log line', () => gw.out().includes('"draining"'));
    gw.child.kill('SIGINT');
    expect(await gw.exit).toBe(130);
    expect(await slow).toBe('ECONNRESET'); // cut, not answered
    expect(gw.out()).toContain('second signal');
  });

  it('stops with exit code 2 and a line naming GATEHOUSE_SHUTDOWN_SECONDS when it is not 1..300 whole seconds', async () => {
    for (const bad of ['0', '301', '2.5', 'soon']) {
      const gw = spawnGateway(1, env(1, { GATEHOUSE_SHUTDOWN_SECONDS: bad }));
      expect(await gw.exit).toBe(2);
      const lines = gw.out().trim().split('\n');
      expect(lines).toEqual([expect.stringMatching(/^gatehouse: GATEHOUSE_SHUTDOWN_SECONDS: ".*" is not a positive duration in seconds/)]);
    }
  });
});
