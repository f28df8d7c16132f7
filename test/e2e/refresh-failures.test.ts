/**
 * What a refresh failure does to the session. Only invalid_grant ends it (401 session_expired, cookie
 * cleared, records gone): RFC 6749 §5.2 means the grant is invalid, expired or revoked, so no retry can
 * succeed. Every other failure keeps it (503 token_refresh_unavailable + Retry-After while the access token
 * is expired, the old access token while it is still valid), and the IdP's error_description never leaks.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Provider } from 'oidc-provider';
import { MESSAGES } from '../../src/http/errors';
import type { TokenRequestRecord } from '../support/idp';
import { startStack, type Stack } from '../support/stack';
import {
  accessTokensIssuedSince,
  api,
  bearersSeen,
  bodyOf,
  keysOf,
  login,
  logsOf,
  outcome,
  outliveAccessToken,
  outliveRefreshCooldown,
  refreshCounters,
  refreshTokenReuse,
  sessionInfo,
  setCookies,
  transcript,
} from '../support/refresh';
import { waitFor } from '../support/wait';

const AT_TTL = 2;
const MARKER = 'MARKER-7f3-refresh-failures';
const CLEARING = /^gatehouse=; Path=\/; HttpOnly; Max-Age=0; .*SameSite=Strict$/;
/** Requests that reached oidc-provider but were cut off before it looked at the refresh token. */
const cut = new Set<TokenRequestRecord>();

type FailureKind = 'invalid_client' | 'idp_error' | 'timeout' | 'network';

/** The gateway's own account of why a refresh failed (its log line for that session). */
function loggedFailures(s: Stack, cookie: string): unknown[] {
  return logsOf(s, keysOf(s, cookie))
    .filter((l) => l.msg === 'refresh failed; keeping the session')
    .map((l) => l.failure);
}

/**
 * A genuine network failure: the IdP's connection is reset as soon as a refresh grant reaches oidc-provider's
 * refresh-token lookup (before it consumes anything). Returns the undo.
 */
function resetConnectionsOnRefresh(s: Stack): () => void {
  const RT = (s.idp.provider as Provider).RefreshToken as unknown as { find: (...args: unknown[]) => Promise<unknown> };
  const own = Object.getOwnPropertyDescriptor(RT, 'find');
  RT.find = async () => {
    cut.add(s.idp.tokenRequests.at(-1)!);
    (Provider as unknown as { ctx?: { req: { socket: { destroy(): void } } } }).ctx?.req.socket.destroy();
    return undefined;
  };
  return () => {
    if (own) Object.defineProperty(RT, 'find', own);
    else delete (RT as { find?: unknown }).find;
  };
}

/** Asserts the session behind `cookie` still exists: /auth/session 200, its records in Redis, not dead. */
async function expectSessionKept(s: Stack, cookie: string): Promise<void> {
  const info = await sessionInfo(s.gw, cookie);
  expect(info.status).toBe(200);
  expect(bodyOf(info).authenticated).toBe(true);
  const keys = keysOf(s, cookie);
  expect(await s.redis!.exists(keys.sessionKey)).toBe(1);
  expect(await s.redis!.get(keys.tokensKey)).toMatch(/^\d+\|(?!dead$)/); // the sealed tokens, not the dead marker
}

/** A refresh failure while the access token is expired: 503 + Retry-After, session kept, no cookie change. */
function expectUnavailable(r: Awaited<ReturnType<typeof api>>): void {
  expect(r.status).toBe(503);
  expect(bodyOf(r)).toEqual({ error: 'token_refresh_unavailable', message: MESSAGES.token_refresh_unavailable });
  expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
  expect(setCookies(r)).toEqual([]);
}

