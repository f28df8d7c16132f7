/**
 * Redis faults (Redis unreachable → 503 session_store_unavailable, docs/routes.md): with its Redis stopped,
 * crashed or frozen, the gateway answers fast, clean 503s with Retry-After, reports not-ready, keeps the
 * session, and recovers by itself once Redis is back. Other session stores have failed here: connect-redis
 * #373 "when redis is down middleware is hanging", oauth2-proxy #1630 "removing session" on a Redis timeout.
 *
 * Each gateway here runs on a PRIVATE redis-server (startRedisServer), never the shared one, with an
 * append-only file fsynced on every write so the data outlives a stop or a SIGKILL, like a production
 * Redis with persistence. Every request carries `.timeout(2000)`: a hang fails the test; nothing else
 * is timed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { startRedisServer, type RedisServerHandle } from '../support/redisServer';
import { loginAs, type Agent, type Response } from '../support/login';
import { SESSION_SECRET, SPA, startStack, type Stack } from '../support/stack';
import { randomId } from '../../src/crypto/seal';

/** A request that takes longer than this is a hang (the gateway's Redis command timeout is 1 s). */
const HANG_MS = 2000;

/** Nothing of the store's failure may reach the browser: no error text, no address, no stack. */
const LEAK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|redis|timed out|127\.0\.0\.1|localhost|::1|node_modules|\bat \/|stack/i;

interface Persistent {
  redis: RedisServerHandle;
  dir: string;
}

/** A private redis-server whose data survives stop/kill/restart (AOF, fsync always, in a directory of its own). */
async function persistentRedis(): Promise<Persistent> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-redis-faults-'));
  const redis = await startRedisServer(undefined, { extraArgs: ['--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always'] });
  return { redis, dir };
}

function expectStoreUnavailable(res: Response, what: string, redisPort: number): void {
  expect({ what, status: res.status, body: res.body as unknown }).toEqual({
    what,
    status: 503,
    body: { error: 'session_store_unavailable', message: expect.any(String) as unknown },
  });
  expect({ what, retryAfter: res.headers['retry-after'] }).toEqual({ what, retryAfter: expect.stringMatching(/^[1-9]\d*$/) as unknown });
  expect(res.text).not.toMatch(LEAK);
  expect(res.text).not.toContain(String(redisPort));
  // The SPA retries with the same cookie: a 503 never clears it (a transient fault keeps the session, as a
  // transient refresh failure does).
  expect({ what, setCookie: res.headers['set-cookie'] }).toEqual({ what, setCookie: undefined });
}

/**
 * With the store unavailable: /api and /auth/session (with session cookie `cookie`) and /auth/login answer 503
 * session_store_unavailable, /readyz 503, /healthz 200; all within HANG_MS.
 */
async function expectStoreDown(s: Stack, cookie: string, redisPort: number): Promise<void> {
  const fresh = request(s.gw.server);
  const withCookie = { ...SPA, Cookie: cookie };
  const [api, post, info, login, ready, health] = await Promise.all([
    fresh.get('/api/things?x=1').set(withCookie).timeout(HANG_MS),
    fresh.post('/api/things').set(withCookie).send({ a: 1 }).timeout(HANG_MS),
    fresh.get('/auth/session').set(withCookie).timeout(HANG_MS),
    fresh.get('/auth/login?returnTo=/home').redirects(0).timeout(HANG_MS),
    fresh.get('/readyz').timeout(HANG_MS),
    fresh.get('/healthz').timeout(HANG_MS),
  ]);
  expectStoreUnavailable(api, 'GET /api/things', redisPort);
  expectStoreUnavailable(post, 'POST /api/things', redisPort);
  expectStoreUnavailable(info, 'GET /auth/session', redisPort);
  expectStoreUnavailable(login, 'GET /auth/login', redisPort);
  expect({ readyz: ready.status, store: (ready.body as { checks?: { store?: string } }).checks?.store }).toEqual({
    readyz: 503,
    store: 'down',
  });
  expect(ready.text).not.toMatch(LEAK);
  expect({ healthz: health.status, body: health.body as unknown }).toEqual({ healthz: 200, body: { status: 'ok' } });
}

