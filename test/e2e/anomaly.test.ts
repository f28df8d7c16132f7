import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

/**
 * Access tokens live 2 s here and are not sent in their last half second (the margin, a quarter of their
 * life): each call 1.7 s after the last finds its token inside the margin and waits for one refresh. (With
 * 1 s tokens, oidc-provider may answer expires_in 0 when the second turns over, which reads as "no lifetime
 * given".)
 */
async function refreshThrice(s: Stack, sub: string): Promise<number[]> {
  const browser = s.gw.agent();
  await loginAs(browser, s.idp, sub);
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) {
    await sleep(1700);
    statuses.push((await browser.get('/api/x').set(SPA)).status);
  }
  return statuses;
}

describe('anomalous refresh rate', () => {
  describe('logged and counted', () => {
    let s: Stack;
    beforeAll(async () => {
      s = await startStack({ idp: { accessTokenTtl: 2 }, gateway: { anomalyRefreshesPerHour: 2 } });
    });
    afterAll(() => s.close());

    it('reports a session refreshing more often than the bound as a security event and in a metric, and keeps it by default', async () => {
      expect(await refreshThrice(s, 'pia')).toEqual([200, 200, 200]);
      expect(s.idp.grants.refresh_token).toBe(3);
      // The report runs beside the request (it never delays it): wait for it.
      const anomalies = () => s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'refresh_anomaly');
      await waitFor('the anomaly report', () => anomalies().length !== 0, 2000);
      const events = anomalies();
      expect(events).toEqual([expect.objectContaining({ refreshesThisHour: 3, bound: 2 })]);
      const text = (await request(s.gw.gatehouse.adminApp).get('/metrics').expect(200)).text;
      expect(text).toMatch(/^gatehouse_security_events_total\{kind="refresh_rate"\} 1$/m);
    });
  });

  describe('with GATEHOUSE_ANOMALY_END_SESSION=true', () => {
    let s: Stack;
    beforeAll(async () => {
      s = await startStack({ idp: { accessTokenTtl: 2 }, gateway: { anomalyRefreshesPerHour: 2, anomalyEndSession: 'true' } });
    });
    afterAll(() => s.close());

    it('ends the session at the refresh that crosses the bound: 401 session_expired', async () => {
      expect(await refreshThrice(s, 'quin')).toEqual([200, 200, 401]);
      const text = (await request(s.gw.gatehouse.adminApp).get('/metrics').expect(200)).text;
      expect(text).toMatch(/^gatehouse_sessions_ended_total\{reason="anomaly"\} 1$/m);
      expect(text).toMatch(/^gatehouse_sessions_ended_total\{reason="invalid_grant"\} 0$/m);
    });
  });
});