describe('invalid_grant ends the session', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  it('answers 401 session_expired with a clearing cookie once the IdP revoked the grant, and removes the session’s Redis records', async () => {
    const cookie = await login(s, 'revoked');
    const keys = keysOf(s, cookie);
    expect((await api(s.gw, cookie)).status).toBe(200);
    expect(await s.redis!.exists(keys.sessionKey, keys.tokensKey)).toBe(2);
    expect(await s.idp.revoke('revoked')).toBeGreaterThan(0);
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const upstreamBefore = s.upstream.requests.length;

    const r = await api(s.gw, cookie);

    expect(r.status).toBe(401);
    expect(bodyOf(r)).toEqual({ error: 'session_expired', message: MESSAGES.session_expired });
    expect(setCookies(r)).toEqual([expect.stringMatching(CLEARING)]);
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    expect(s.idp.grantErrors.at(-1)).toMatchObject({ grantType: 'refresh_token', error: 'invalid_grant' });
    expect(s.upstream.requests.length).toBe(upstreamBefore); // the upstream is not called

    // Nothing of the session is left but the vault's short-lived "<version>|dead" marker (src/tokens/vault.ts),
    // which tells requests waiting on other replicas the outcome.
    const left = (await s.redis!.keys(`${s.prefix}*`)).filter((k) => k.includes(keys.hash));
    expect(left.filter((k) => k !== keys.tokensKey)).toEqual([]);
    const marker = await s.redis!.get(keys.tokensKey);
    if (marker !== null) {
      expect(marker).toMatch(/^\d+\|dead$/);
      const ttl = await s.redis!.pttl(keys.tokensKey);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_000);
    }
  });

  it('treats the old cookie as no session afterwards: 401 unauthenticated on /api and /auth/session, with no further refresh grant', async () => {
    const cookie = await login(s, 'revoked-replay');
    await s.idp.revoke('revoked-replay');
    await outliveAccessToken(AT_TTL);
    expect(outcome(await api(s.gw, cookie))).toEqual([401, 'session_expired']);
    const before = refreshCounters(s.idp);

    const replay = await api(s.gw, cookie);
    expect(replay.status).toBe(401);
    expect(bodyOf(replay)).toEqual({ error: 'unauthenticated', message: MESSAGES.unauthenticated });
    expect(setCookies(replay)).toEqual([expect.stringMatching(CLEARING)]);
    const info = await sessionInfo(s.gw, cookie);
    expect(info.status).toBe(401);
    expect(bodyOf(info)).toEqual({ error: 'unauthenticated', message: MESSAGES.unauthenticated });

    expect(refreshCounters(s.idp).grants).toBe(before.grants);
  });

  it('answers every one of 20 concurrent calls at that moment with 401 session_expired, none with 5xx', async () => {
    const cookie = await login(s, 'revoked-many');
    await s.idp.revoke('revoked-many');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    s.idp.delay(800); // every call is inside the gateway when the IdP's verdict arrives
    try {
      const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => api(s.gw, cookie, `/revoked-many/${i}`)));
      expect(rs.map(outcome)).toEqual(Array(20).fill([401, 'session_expired']));
    } finally {
      s.idp.delay(0);
    }
    expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
  });

  it('never presents a rotated refresh token again', () => {
    expect(refreshTokenReuse(s.idp)).toEqual([]);
    expect(s.idp.reuseDetected).toBe(0);
  });
});