/** Polls /readyz until 200 (ioredis reconnects in the background; its backoff is capped at 1 s). */
async function waitUntilReady(s: Stack, withinMs = 15_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    const r = await request(s.gw.server)
      .get('/readyz')
      .timeout(HANG_MS)
      .then(
        (res) => res,
        (err: Error) => err,
      );
    if (!(r instanceof Error) && r.status === 200) return;
    last = r instanceof Error ? r.message : `${r.status} ${r.text}`;
    await sleep(100);
  }
  throw new Error(`/readyz did not turn 200 within ${withinMs} ms after Redis came back (last: ${last})`);
}

/** The session still works: same cookie, same user, and the upstream gets a bearer. */
async function expectSessionWorks(s: Stack, browser: Agent, sub: string): Promise<void> {
  const info = await browser.get('/auth/session').set(SPA).timeout(HANG_MS);
  expect({ status: info.status, sub: (info.body as { user?: { sub?: string } }).user?.sub }).toEqual({ status: 200, sub });
  const api = await browser.get('/api/after-outage').set(SPA).timeout(HANG_MS);
  expect(api.status).toBe(200);
  expect(s.upstream.requests.at(-1)!.headers.authorization).toMatch(/^Bearer \S+$/);
}

const sessionCookieOf = (res: Response) =>
  ([] as string[])
    .concat(res.headers['set-cookie'] ?? [])
    .find((c) => c.startsWith('gatehouse='))!
    .split(';')[0]!;

