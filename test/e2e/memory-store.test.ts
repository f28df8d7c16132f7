/**
 * The in-memory store (`GATEHOUSE_REDIS_URL` unset → in-memory store, single instance only, warned at
 * start): the whole flow works without Redis (login, proxy, refresh, logout), the gateway is ready (the
 * memory store always answers), and the start-up log says what the operator gave up.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { idpAgent, loginAs } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';

describe('a gateway without redisUrl (in-memory store)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ store: 'memory' });
  });
  afterAll(() => s?.close());

  it('warns at start-up that sessions live in memory (lost on restart, not shared by replicas)', () => {
    const warnings = s.logs
      .map((line) => JSON.parse(line) as { level: string; msg: string })
      .filter((l) => l.level === 'warn' && /memory/i.test(l.msg));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/redisUrl/); // named as createGatehouse() was given it
    expect(warnings[0]!.msg).toMatch(/restart|replica/i);
  });

  it('is ready: /readyz 200 (the memory store always answers), /healthz 200', async () => {
    const ready = await request(s.gw.server).get('/readyz').timeout(2000);
    expect({ status: ready.status, body: ready.body as unknown }).toMatchObject({
      status: 200,
      body: { status: 'ok', checks: { store: 'ok' } },
    });
    await request(s.gw.server).get('/healthz').timeout(2000).expect(200, { status: 'ok' });
  });

  it('logs in, proxies /api with the bearer, refreshes after the access token expired, and logs out', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'memo', { returnTo: '/start', idpAgent: idpAgent(s.idp) });
    expect(cb.status).toBe(302);
    expect(cb.headers.location).toBe('/start');

    const me = await browser.get('/auth/session').set(SPA).expect(200);
    expect(me.body).toMatchObject({ authenticated: true, user: { sub: 'memo' } });

    await browser.get('/api/one').set(SPA).expect(200);
    const first = s.upstream.requests.at(-1)!.headers.authorization;
    expect(first).toMatch(/^Bearer \S+$/);

    // the test IdP's access tokens live 2 s: past that, the next call refreshes exactly once
    const refreshesBefore = s.idp.grants.refresh_token;
    await sleep(2100);
    await browser.get('/api/two').set(SPA).expect(200);
    const second = s.upstream.requests.at(-1)!.headers.authorization;
    expect(second).toMatch(/^Bearer \S+$/);
    expect(second).not.toBe(first);
    expect(s.idp.grants.refresh_token).toBe(refreshesBefore + 1);
    // the rotated token set was stored: the next call reuses it without another refresh
    await browser.get('/api/three').set(SPA).expect(200);
    expect(s.upstream.requests.at(-1)!.headers.authorization).toBe(second);
    expect(s.idp.grants.refresh_token).toBe(refreshesBefore + 1);

    const out = await browser.post('/auth/logout').set(SPA).expect(200);
    expect((out.body as { logoutUrl: string }).logoutUrl).toContain(`${s.idp.issuer}/session/end`);
    expect(String(out.headers['set-cookie'])).toMatch(/gatehouse=;.*Max-Age=0/);
    // the session is gone from the store, not only from the browser
    const replay = await request(s.gw.server)
      .get('/api/four')
      .set(SPA)
      .set('Cookie', String(cb.headers['set-cookie']).match(/gatehouse=[^;]+/)![0]);
    expect(replay.status).toBe(401);
    expect(replay.body).toEqual({ error: 'unauthenticated', message: expect.any(String) as unknown });
  });
});