describe('every other refresh failure keeps the session', () => {
  let s: Stack;

  interface Case {
    what: string;
    failure: FailureKind;
    /** Makes the IdP fail; returns the undo. */
    inject: (s: Stack) => () => void;
  }
  const failWith =
    (status: number, body: object, headers?: Record<string, string>) =>
    (st: Stack): (() => void) => {
      st.idp.failRefresh(status, body, headers ? { headers } : {});
      return () => st.idp.failRefresh(null);
    };
  const cases: Case[] = [
    {
      what: '503 temporarily_unavailable',
      failure: 'idp_error',
      inject: failWith(503, { error: 'temporarily_unavailable', error_description: MARKER }),
    },
    { what: '500 server_error', failure: 'idp_error', inject: failWith(500, { error: 'server_error', error_description: MARKER }) },
    {
      what: '429 with Retry-After',
      failure: 'idp_error',
      inject: failWith(429, { error: 'temporarily_unavailable', error_description: MARKER }, { 'Retry-After': '30' }),
    },
    {
      what: '400 invalid_client',
      failure: 'invalid_client',
      inject: failWith(400, { error: 'invalid_client', error_description: MARKER }),
    },
    {
      what: '401 invalid_client with a WWW-Authenticate challenge',
      failure: 'invalid_client',
      inject: failWith(
        401,
        { error: 'invalid_client', error_description: MARKER },
        { 'WWW-Authenticate': `Basic realm="idp", error="invalid_client", error_description="${MARKER}"` },
      ),
    },
    { what: '400 without an error code', failure: 'idp_error', inject: failWith(400, { error_description: MARKER }) },
    { what: 'a reset connection', failure: 'network', inject: resetConnectionsOnRefresh },
  ];
  const cookies = new Map<string, string>();

  beforeAll(async () => {
    s = await startStack();
    for (const [i, c] of cases.entries()) cookies.set(c.what, await login(s, `transient-${i}`));
    await outliveAccessToken(AT_TTL); // every one of these sessions now holds an expired access token
  });
  afterAll(() => s.close());

  it.each(cases)(
    'answers 503 token_refresh_unavailable with Retry-After when the IdP answers $what, and the same cookie works again once the IdP recovers',
    async ({ what, failure, inject }) => {
      const cookie = cookies.get(what)!;
      const before = refreshCounters(s.idp);
      const issued = s.idp.tokensIssued().length;
      const undo = inject(s);
      try {
        expectUnavailable(await api(s.gw, cookie));
      } finally {
        undo();
      }
      expect(refreshCounters(s.idp).grants - before.grants).toBe(1); // one attempt, no retry storm
      expect(loggedFailures(s, cookie)).toEqual([failure]);
      await expectSessionKept(s, cookie);

      await outliveRefreshCooldown();
      const healed = await api(s.gw, cookie);
      expect(healed.status).toBe(200);
      const after = refreshCounters(s.idp);
      expect(after.grants - before.grants).toBe(2);
      expect(after.ok - before.ok).toBe(1);
      expect(after.reuse).toBe(0);
      expect(bearersSeen(s, 1)).toEqual([`Bearer ${accessTokensIssuedSince(s.idp, issued)[0]}`]);
    },
  );

  it('never presents a rotated refresh token again', () => {
    expect(refreshTokenReuse(s.idp, cut)).toEqual([]);
    expect(s.idp.reuseDetected).toBe(0);
  });
});

describe('an IdP slower than the gateway’s IdP timeout', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ gateway: { idpTimeoutSeconds: 1 } });
  });
  afterAll(() => s.close());

  it('answers 503 token_refresh_unavailable while the IdP hangs, keeps the session, and 200 once the IdP is healthy again', async () => {
    const cookie = await login(s, 'hanging');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    const requests = s.idp.tokenRequests.length;
    // The IdP holds the grant for 2.5 s, past the gateway's 1 s timeout, and then fails it: the late answer
    // never rotates the refresh token the gateway still holds (a late *success* would be a lost rotation).
    s.idp.failRefresh(503, { error: 'temporarily_unavailable', error_description: MARKER }, { times: 1 });
    s.idp.delay(2500);
    try {
      expectUnavailable(await api(s.gw, cookie));
      expect(loggedFailures(s, cookie)).toEqual(['timeout']);
      await expectSessionKept(s, cookie);
      // let the abandoned grant finish at the IdP (it takes the one injected failure)
      await waitFor('the abandoned grant to be answered', () => s.idp.tokenRequests[requests]?.status !== undefined);
    } finally {
      s.idp.delay(0);
      s.idp.failRefresh(null);
    }
    expect(s.idp.tokenRequests[requests]).toMatchObject({ grantType: 'refresh_token', injected: true });

    await outliveRefreshCooldown();
    expect((await api(s.gw, cookie)).status).toBe(200);
    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(2);
    expect(after.ok - before.ok).toBe(1);
    expect(after.reuse).toBe(0);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
  });
});

