/**
 * Unauthenticated logins cannot fill Redis: each client address gets GATEHOUSE_LOGIN_RATE_PER_MINUTE requests
 * a minute to /auth/login and to /auth/callback (counted in Redis, shared by replicas, per X-Forwarded-For
 * address only behind trusted proxies), all addresses together keep at most GATEHOUSE_LOGINS_IN_FLIGHT_MAX
 * login records, and a record is small. A browser refused at /auth/login (or sent there while the IdP is down)
 * gets an HTML page with a retry link; an API client gets JSON. Real gateway, IdP and Redis throughout.
 */
import request from 'supertest';
import type { Redis } from 'ioredis';
import { loginAs } from '../support/login';
import { redisUrl, startStack, type Stack } from '../support/stack';
import { startTestIdp } from '../support/idp';
import { createTestGatehouse, type TestGatehouse } from '../../src/testing/createTestGatehouse';
import { callbackPathFor, dumpAll, rawRequest, startLogin } from '../support/security';

const TOO_MANY = { error: 'too_many_requests', message: 'Too many requests. Retry later.' };
const HTML = { Accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' } as const;

/** The value of one series in Prometheus text format, or undefined. */
function metric(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
/** gatehouse_login_refused_total{reason} summed over the stack's replicas (each counts its own answers). */
async function refused(s: Stack, reason: string): Promise<number> {
  let sum = 0;
  for (const gw of s.instances) {
    const text = (await request(gw.gatehouse.adminApp).get('/metrics').expect(200)).text;
    sum += metric(text, `gatehouse_login_refused_total{reason="${reason}"}`)!;
  }
  return sum;
}

const txKeys = async (redis: Redis, prefix: string) => (await redis.keys(`${prefix}x:*`)).length;

/** A browser navigation refused with `status`: an HTML page with Retry-After and a retry link, no script. */
function expectRetryPage(
  res: request.Response | { status: number; headers: Record<string, unknown>; text?: string; body?: unknown },
  status: number,
) {
  const text = 'text' in res && typeof res.text === 'string' ? res.text : String(res.body);
  expect(res.status).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^text\/html; charset=utf-8/);
  expect(String(res.headers['retry-after'])).toMatch(/^[1-9]\d*$/);
  expect(res.headers['content-security-policy']).toBeDefined();
  expect(res.headers['cache-control']).toBe('no-store');
  expect(text).toMatch(/<a href="\/auth\/login[^"]*">/);
  expect(text).not.toMatch(/<script|style=/i);
  return text;
}

describe('login rate limit per client address', () => {
  let s: Stack;
  beforeAll(async () => {
    // one trusted proxy: each test speaks for addresses of its own through X-Forwarded-For
    s = await startStack({ instances: 2, gateway: { loginRatePerMinute: 5, trustProxy: 1, metricsPort: 9464 } });
  });
  afterAll(() => s.close());

  const from = (ip: string, i = 0) => ({ 'X-Forwarded-For': ip, gw: s.instances[i]! });
  const login = ({ gw, ...headers }: ReturnType<typeof from>, extra: Record<string, string> = {}) =>
    request(gw.server).get('/auth/login?returnTo=%2Fhome').set(headers).set(extra).redirects(0);

  it('one address gets loginRatePerMinute logins a minute, on all replicas together; then 429 too_many_requests with Retry-After, counted', async () => {
    const before = await refused(s, 'rate_limit');
    for (let i = 0; i < 5; i++) expect((await login(from('203.0.113.10', i % 2))).status).toBe(302);
    for (const i of [0, 1]) {
      const r = await login(from('203.0.113.10', i));
      expect(r.status).toBe(429);
      expect(r.body).toEqual(TOO_MANY);
      expect(r.headers['retry-after']).toBe('60');
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    expect(await refused(s, 'rate_limit')).toBe(before + 2);
    // another address is not affected
    expect((await login(from('203.0.113.11'))).status).toBe(302);
  });

  it('a browser navigation refused by the rate limit gets an HTML page with the same status, Retry-After and a retry link', async () => {
    for (let i = 0; i < 5; i++) await login(from('203.0.113.20'));
    const r = await login(from('203.0.113.20'), HTML);
    const page = expectRetryPage(r, 429);
    expect(page).toContain('href="/auth/login?returnTo=%2Fhome"');
    // Sec-Fetch-Mode: navigate alone is a navigation too; an API client keeps the JSON
    expectRetryPage(await login(from('203.0.113.20'), { 'Sec-Fetch-Mode': 'navigate' }), 429);
    expect((await login(from('203.0.113.20'), { Accept: 'application/json' })).body).toEqual(TOO_MANY);
  });

  it('/auth/callback is limited per address as well', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await request(s.gw.server).get('/auth/callback?state=x&code=y').set('X-Forwarded-For', '203.0.113.30').redirects(0);
      expect(r.status).toBe(400);
    }
    const r = await request(s.gw.server).get('/auth/callback?state=x&code=y').set('X-Forwarded-For', '203.0.113.30').redirects(0);
    expect([r.status, r.body, r.headers['retry-after']]).toEqual([429, TOO_MANY, '60']);
  });

  it('counts IPv6 clients by /64: addresses of one /64 share a count, another /64 has its own', async () => {
    for (let i = 1; i <= 5; i++) expect((await login(from(`2001:db8:1:2::${i}`))).status).toBe(302);
    expect((await login(from('2001:db8:1:2:ffff:ffff:ffff:ffff'))).status).toBe(429);
    expect((await login(from('2001:0db8:0001:0002::abcd'))).status).toBe(429); // the same /64 written out
    expect((await login(from('2001:db8:1:3::1'))).status).toBe(302);
  });

  it('stores the count under a keyed hash of the address (never the address) that lives at most a minute', async () => {
    await login(from('198.51.100.77'));
    const rate = (await dumpAll(s)).filter((e) => e.key.startsWith(`${s.prefix}rl:`));
    expect(rate.length).toBeGreaterThan(0);
    for (const e of rate) {
      expect(e.key).toMatch(new RegExp(`^${s.prefix}rl:[A-Za-z0-9_-]{16}$`));
      expect(e.key + e.value).not.toMatch(/198\.51\.100|203\.0\.113|2001:db8|127\.0\.0\.1/);
      expect(e.pttl).toBeGreaterThan(0);
      expect(e.pttl).toBeLessThanOrEqual(60_000);
    }
  });

  it('without a trusted proxy X-Forwarded-For is ignored: a client cannot escape its limit by inventing addresses', async () => {
    const direct = await s.addInstance({ trustProxy: 0 });
    const statuses = [];
    for (let i = 0; i < 7; i++) {
      const r = await request(direct.server).get('/auth/login').set('X-Forwarded-For', `192.0.2.${i}`).redirects(0);
      statuses.push(r.status);
    }
    expect(statuses).toEqual([302, 302, 302, 302, 302, 429, 429]);
  });
});

