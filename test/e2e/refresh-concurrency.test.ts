/**
 * Refresh, exactly once: however many requests of one session arrive together, on however many replicas
 * sharing one Redis, one expiring access token causes exactly one refresh grant at the real IdP. The IdP
 * rotates refresh tokens and revokes the whole grant on reuse, so any race would show up as a 401 and as
 * `reuseDetected`.
 */
import { startStack, type Instance, type Stack } from '../support/stack';
import {
  accessTokensIssuedSince,
  api,
  keysOf,
  login,
  outcome,
  outliveAccessToken,
  refreshCounters,
  refreshTokenReuse,
  setCookies,
  transcript,
} from '../support/refresh';
import { waitFor } from '../support/wait';

const AT_TTL = 2; // the test IdP's default access-token lifetime (s)
const MARKER = 'MARKER-refresh-concurrency-9c1';
const CLEARING = /^gatehouse=; Path=\/; HttpOnly; Max-Age=0; .*SameSite=Strict$/;

/** `n` concurrent /api calls with one cookie, dealt round-robin over `instances`. */
function burst(instances: Instance[], cookie: string, n: number, tag: string) {
  return Promise.all(Array.from({ length: n }, (_, i) => api(instances[i % instances.length]!, cookie, `/${tag}/${i}`)));
}

function upstreamBearers(s: Stack, tag: string): string[] {
  return s.upstream.requests.filter((r) => r.url.startsWith(`/${tag}/`)).map((r) => String(r.headers.authorization));
}

describe('one gateway instance', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  it('answers 50 concurrent calls on an expired access token with 200 after exactly one refresh grant', async () => {
    const cookie = await login(s, 'one-50');
    expect((await api(s.gw, cookie)).status).toBe(200);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const issued = s.idp.tokensIssued().length;

    const rs = await burst([s.gw], cookie, 50, 'one-50');

    expect(rs.map((r) => r.status)).toEqual(Array(50).fill(200));
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(1);
    expect(after.ok - before.ok).toBe(1);
    expect(after.reuse).toBe(0);
    // every upstream call carried the one new access token
    const [fresh] = accessTokensIssuedSince(s.idp, issued);
    expect(upstreamBearers(s, 'one-50')).toEqual(Array(50).fill(`Bearer ${fresh}`));
  });

  it('makes 20 concurrent calls share the winner’s invalid_grant: one refresh grant, every call 401 session_expired', async () => {
    const cookie = await login(s, 'one-dead');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    // the IdP answers slowly, so all 20 requests are inside the gateway when the verdict arrives
    s.idp.failRefresh(400, { error: 'invalid_grant', error_description: MARKER });
    s.idp.delay(800);
    try {
      const rs = await burst([s.gw], cookie, 20, 'one-dead');
      expect(rs.map(outcome)).toEqual(Array(20).fill([401, 'session_expired']));
      for (const r of rs) expect(setCookies(r)).toEqual([expect.stringMatching(CLEARING)]);
    } finally {
      s.idp.failRefresh(null);
      s.idp.delay(0);
    }
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    expect(upstreamBearers(s, 'one-dead')).toEqual([]);
  });

  it('never presents a rotated refresh token again and the IdP never detects reuse', () => {
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    expect(s.idp.reuseDetected).toBe(0);
  });
});

describe('two gateway instances sharing one Redis', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ instances: 2 });
  });
  afterAll(() => s.close());

  it('answers 50 calls split over both instances with 200 after exactly one refresh grant', async () => {
    const [a, b] = [s.instances[0]!, s.instances[1]!];
    const cookie = await login(s, 'two-50', a);
    // the cookie logged in on A is a session on B too (shared secret, Redis and prefix)
    expect((await api(b, cookie)).status).toBe(200);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const issued = s.idp.tokensIssued().length;

    const rs = await burst([a, b], cookie, 50, 'two-50');

    expect(rs.map((r) => r.status)).toEqual(Array(50).fill(200));
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(1);
    expect(after.ok - before.ok).toBe(1);
    expect(after.reuse).toBe(0);
    const [fresh] = accessTokensIssuedSince(s.idp, issued);
    expect(upstreamBearers(s, 'two-50')).toEqual(Array(50).fill(`Bearer ${fresh}`));
  });

  it('holds the refresh lock while a slow IdP answers, and the other instance waits for the winner’s result', async () => {
    const [a, b] = [s.instances[0]!, s.instances[1]!];
    const cookie = await login(s, 'two-slow', b);
    const keys = keysOf(s, cookie);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const requestsBefore = s.idp.tokenRequests.length;
    s.idp.delay(1500);
    try {
      const pending = burst([a, b], cookie, 30, 'two-slow');
      // the winner's grant has reached the IdP and is held there: the lock is taken meanwhile
      await waitFor('the refresh grant to reach the IdP', () => s.idp.tokenRequests.length > requestsBefore);
      expect(await s.redis!.exists(keys.lockKey)).toBe(1);
      const rs = await pending;
      expect(rs.map((r) => r.status)).toEqual(Array(30).fill(200));
    } finally {
      s.idp.delay(0);
    }
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(1);
    expect(after.reuse).toBe(0);
    // released, not left to expire (its lease is 10 s; the release is sent as the refresh ends)
    await waitFor('the refresh lock to be released', async () => (await s.redis!.exists(keys.lockKey)) === 0, 2000);
    expect(new Set(upstreamBearers(s, 'two-slow')).size).toBe(1);
  });

  it('makes waiters on both instances share the winner’s invalid_grant: one refresh grant, every call 401 session_expired', async () => {
    const [a, b] = [s.instances[0]!, s.instances[1]!];
    const cookie = await login(s, 'two-dead', a);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    s.idp.failRefresh(400, { error: 'invalid_grant', error_description: MARKER });
    s.idp.delay(800);
    try {
      const rs = await burst([a, b], cookie, 20, 'two-dead');
      expect(rs.map(outcome)).toEqual(Array(20).fill([401, 'session_expired']));
      for (const r of rs) expect(setCookies(r)).toEqual([expect.stringMatching(CLEARING)]);
    } finally {
      s.idp.failRefresh(null);
      s.idp.delay(0);
    }
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    expect(upstreamBearers(s, 'two-dead')).toEqual([]);
    // and the session is over on both instances
    for (const inst of [a, b]) expect((await api(inst, cookie)).status).toBe(401);
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
  });

  it('never presents a rotated refresh token again and the IdP never detects reuse', () => {
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    expect(s.idp.reuseDetected).toBe(0);
  });
});

describe('memory store (one instance)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ store: 'memory' });
  });
  afterAll(() => s.close());

  it('answers 20 concurrent calls at expiry with 200 after exactly one refresh grant', async () => {
    const cookie = await login(s, 'mem-20');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);

    const rs = await burst([s.gw], cookie, 20, 'mem-20');

    expect(rs.map((r) => r.status)).toEqual(Array(20).fill(200));
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(1);
    expect(after.reuse).toBe(0);
    expect(new Set(upstreamBearers(s, 'mem-20')).size).toBe(1);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
  });
});

describe('every response of this file', () => {
  it('never carries the IdP’s error_description', () => {
    expect(transcript.length).toBeGreaterThan(100);
    for (const r of transcript) expect(JSON.stringify(r)).not.toContain(MARKER);
  });
});
