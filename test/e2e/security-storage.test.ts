/**
 * Token storage and secrecy: after real logins, refreshes and a logout, a dump of every Redis key under
 * the gateway's prefix holds no token, no raw session id and no user claim in clear, and every key expires;
 * no gateway response and no gateway log line carries a token or a raw session id.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { loginAs, type Agent } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';
import {
  dumpAll,
  issuedCookie,
  leaks,
  recordResponses,
  scannable,
  sessionIdOf,
  settle,
  startLogin,
  tokenForms,
  type RedisEntry,
  type Recorded,
} from '../support/security';

describe('security: nothing secret at rest, on the wire or in the logs', () => {
  let s: Stack;
  let recorded: Recorded[];
  let dump: RedisEntry[];
  const tag = randomBytes(4).toString('hex');
  const subs = [`store-a-${tag}`, `store-b-${tag}`, `store-c-${tag}`];
  /** the raw (URL-encoded) cookie values and the session ids inside them */
  const cookieValues: string[] = [];
  const sessionIds: string[] = [];
  const refreshesBefore = { n: 0 };

  beforeAll(async () => {
    s = await startStack();
    recorded = recordResponses(s.gw.server);
    const browsers: Agent[] = [];
    for (const sub of subs) {
      const agent = s.gw.agent();
      const cb = await loginAs(agent, s.idp, sub, '/start');
      const value = issuedCookie(cb, 'gatehouse').value;
      cookieValues.push(value);
      sessionIds.push(sessionIdOf(value));
      browsers.push(agent);
    }
    // a login that is never finished leaves a transaction record behind
    await startLogin(s.gw.agent(), '/auth/login?returnTo=%2Fpending');
    refreshesBefore.n = s.idp.refreshSucceeded;

    const callAll = () => Promise.all(browsers.map((b) => b.get('/api/status/200').set(SPA).expect(200)));
    const sessionAll = () => Promise.all(browsers.map((b) => b.get('/auth/session').set(SPA).expect(200)));
    await callAll();
    await sessionAll();
    await sleep(2100); // past the 2 s access-token lifetime: each call refreshes first
    await callAll();
    await sleep(1100); // past the refresh point (skew 1 s) again
    await callAll();
    await sessionAll();
    await browsers[2]!.post('/auth/logout').set(SPA).expect(200);
    await browsers[2]!.get('/api/status/200').set(SPA).expect(401);
    await settle();
    dump = await dumpAll(s);
  });
  afterAll(() => s.close());

  it('the scenario really refreshed and stored something', () => {
    expect(s.idp.refreshSucceeded - refreshesBefore.n).toBeGreaterThanOrEqual(6);
    expect(s.idp.tokensIssued().length).toBeGreaterThanOrEqual(3 * 3 + 6 * 2);
    // two live sessions (session + token record each) and the pending login transaction
    expect(dump.length).toBeGreaterThanOrEqual(5);
  });

  it('no access, refresh or ID token appears in any Redis key or value', () => {
    const tokens = tokenForms(s.idp.tokensIssued());
    // also each JWT's parts on their own (a stored payload or signature would leak the claims or be replayable)
    const jwtParts = s.idp
      .tokensIssued()
      .filter((t) => t.split('.').length === 3)
      .flatMap((t) => t.split('.').slice(1));
    const found = dump.flatMap((e) => leaks(`${e.key}\n${e.value}`, [...tokens, ...jwtParts]).map((l) => `${e.key}: ${l}`));
    expect(found).toEqual([]);
  });

  it('no raw session id appears in any Redis key or value (live or logged out)', () => {
    const forms = [...sessionIds, ...cookieValues, ...cookieValues.map(decodeURIComponent)];
    const found = dump.flatMap((e) => leaks(`${e.key}\n${e.value}`, forms).map((l) => `${e.key}: ${l}`));
    expect(found).toEqual([]);
  });

  it('no user claim (sub, email, name) appears in clear in Redis', () => {
    const claims = subs.flatMap((sub) => [sub, `${sub}@example.test`, `Test ${sub}`]);
    const text = dump.map((e) => `${e.key}\n${e.value}`).join('\n');
    for (const c of claims) expect(text.includes(c) ? c : null).toBeNull();
    for (const needle of ['example.test', 'email', '"sub"', 'refresh_token', 'access_token', 'id_token']) {
      expect(text.includes(needle) ? needle : null).toBeNull();
    }
  });

  it('every key under the prefix has a TTL (login transactions at most 600 s)', () => {
    for (const e of dump) expect({ key: e.key, hasTtl: e.pttl > 0 }).toEqual({ key: e.key, hasTtl: true });
    const tx = dump.filter((e) => e.key.startsWith(`${s.prefix}x:`));
    expect(tx.length).toBeGreaterThanOrEqual(1);
    for (const e of tx) expect(e.pttl).toBeLessThanOrEqual(600_000);
  });

  it('no token the IdP issued reaches the browser in any response header or body (only id_token_hint in logoutUrl)', () => {
    expect(recorded.length).toBeGreaterThan(15);
    const tokens = tokenForms(s.idp.tokensIssued());
    const found = recorded.flatMap((r) => leaks(scannable(r, s.idp.issuer), tokens).map((l) => `${r.method} ${r.url}: ${l}`));
    expect(found).toEqual([]);
  });

  it('the gateway logs hold no token, no raw session id and no cookie value', () => {
    expect(s.logs.length).toBeGreaterThan(0);
    expect(s.logs.some((l) => l.includes('"login"'))).toBe(true);
    const secrets = [...tokenForms(s.idp.tokensIssued()), ...sessionIds, ...cookieValues, ...cookieValues.map(decodeURIComponent)];
    const found = s.logs.flatMap((line, i) => leaks(line, secrets).map((l) => `line ${i}: ${l}`));
    expect(found).toEqual([]);
  });
});