describe('Redis faults: a running gateway whose Redis goes away', () => {
  let store: Persistent | undefined;
  let s: Stack | undefined;
  let browser: Agent;
  let cookie: string;
  let paused = false;

  beforeAll(async () => {
    store = await persistentRedis();
    s = await startStack({ gateway: { redisUrl: store.redis.url } });
    browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'outage-user');
    expect(cb.status).toBe(302);
    cookie = sessionCookieOf(cb);
  });

  afterAll(async () => {
    const pid = store?.redis.pid;
    if (paused && pid) process.kill(pid, 'SIGCONT');
    await s?.close();
    await store?.redis.stop();
    if (store) fs.rmSync(store.dir, { recursive: true, force: true });
  });

  it('works while its private Redis runs', async () => {
    await request(s!.gw.server).get('/readyz').timeout(HANG_MS).expect(200);
    await expectSessionWorks(s!, browser, 'outage-user');
  });

  it('Redis stopped: answers 503 session_store_unavailable at once, then the same cookie works again after restart', async () => {
    await store!.redis.stop();
    await expectStoreDown(s!, cookie, store!.redis.port);
    // repeated requests do not wear anything down (no queue building up, no 500 on the second try)
    await expectStoreDown(s!, cookie, store!.redis.port);

    await store!.redis.restart();
    await waitUntilReady(s!);
    await expectSessionWorks(s!, browser, 'outage-user');
  });

  it('Redis crashed (SIGKILL): same clean 503s; the session survives the crash', async () => {
    await store!.redis.kill();
    await expectStoreDown(s!, cookie, store!.redis.port);

    await store!.redis.restart();
    await waitUntilReady(s!);
    // the very cookie from the login, sent by a client that never saw the outage
    const info = await request(s!.gw.server).get('/auth/session').set(SPA).set('Cookie', cookie).timeout(HANG_MS);
    expect(info.status).toBe(200);
    await expectSessionWorks(s!, browser, 'outage-user');
  });

  it('Redis frozen (SIGSTOP): answers 503 within the command timeout instead of hanging; works again after SIGCONT', async () => {
    const pid = store!.redis.pid!;
    process.kill(pid, 'SIGSTOP');
    paused = true;
    try {
      // A frozen server keeps its connections open, so sessions read a moment ago are still served from the
      // replica's cache until it lapses (GATEHOUSE_SESSION_CACHE_MS, 500 ms by default); after that, 503.
      await sleep(600);
      await expectStoreDown(s!, cookie, store!.redis.port);
    } finally {
      process.kill(pid, 'SIGCONT');
      paused = false;
    }
    await waitUntilReady(s!);
    await expectSessionWorks(s!, browser, 'outage-user');
  });

  it('Redis frozen while a refresh grant is at the IdP: the request does not hang storing the rotated tokens, and no refresh token is lost', async () => {
    const user = s!.gw.agent();
    expect((await loginAs(user, s!.idp, 'frozen-refresh')).status).toBe(302);
    await user.get('/api/warm').set(SPA).timeout(HANG_MS).expect(200);
    await sleep(1100); // the test IdP's access tokens live 2 s and the stack refreshes 1 s ahead: now due

    const pid = store!.redis.pid!;
    const reuseBefore = s!.idp.reuseDetected;
    const arrivals = s!.idp.tokenRequests.length;
    s!.idp.delay(300);
    const pending = user
      .get('/api/during-freeze')
      .set(SPA)
      .timeout(HANG_MS)
      .then(
        (r) => r,
        (err: Error) => err,
      );
    // Freeze Redis once the refresh grant is at the IdP: the lock is taken, and the rotated tokens must
    // now be stored into a Redis that does not answer.
    const grantDeadline = Date.now() + 5000;
    while (s!.idp.tokenRequests.length === arrivals) {
      if (Date.now() > grantDeadline) throw new Error('the gateway sent no refresh grant: the access token was not due');
      await sleep(2);
    }
    process.kill(pid, 'SIGSTOP');
    paused = true;
    let during: Response | Error;
    try {
      during = await pending;
    } finally {
      process.kill(pid, 'SIGCONT');
      paused = false;
      s!.idp.delay(0);
    }
    // 200 with the new access token, or 503 (the SPA retries): either, but at once
    expect(during instanceof Error ? `no answer within ${HANG_MS} ms` : String(during.status)).toMatch(/^(200|503)$/);

    await waitUntilReady(s!);
    // The rotated refresh token was kept: the next refresh presents it (no reuse at the IdP) and succeeds.
    await sleep(1100);
    const after = await user.get('/api/after-freeze').set(SPA).timeout(HANG_MS);
    expect({ status: after.status, reuse: s!.idp.reuseDetected - reuseBefore }).toEqual({ status: 200, reuse: 0 });
  });

  it('drains and closes while its Redis is frozen: close() does not hang', async () => {
    const pid = store!.redis.pid!;
    process.kill(pid, 'SIGSTOP');
    paused = true;
    try {
      const closed = await Promise.race([s!.gw.gatehouse.close().then(() => 'closed'), sleep(5000).then(() => 'still closing after 5 s')]);
      expect(closed).toBe('closed');
    } finally {
      process.kill(pid, 'SIGCONT');
      paused = false;
    }
    // draining: no longer ready, still alive
    await request(s!.gw.server).get('/readyz').timeout(HANG_MS).expect(503);
    await request(s!.gw.server).get('/healthz').timeout(HANG_MS).expect(200);
  });
});

describe('Redis faults: a gateway started while its Redis is down', () => {
  let redis: RedisServerHandle | undefined;
  let s: Stack | undefined;

  beforeAll(async () => {
    redis = await startRedisServer();
    await redis.stop();
  });

  afterAll(async () => {
    await s?.close();
    await redis?.stop();
  });

  it('starts, answers 503 and not-ready, and works once Redis comes up', async () => {
    // createGatehouse resolves although Redis does not answer
    s = await startStack({ gateway: { redisUrl: redis!.url } });

    // a well-formed, correctly signed cookie: the store has to be asked, and cannot answer
    const sid = randomId();
    const signed = `s:${sid}.${createHmac('sha256', SESSION_SECRET).update(sid).digest('base64').replace(/=+$/, '')}`;
    await expectStoreDown(s, `gatehouse=${encodeURIComponent(signed)}`, redis!.port);

    // without any cookie no store lookup is needed: a plain 401, as always
    const anonymous = await request(s.gw.server).get('/api/x').set(SPA).timeout(HANG_MS);
    expect(anonymous.status).toBe(401);

    await redis!.restart();
    await waitUntilReady(s);
    const user = s.gw.agent();
    const cb = await loginAs(user, s.idp, 'late-redis-user');
    expect(cb.status).toBe(302);
    await expectSessionWorks(s, user, 'late-redis-user');
  });
});
