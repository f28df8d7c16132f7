import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

/** The value of one series in Prometheus text format (`name{labels} value`), or undefined. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('Prometheus metrics on the admin port', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ gateway: { metricsPort: 9464 } });
  });
  afterAll(() => s.close());

  const scrape = async () =>
    (
      await request(s.gw.gatehouse.adminApp)
        .get('/metrics')
        .expect(200)
        .expect('Content-Type', /text\/plain/)
    ).text;

  it('counts proxied requests, refreshes and sessions by name and value after a known sequence', async () => {
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'mia');
    for (let i = 0; i < 3; i++) await browser.get('/api/x').set(SPA).expect(200);
    await browser.get('/api/x').expect(403); // no X-CSRF
    await s.gw.agent().get('/api/x').set(SPA).expect(401);
    await sleep(2100); // the access token expires: one refresh
    await browser.get('/api/x').set(SPA).expect(200);
    await s.idp.revoke('mia');
    await sleep(2100);
    await browser.get('/api/x').set(SPA).expect(401); // invalid_grant ends the session
    const other = s.gw.agent();
    await loginAs(other, s.idp, 'max');
    await other.post('/auth/logout').set(SPA).expect(200);

    const text = await scrape();
    expect(value(text, 'gatehouse_proxy_requests_total{route="api",status_class="2xx"}')).toBe(4);
    expect(value(text, 'gatehouse_proxy_requests_total{route="api",status_class="4xx"}')).toBe(3);
    expect(value(text, 'gatehouse_proxy_request_duration_seconds_count{route="api"}')).toBe(7);
    expect(value(text, 'gatehouse_refresh_total{outcome="ok",mode="foreground"}')).toBe(1);
    expect(value(text, 'gatehouse_refresh_total{outcome="invalid_grant",mode="foreground"}')).toBe(1);
    expect(value(text, 'gatehouse_refresh_total{outcome="transient",mode="foreground"}')).toBe(0);
    expect(value(text, 'gatehouse_refresh_duration_seconds_count')).toBe(2);
    expect(value(text, 'gatehouse_sessions_created_total')).toBe(2);
    expect(value(text, 'gatehouse_sessions_ended_total{reason="invalid_grant"}')).toBe(1);
    expect(value(text, 'gatehouse_sessions_ended_total{reason="logout"}')).toBe(1);
    expect(value(text, 'gatehouse_redis_errors_total')).toBe(0);
    expect(value(text, 'gatehouse_redis_command_duration_seconds_count')).toBeGreaterThan(0);
    expect(text).toMatch(/^gatehouse_process_cpu_seconds_total /m); // default process metrics
  });

  it('is served on the admin port only, never on the public port', async () => {
    await s.gw.agent().get('/metrics').expect(404);
  });
});