describe('logins in flight: a global cap shared by replicas', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ instances: 2, gateway: { loginsInFlightMax: 3, metricsPort: 9464 } });
  });
  afterAll(() => s.close());

  it('past loginsInFlightMax /auth/login answers 503 with Retry-After on every replica and stores nothing more; a finished login frees its place', async () => {
    const browser = s.gw.agent();
    const first = await startLogin(browser);
    await startLogin(s.instances[1]!.agent());
    await startLogin(s.gw.agent());
    expect(await txKeys(s.redis!, s.prefix)).toBe(3);
    const before = await refused(s, 'in_flight');
    for (const gw of s.instances) {
      const r = await request(gw.server).get('/auth/login').redirects(0);
      expect([r.status, r.body]).toEqual([503, TOO_MANY]);
      expect(String(r.headers['retry-after'])).toMatch(/^[1-9]\d*$/);
      expect(r.headers['set-cookie']).toBeUndefined();
      expect(r.headers.location).toBeUndefined();
    }
    expect(await refused(s, 'in_flight')).toBe(before + 2);
    expect(await txKeys(s.redis!, s.prefix)).toBe(3);
    // a browser navigation gets the page
    expectRetryPage(await request(s.gw.server).get('/auth/login').set(HTML).redirects(0), 503);

    // the first login completes: its place is free at once
    const cb = await browser.get(await callbackPathFor(s.idp, first, 'cap')).redirects(0);
    expect(cb.status).toBe(302);
    expect((await request(s.instances[1]!.server).get('/auth/login').redirects(0)).status).toBe(302);
    expect((await request(s.gw.server).get('/auth/login').redirects(0)).status).toBe(503);
  });

  it('keeps the count in one sorted set with a TTL no longer than a login lives', async () => {
    const set = (await dumpAll(s)).find((e) => e.key === `${s.prefix}logins`);
    expect(set?.type).toBe('zset');
    expect(set!.pttl).toBeGreaterThan(0);
    expect(set!.pttl).toBeLessThanOrEqual(600_000);
  });
});

