import { setTimeout as sleep } from 'node:timers/promises';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

type Line = Record<string, unknown>;

describe('structured request log and audit events', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s.close());

  const lines = (): Line[] => s.logs.map((l) => JSON.parse(l) as Line);

  it('writes one line per request with its id, route, status and duration, and the session only as its hash', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'nora');
    const cookie = String(cb.headers['set-cookie']).match(/gatehouse=([^;]+)/)![1]!;
    const r = await browser.get('/api/things?secret-query=1').set(SPA).expect(200);
    const id = String(r.headers['x-request-id']);
    const line = lines().find((l) => l.requestId === id);
    expect(line).toMatchObject({ event: 'request', method: 'GET', route: '/api', status: 200 });
    expect(typeof line!.ms).toBe('number');
    expect(line!.session).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const sid = decodeURIComponent(cookie).slice(2, 45);
    expect(JSON.stringify(line)).not.toContain(sid);
    expect(JSON.stringify(line)).not.toContain('secret-query');
  });

  it('records a CSRF rejection as an audit event with its reason', async () => {
    await s.gw.agent().get('/api/x').expect(403);
    await s.gw.agent().get('/api/x').set(SPA).set('Origin', 'https://evil.example').expect(403);
    const events = lines().filter((l) => l.event === 'csrf_rejected');
    expect(events.map((e) => e.reason)).toEqual(expect.arrayContaining(['missing X-CSRF: 1', 'foreign Origin']));
  });

  it('never logs a token the IdP issued, a cookie or a session id, through login, refresh, failure and logout', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'omar');
    const cookie = decodeURIComponent(String(cb.headers['set-cookie']).match(/gatehouse=([^;]+)/)![1]!);
    await browser.get('/api/a').set(SPA).expect(200);
    await sleep(2100);
    await browser.get('/api/b').set(SPA).expect(200); // a refresh
    s.idp.failRefresh(503);
    await sleep(2100);
    await browser.get('/api/c').set(SPA).expect(503); // a failed refresh is logged with its cause
    s.idp.failRefresh(null);
    await browser.post('/auth/logout').set(SPA).expect(200);
    const all = s.logs.join('\n');
    const secrets = [...s.idp.tokensIssued(), cookie, cookie.slice(2, 45)];
    expect(secrets.length).toBeGreaterThan(4);
    for (const secret of secrets) expect(all.includes(secret) ? secret.slice(0, 12) : null).toBeNull();
  });
});
