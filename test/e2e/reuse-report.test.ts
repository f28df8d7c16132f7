/**
 * An anomaly signal: refresh-token reuse reported by the IdP (RFC 9700 §4.14.2). The test IdP's
 * oidc-provider detects a real reuse (an old refresh token presented again, as a thief would) and its event
 * hook POSTs the report to the gateway's admin port, which really listens here (GATEHOUSE_METRICS_PORT).
 */
import request from 'supertest';
import { loginAs } from '../support/login';
import { closeServer, reserveServer, type ReservedServer } from '../support/login';
import { dumpRedis, startStack, SPA, type Stack } from '../support/stack';
import type { Agent } from '../support/login';

const ADMIN_TOKEN = 'admin-token-of-the-reuse-report-test-0123456789';
const REPORT = '/admin/security/refresh-token-reuse';

type LogLine = Record<string, unknown>;

/**
 * A stack whose admin app listens on the port its GATEHOUSE_METRICS_PORT names (reserved first), with the
 * IdP's reuse webhook pointed at it.
 */
async function startReportingStack(opts: { endSession: boolean; backchannel: boolean }): Promise<{ s: Stack; admin: ReservedServer }> {
  const admin = await reserveServer();
  const s = await startStack({
    idp: { accessTokenTtl: 1 },
    backchannel: opts.backchannel,
    gateway: { adminToken: ADMIN_TOKEN, metricsPort: admin.port, anomalyEndSession: String(opts.endSession) },
  });
  admin.on('request', s.gw.gatehouse.adminApp);
  s.idp.reportReuseTo({ url: `${admin.url}${REPORT}`, token: ADMIN_TOKEN });
  return { s, admin };
}

/** Logs in, lets the gateway refresh once, and returns the refresh token that refresh rotated away. */
async function loginAndRotate(s: Stack, sub: string): Promise<{ browser: Agent; oldRefreshToken: string }> {
  const browser = s.gw.agent();
  await loginAs(browser, s.idp, sub);
  const before = s.idp.tokenRequests.length;
  await s.idp.waitForAccessTokenExpiry();
  await browser.get('/api/x').set(SPA).expect(200);
  const refresh = s.idp.tokenRequests.slice(before).find((r) => r.grantType === 'refresh_token' && r.status === 200);
  return { browser, oldRefreshToken: refresh!.refreshToken! };
}

/** What a thief with a stolen, already-rotated refresh token does: present it at the IdP's token endpoint. */
async function presentAtIdp(s: Stack, refreshToken: string): Promise<{ status: number; body: { error?: string } }> {
  const res = await fetch(s.idp.tokenEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${s.idp.clientId}:${s.idp.clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  });
  return { status: res.status, body: (await res.json()) as { error?: string } };
}

const events = (s: Stack, event: string) => s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.event === event);
const metricsText = async (s: Stack) => (await request(s.gw.gatehouse.adminApp).get('/metrics').expect(200)).text;
const listSessions = async (s: Stack, sub: string) =>
  (
    (await request(s.gw.gatehouse.adminApp).get(`/admin/sessions?sub=${sub}`).set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200))
      .body as { sessions: Array<{ session: string }> }
  ).sessions.map((x) => x.session);