describe('logins in flight: the cap heals by itself as logins expire', () => {
  let gw: TestGatehouse;
  let shift = 0;
  beforeAll(async () => {
    gw = await createTestGatehouse({ redisUrl: redisUrl(), gateway: { loginsInFlightMax: 2 }, deps: { now: () => Date.now() + shift } });
  });
  afterAll(() => gw.close());

  it('logins refused at the cap are accepted again once the stored ones have passed their ten minutes, unfinished', async () => {
    const start = () => request(gw.app).get('/auth/login').redirects(0);
    expect((await start()).status).toBe(302);
    expect((await start()).status).toBe(302);
    expect((await start()).status).toBe(503);
    shift = 599_000;
    expect((await start()).status).toBe(503);
    shift = 601_000;
    expect((await start()).status).toBe(302);
  });
});

describe('login records are small', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  it('a returnTo longer than 512 characters (once re-encoded) is replaced by /, one of 512 is kept', async () => {
    const kept = `/${'k'.repeat(511)}`;
    expect((await loginAs(s.gw.agent(), s.idp, 'long-return', kept)).headers.location).toBe(kept);
    expect((await loginAs(s.gw.agent(), s.idp, 'long-return', `/${'k'.repeat(512)}`)).headers.location).toBe('/');
    // 200 characters, each percent-encoded to 6
    expect((await loginAs(s.gw.agent(), s.idp, 'long-return', `/${'é'.repeat(200)}`)).headers.location).toBe('/');
  });

  it('the largest login record takes under 1 KiB of Redis', async () => {
    const earlier = await s.redis!.keys(`${s.prefix}x:*`);
    if (earlier.length) await s.redis!.del(...earlier);
    await startLogin(s.gw.agent(), `/auth/login?returnTo=${encodeURIComponent(`/${'k'.repeat(511)}`)}`);
    const [key] = await s.redis!.keys(`${s.prefix}x:*`);
    const value = (await s.redis!.get(key!))!;
    const usage = Number(await s.redis!.call('MEMORY', 'USAGE', key!, 'SAMPLES', '0'));
    expect(value.length).toBeLessThanOrEqual(880);
    expect(usage).toBeLessThanOrEqual(1024);
  });
});

describe('/auth/login while the IdP is down', () => {
  let gw: TestGatehouse;
  beforeAll(async () => {
    const idp = await startTestIdp();
    await idp.close(); // the gateway starts with its IdP unreachable: discovery keeps failing
    gw = await createTestGatehouse({ idp, redisUrl: redisUrl() });
  });
  afterAll(() => gw.close());

  it('a browser navigation gets an HTML 503 page with Retry-After and an escaped retry link to the same URL; an API client gets JSON', async () => {
    const path = '/auth/login?returnTo=%2Finbox&x="><img/src=x/onerror=alert(1)>';
    const page = await rawRequest(gw.url, { path, headers: HTML });
    const text = expectRetryPage({ status: page.status, headers: page.headers, text: page.body }, 503);
    expect(text).toContain('href="/auth/login?returnTo=%2Finbox&#38;x=&#34;&#62;&#60;img/src=x/onerror=alert(1)&#62;"');
    expect(text).not.toContain('<img');
    expect(text).toContain('The identity provider is unavailable');

    const navigate = await rawRequest(gw.url, { path: '/auth/login', headers: { 'Sec-Fetch-Mode': 'navigate', Accept: '*/*' } });
    expectRetryPage({ status: navigate.status, headers: navigate.headers, text: navigate.body }, 503);

    const api = await request(gw.app).get('/auth/login').set('Accept', 'application/json').redirects(0);
    expect([api.status, api.body]).toEqual([503, { error: 'identity_provider_unavailable', message: expect.any(String) as unknown }]);
    expect(api.headers['retry-after']).toBe('5');
  });
});