describe('graceful degradation inside the refresh window', () => {
  // access tokens live 10 s; skew 5 s: refreshed in the background from 5 s on, sent until 8 s (the margin is 2 s)
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ idp: { accessTokenTtl: 10 }, gateway: { refreshSkewSeconds: 5 } });
  });
  afterAll(() => s.close());

  it.each([
    { what: '503', status: 503, body: { error: 'temporarily_unavailable', error_description: MARKER } },
    { what: '400 invalid_client', status: 400, body: { error: 'invalid_client', error_description: MARKER } },
  ])(
    'proxies with the still-valid access token when the early refresh fails with $what, and refreshes once the IdP recovers',
    async ({ status, body }) => {
      const cookie = await login(s, `early-${status}`);
      expect((await api(s.gw, cookie)).status).toBe(200);
      const [original] = bearersSeen(s, 1);
      await sleep(5300); // inside the refresh window; the access token may be sent for about 2.7 s more
      const before = refreshCounters(s.idp);
      const issued = s.idp.tokensIssued().length;

      s.idp.failRefresh(status, body);
      try {
        const r = await api(s.gw, cookie);
        expect(r.status).toBe(200);
        expect(bearersSeen(s, 1)).toEqual([original]); // the upstream got the old, still-valid token
        expect(setCookies(r)).toEqual([]);
        // the refresh runs in the background, and fails there
        await waitFor('the early refresh to reach the IdP', () => refreshCounters(s.idp).grants - before.grants === 1);
      } finally {
        s.idp.failRefresh(null);
      }

      await outliveRefreshCooldown();
      expect((await api(s.gw, cookie)).status).toBe(200); // tries again, in the background, with the old token meanwhile
      expect(bearersSeen(s, 1)).toEqual([original]);
      // Stored, not only answered by the IdP: the session's refresh count moves when the new tokens are written.
      await waitFor(
        'the refreshed tokens to be stored',
        async () => ((await sessionInfo(s.gw, cookie)).body as { refreshCount: number }).refreshCount === 1,
      );
      expect(refreshCounters(s.idp).ok - before.ok).toBe(1);
      expect((await api(s.gw, cookie)).status).toBe(200);
      const [fresh] = accessTokensIssuedSince(s.idp, issued);
      expect(bearersSeen(s, 1)).toEqual([`Bearer ${fresh}`]);
      expect(`Bearer ${fresh}`).not.toBe(original);
      const after = refreshCounters(s.idp);
      expect(after.grants - before.grants).toBe(2);
      expect(after.ok - before.ok).toBe(1);
      expect(refreshTokenReuse(s.idp)).toEqual([]);
    },
  );
});

describe('every response of this file', () => {
  it('never carries the IdP’s error_description', () => {
    expect(transcript.length).toBeGreaterThan(30);
    for (const r of transcript) expect(JSON.stringify(r)).not.toContain(MARKER);
  });
});

describe('a failing IdP is not hammered', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ instances: 2 });
  });
  afterAll(() => s.close());

  it('sends one refresh grant for a session while the IdP fails, whatever the number of requests and replicas, and retries after Retry-After', async () => {
    const cookie = await login(s, 'outage');
    await outliveAccessToken(AT_TTL);
    const before = refreshCounters(s.idp);
    s.idp.failRefresh(503, { error: 'temporarily_unavailable', error_description: MARKER });
    try {
      const first = await api(s.gw, cookie);
      expectUnavailable(first);
      const rest = await Promise.all(Array.from({ length: 20 }, (_, i) => api(s.instances[i % 2]!, cookie)));
      for (const r of rest) expectUnavailable(r);
      expect(refreshCounters(s.idp).grants - before.grants).toBe(1);
    } finally {
      s.idp.failRefresh(null);
    }
    await outliveRefreshCooldown();
    expect((await api(s.instances[1]!, cookie)).status).toBe(200);
    expect(refreshCounters(s.idp).grants - before.grants).toBe(2);
    expect(refreshTokenReuse(s.idp)).toEqual([]);
  });
});
