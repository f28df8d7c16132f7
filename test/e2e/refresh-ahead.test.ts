/**
 * Refresh ahead: a call whose access token is inside the refresh skew but outside the expiry margin is
 * proxied at once with that token, and the refresh runs in the background, with every exactly-once rule
 * (one flight per process, the Redis lock across replicas). Only a call whose token is inside the margin, or
 * expired, waits for the IdP.
 *
 * Access tokens live 8 s; skew 4 s, margin 2 s: from 4 s on a call refreshes in the background, from 6 s on
 * it waits. The IdP is slowed to 1.5 s per token request, so "answered before the IdP" is an ordering
 * (every call had its answer before the grant's answer came back), never a timing assertion.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { startStack, type Instance, type Stack } from '../support/stack';
import {
  accessTokensIssuedSince,
  api,
  bodyOf,
  login,
  outliveAccessToken,
  outliveRefreshCooldown,
  refreshCounters,
  refreshTokenReuse,
  sessionInfo,
  setCookies,
} from '../support/refresh';
import { waitFor } from '../support/wait';

const AT_TTL = 8;
const IDP_DELAY_MS = 1500;

/** Sleeps until `seconds` after `since` (a login): the token then has AT_TTL - seconds left. */
const until = (since: number, seconds: number) => sleep(Math.max(0, since + seconds * 1000 - Date.now()));

describe('refresh ahead, off the request path', () => {
  let s: Stack;
  let a: Instance;
  let b: Instance;
  beforeAll(async () => {
    s = await startStack({ instances: 2, idp: { accessTokenTtl: AT_TTL }, gateway: { refreshSkewSeconds: 4 } });
    [a, b] = s.instances as [Instance, Instance];
  });
  afterAll(() => s?.close());

  const bearersOf = (tag: string) =>
    s.upstream.requests.filter((r) => r.url.startsWith(`/${tag}`)).map((r) => String(r.headers.authorization));
  const metric = async (inst: Instance, series: string) => {
    const text = (await request(inst.gatehouse.adminApp).get('/metrics').expect(200)).text;
    return Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
  };

  it('answers 20 calls on two replicas with the current token before the IdP answers the one refresh grant; the next call carries the new token', async () => {
    const loggedIn = Date.now();
    const cookie = await login(s, 'ahead-user', a);
    expect((await api(a, cookie, '/ahead-first')).status).toBe(200);
    const [original] = bearersOf('ahead-first');
    await until(loggedIn, AT_TTL - 3); // 3 s of life left: inside the skew, outside the margin
    const before = refreshCounters(s.idp);
    const issued = s.idp.tokensIssued().length;
    s.idp.delay(IDP_DELAY_MS);
    try {
      const answeredWhileIdpBusy: boolean[] = [];
      const rs = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const r = await api(i % 2 ? b : a, cookie, `/ahead-burst/${i}`);
          answeredWhileIdpBusy.push(s.idp.refreshSucceeded === before.ok);
          return r;
        }),
      );
      expect(rs.map((r) => r.status)).toEqual(Array(20).fill(200));
      expect(answeredWhileIdpBusy).toEqual(Array(20).fill(true));
      expect(new Set(bearersOf('ahead-burst'))).toEqual(new Set([original]));
      await waitFor('the background refresh to complete', () => s.idp.refreshSucceeded > before.ok);
    } finally {
      s.idp.delay(0);
    }
    // Stored, not only answered by the IdP: the session's refresh count moves when the new tokens are written.
    await waitFor(
      'the tokens to be stored',
      async () => ((await sessionInfo(b, cookie)).body as { refreshCount: number }).refreshCount === 1,
    );
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    expect((await api(b, cookie, '/ahead-next')).status).toBe(200);
    const [fresh] = accessTokensIssuedSince(s.idp, issued);
    expect(bearersOf('ahead-next')).toEqual([`Bearer ${fresh}`]);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    const background =
      (await metric(a, 'gatehouse_refresh_total{outcome="ok",mode="background"}')) +
      (await metric(b, 'gatehouse_refresh_total{outcome="ok",mode="background"}'));
    expect(background).toBe(1);
  });

  it('keeps the session and the current token while the IdP fails, until the token is inside the margin: then 503 with Retry-After', async () => {
    const loggedIn = Date.now();
    const cookie = await login(s, 'ahead-failing', a);
    await api(a, cookie, '/ahead-failing-first');
    const [original] = bearersOf('ahead-failing-first');
    await until(loggedIn, AT_TTL - 3);
    s.idp.failRefresh(503);
    try {
      const seen: Array<[number, unknown]> = [];
      for (let i = 0; seen.filter(([st]) => st === 503).length < 2 && i < 60; i++) {
        const r = await api(i % 2 ? b : a, cookie, `/ahead-failing/${i}`);
        seen.push([r.status, bodyOf(r).error]);
        if (r.status === 503) expect(r.headers['retry-after']).toMatch(/^\d+$/);
        await sleep(100);
      }
      expect(seen.map(([st]) => st).join(',')).toMatch(/^200(,200)+(,503)+$/);
      expect(seen.filter(([st]) => st === 503).map(([, e]) => e)).toEqual(['token_refresh_unavailable', 'token_refresh_unavailable']);
      expect(new Set(bearersOf('ahead-failing/'))).toEqual(new Set([original]));
    } finally {
      s.idp.failRefresh(null);
    }
    await outliveRefreshCooldown();
    const r = await api(a, cookie, '/ahead-failing-back');
    expect(r.status).toBe(200); // the session was kept; this call waited for the refresh
    expect(bearersOf('ahead-failing-back')).not.toEqual([original]);
  });

  it('ends the session for the next call when the background refresh answers invalid_grant', async () => {
    const loggedIn = Date.now();
    const cookie = await login(s, 'ahead-revoked', a);
    await until(loggedIn, AT_TTL - 3);
    const errorsBefore = s.idp.grantErrors.length;
    await s.idp.revoke('ahead-revoked');
    expect((await api(a, cookie, '/ahead-revoked-1')).status).toBe(200); // its token is still good to send
    await waitFor('the refresh to fail', () => s.idp.grantErrors.slice(errorsBefore).some((e) => e.error === 'invalid_grant'));
    await sleep(100);
    const r = await api(b, cookie, '/ahead-revoked-2');
    expect([r.status, bodyOf(r).error]).toEqual([401, 'session_expired']);
    expect(setCookies(r).some((c) => c.startsWith('gatehouse=;'))).toBe(true);
  });

  it('makes a call whose token has expired wait for the refresh, and carry the new token', async () => {
    const cookie = await login(s, 'ahead-expired', a);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const issued = s.idp.tokensIssued().length;
    expect((await api(b, cookie, '/ahead-expired')).status).toBe(200);
    expect(refreshCounters(s.idp).ok - before.ok).toBe(1); // done before the answer
    const [fresh] = accessTokensIssuedSince(s.idp, issued);
    expect(bearersOf('ahead-expired')).toEqual([`Bearer ${fresh}`]);
  });
});