describe('refresh-token reuse reported by the IdP', () => {
  describe('logged and counted (GATEHOUSE_ANOMALY_END_SESSION unset)', () => {
    let s: Stack;
    let admin: ReservedServer;
    beforeAll(async () => {
      ({ s, admin } = await startReportingStack({ endSession: false, backchannel: false }));
    });
    afterAll(async () => {
      await s.close();
      await closeServer(admin);
    });

    it('RFC 9700 §4.14.2 refresh token reuse detection: a reuse the IdP detects is a security event in the log and the metric', async () => {
      const { oldRefreshToken } = await loginAndRotate(s, 'rhea');
      const [session] = await listSessions(s, 'rhea');
      expect((await metricsText(s)).match(/^gatehouse_security_events_total\{kind="refresh_token_reuse"\} 0$/m)).not.toBeNull();

      const thief = await presentAtIdp(s, oldRefreshToken);
      expect([thief.status, thief.body.error]).toEqual([400, 'invalid_grant']);
      const reports = await s.idp.reuseReportsDelivered();
      // Without a back-channel logout registration, oidc-provider puts no sid in the grant: the report names the user.
      expect(reports).toEqual([{ body: { sub: 'rhea', iss: s.idp.issuer }, status: 200 }]);

      expect(events(s, 'refresh_token_reuse')).toEqual([
        expect.objectContaining({ level: 'warn', sub: 'rhea', by: 'sub', sessions: [session], ended: 0 }),
      ]);
      const text = await metricsText(s);
      expect(text).toMatch(/^gatehouse_security_events_total\{kind="refresh_token_reuse"\} 1$/m);
      expect(text).toMatch(/^gatehouse_security_events_total\{kind="refresh_rate"\} 0$/m);
      expect(text).toMatch(/^gatehouse_sessions_ended_total\{reason="anomaly"\} 0$/m);
      // Reported, not ended: the session is still listed.
      expect(await listSessions(s, 'rhea')).toEqual([session]);
    });

    it('refuses a report without the admin token (401) or with a wrong one', async () => {
      await request(admin).post(REPORT).send({ sub: 'rhea' }).expect(401);
      await request(admin).post(REPORT).set('Authorization', 'Bearer wrong-token').send({ sub: 'rhea' }).expect(401);
    });

    it('answers 400 invalid_request to a malformed report: bad sub, bad sid, another issuer, unknown members', async () => {
      const bad: unknown[] = [
        {},
        { sub: 7 },
        { sub: '' },
        { sub: 'a b' },
        { sub: 'x'.repeat(256) },
        { sub: 'rhea', sid: 42 },
        { sub: 'rhea', sid: 'a b' },
        { sub: 'rhea', iss: 'https://other-idp.example' },
        { sub: 'rhea', iss: `${s.idp.issuer}/` },
        { sub: 'rhea', session_id: 'abc' },
        ['rhea'],
      ];
      for (const body of bad) {
        const r = await request(admin)
          .post(REPORT)
          .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
          .send(body as object);
        expect({ body, status: r.status, error: (r.body as { error?: string }).error }).toEqual({
          body,
          status: 400,
          error: 'invalid_request',
        });
      }
    });

    it('answers 200 with ended 0 for a user with no session, naming the configured issuer', async () => {
      const r = await request(admin)
        .post(REPORT)
        .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
        .send({ sub: 'nobody-here', sid: 'no-such-sid', iss: s.idp.issuer })
        .expect(200);
      expect(r.body).toEqual({ reported: true, ended: 0 });
    });

    it('is not served on the public port', async () => {
      await s.gw.agent().post(REPORT).set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ sub: 'rhea' }).expect(404);
    });
  });

  describe('with GATEHOUSE_ANOMALY_END_SESSION=true', () => {
    let s: Stack;
    let admin: ReservedServer;
    beforeAll(async () => {
      ({ s, admin } = await startReportingStack({ endSession: true, backchannel: true }));
    });
    afterAll(async () => {
      await s.close();
      await closeServer(admin);
    });

    it('RFC 9700 §4.14.2 refresh token reuse detection: ends the session of the reused grant (by the IdP sid) and leaves the user’s other sessions alone', async () => {
      const other = s.gw.agent();
      await loginAs(other, s.idp, 'sven');
      const [kept] = await listSessions(s, 'sven');
      const { browser, oldRefreshToken } = await loginAndRotate(s, 'sven');
      const reused = (await listSessions(s, 'sven')).find((h) => h !== kept)!;

      expect((await presentAtIdp(s, oldRefreshToken)).status).toBe(400);
      const [report] = await s.idp.reuseReportsDelivered();
      expect(report).toMatchObject({ body: { sub: 'sven', iss: s.idp.issuer }, status: 200 });
      expect(typeof report!.body.sid).toBe('string');

      expect(events(s, 'refresh_token_reuse')).toEqual([expect.objectContaining({ sub: 'sven', by: 'sid', sessions: [reused], ended: 1 })]);
      expect(events(s, 'refresh_token_reuse')[0]).not.toHaveProperty('sid');
      const text = await metricsText(s);
      expect(text).toMatch(/^gatehouse_security_events_total\{kind="refresh_token_reuse"\} 1$/m);
      expect(text).toMatch(/^gatehouse_sessions_ended_total\{reason="anomaly"\} 1$/m);

      // Ended on the gateway: the next call is 401 and the session's records are gone.
      const r = await browser.get('/api/x').set(SPA).expect(401);
      expect(r.body).toMatchObject({ error: 'unauthenticated' });
      expect(await listSessions(s, 'sven')).toEqual([kept]);
      // (The refresh-rate counter, a bare count with a one-hour TTL, is not a session record and outlives it.)
      const left = (await dumpRedis(s)).filter((e) => e.key.includes(reused) && !e.key.startsWith(`${s.prefix}r:`));
      expect(left).toEqual([]);
      // The user's other session (another IdP session, another grant) is untouched.
      await other.get('/api/x').set(SPA).expect(200);
    });

    it('ends every session of the user when the report names no sid', async () => {
      const a = s.gw.agent();
      const b = s.gw.agent();
      await loginAs(a, s.idp, 'tova');
      await loginAs(b, s.idp, 'tova');
      const r = await request(admin).post(REPORT).set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ sub: 'tova' }).expect(200);
      expect(r.body).toEqual({ reported: true, ended: 2 });
      await a.get('/api/x').set(SPA).expect(401);
      await b.get('/api/x').set(SPA).expect(401);
      expect(await listSessions(s, 'tova')).toEqual([]);
    });
  });
});
