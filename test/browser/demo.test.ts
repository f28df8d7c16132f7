/**
 * The demo SPA in a real browser: Debian's Chromium (never a downloaded one) driven by playwright-core,
 * against the demo stack of `npm run demo` (scripts/demo.ts startDemo) on ephemeral ports: the real
 * oidc-provider with its HTML login form and sign-out confirmation (no consent form: the demo's client is
 * its first-party app) and 3 s access tokens, the demo API (with its WebSocket clock), real Redis
 * (REDIS_URL from jest's globalSetup) and Gatehouse serving the SPA built on gatehouse-bff/client.
 *
 * While the SPA's live clock (a WebSocket) is open, Gatehouse refreshes the access token for it at every
 * refresh point: the tests of the HTTP refresh path stop the clock first, as a user would with its button.
 *
 * Without Chromium the suite is skipped with a loud warning, except in CI (CI=true), where .ci/run
 * installs it: there a missing browser fails the suite rather than passing by skipping.
 *
 * Screenshots of the key states go to a temp folder; with UPDATE_SCREENSHOTS=1 they replace
 * docs/screenshots/*.png (the README shows one), so a normal run never dirties the work tree.
 *
 * One file over 250 lines: the tests share one Chromium and one demo stack, whose start is much of the time.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startDemo, type Demo } from '../../scripts/demo';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];
const ROOT = resolve(__dirname, '../..');
const SHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/screenshots') : join(tmpdir(), 'gatehouse-screenshots');
const haveChromium = existsSync(CHROMIUM);

if (!haveChromium) {
  const line = '!'.repeat(100);
  console.warn(
    `\n${line}\n!! BROWSER TESTS ${process.env.CI === 'true' ? 'FAIL' : 'SKIPPED'}: no Chromium at ${CHROMIUM}\n` +
      `!! Install Debian's package (apt-get install chromium) or set CHROMIUM_PATH.\n${line}\n`,
  );
  if (process.env.CI === 'true') {
    it('has Chromium in CI (.ci/run installs it)', () => {
      throw new Error(`no Chromium at ${CHROMIUM}`);
    });
  }
}

interface SessionBody {
  user: { sub: string };
  accessTokenExpiresAt: number;
  refreshCount: number;
}

(haveChromium ? describe : describe.skip)('demo SPA in Chromium', () => {
  let demo: Demo;
  let browser: Browser;
  const prefix = `gatehouse-browser-${randomBytes(4).toString('hex')}:`;

  beforeAll(async () => {
    // The SPA and gatehouse-bff/client as `npm run build` makes them (only this suite needs them).
    execFileSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', join(ROOT, 'tsconfig.client.json')], { stdio: 'inherit' });
    mkdirSync(SHOTS, { recursive: true });
    demo = await startDemo({
      port: 0,
      idpPort: 0,
      apiPort: 0,
      accessTokenTtl: 3,
      refreshSkewSeconds: 1,
      redisUrl: process.env.REDIS_URL,
      keyPrefix: prefix,
      logLevel: 'error',
    });
    // launch() gives every run a fresh temporary user-data dir of its own.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await demo?.close();
    const redis = new Redis(process.env.REDIS_URL!);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
  });

  /** A fresh browser profile's context; nothing it loads may leave this machine (the IdP's page imports a web font). */
  async function newContext(): Promise<BrowserContext> {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    await context.route(/^https?:\/\/(?!localhost[:/]|127\.0\.0\.1[:/])/, (route) => route.abort());
    return context;
  }

  const visible = (page: Page, selector: string) => page.locator(selector).waitFor({ state: 'visible', timeout: 15_000 });
  const text = (page: Page, selector: string) => page.locator(selector).innerText();
  const shot = (page: Page, name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

  /** The Log in button, then the IdP's own login form, back to the SPA. */
  async function logIn(page: Page, user: string, screenshot = false): Promise<void> {
    await page.goto(`${demo.url}/`);
    await visible(page, '#login');
    if (screenshot) await shot(page, 'logged-out');
    await page.click('#login');
    await visible(page, 'input[name=login]');
    expect(page.url().startsWith(`${demo.idp.issuer}/`)).toBe(true);
    await page.fill('input[name=login]', user);
    await page.fill('input[name=password]', 'any password');
    if (screenshot) await shot(page, 'idp-login');
    await page.click('button[type=submit]');
    await backFromIdp(page);
  }

  /**
   * Waits for the logged-in SPA. The demo's client is the IdP's own app: the IdP never shows its consent
   * form, neither to a fresh browser nor after the grant was revoked.
   */
  async function backFromIdp(page: Page): Promise<void> {
    const back = page.waitForURL(`${demo.url}/`, { timeout: 15_000 }).then(() => 'back to the SPA');
    const consent = page
      .locator('input[name=prompt][value=consent]')
      .waitFor({ state: 'attached', timeout: 15_000 })
      .then(() => 'the IdP’s consent form');
    back.catch(() => undefined);
    consent.catch(() => undefined);
    expect(await Promise.race([back, consent])).toBe('back to the SPA');
    await visible(page, '#logged-in');
  }

  /** GET /auth/session from the page, as the SPA does. */
  const sessionOf = (page: Page) =>
    page.evaluate(async () => (await fetch('/auth/session', { headers: { 'X-CSRF': '1' } })).json() as Promise<SessionBody>);

  /** Waits until the page's access token is past its end; returns its refresh count. */
  async function pastTokenExpiry(page: Page): Promise<number> {
    const s = await sessionOf(page);
    await page.waitForFunction((end) => Date.now() / 1000 > end + 1, s.accessTokenExpiresAt, { polling: 100, timeout: 15_000 });
    return s.refreshCount;
  }

  /** Stops the live clock (its button), once it is live, so that the access token is left to expire. */
  async function stopClock(page: Page): Promise<void> {
    await visible(page, '#clock-state >> text=live');
    await page.click('#clock-toggle');
    await visible(page, '#clock-state >> text=stopped');
  }

  /** Records every WebSocket close the page sees (code, reason), before the SPA's script runs. */
  const RECORD_CLOSES = `{
    const Native = window.WebSocket;
    window.closes = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('close', (e) => window.closes.push({ code: e.code, reason: e.reason }));
      }
    };
  }`;
  const closesOf = (page: Page) => page.evaluate<Array<{ code: number; reason: string }>>('window.closes');

  /** Clicks "Call the API" and waits for this call's answer on the page. */
  async function callApi(page: Page): Promise<string> {
    // Page code goes as strings: this file compiles without the DOM library.
    await page.evaluate("document.getElementById('api-status').textContent = ''");
    await page.click('#call-api');
    await visible(page, '#api-status:not(:empty)');
    return text(page, '#api-status');
  }

  it('logs in through the IdP’s form, shows the user, keeps the session cookie out of reach of scripts, and calls the API', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await logIn(page, 'alice', true);

    expect(await text(page, '#user-name')).toBe('Test alice');
    expect(await text(page, '#user-sub')).toBe('alice');
    expect(await text(page, '#user-email')).toBe('alice@example.test');
    const cookies = await context.cookies(demo.url);
    const session = cookies.find((c) => c.name === 'gatehouse');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    const jsCookies = await page.evaluate<string>('document.cookie');
    expect(jsCookies).not.toContain('gatehouse=');
    expect(jsCookies).not.toContain(session!.value);

    expect(await callApi(page)).toBe('200');
    const body = JSON.parse(await text(page, '#api-result')) as { sub: string; bearerHeaderSeen: boolean; cookieSeen: boolean };
    expect(body).toMatchObject({ sub: 'alice', bearerHeaderSeen: true, cookieSeen: false });
    await visible(page, '#token-left');
    expect(await text(page, '#token-left')).toMatch(/^\d+ s$|^expired/);
    await shot(page, 'logged-in');
    await context.close();
  });

  it('leaves the console clean while logged out: one look at /auth/session, no 401s on a timer, no favicon 404', async () => {
    const context = await newContext();
    const page = await context.newPage();
    const refused: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push(`${r.status()} ${new URL(r.url()).pathname}`);
    });
    await page.goto(`${demo.url}/`);
    await visible(page, '#logged-out');
    await page.waitForTimeout(5000); // two and a half of the logged-in view's polling periods
    expect(refused).toEqual(['401 /auth/session']);
    const icon = await page.evaluate<string>("document.querySelector('link[rel=icon]')?.href ?? ''");
    expect(icon.startsWith(`${demo.url}/`)).toBe(true);
    expect((await fetch(icon)).status).toBe(200);
    await context.close();
  });

  it('refreshes an expired access token transparently: the next call succeeds without leaving the page', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await logIn(page, 'bob');
    await stopClock(page);
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations++;
    });
    await page.evaluate('window.stayed = true');

    const refreshes = await pastTokenExpiry(page);
    await visible(page, '#token-left >> text=/^expired/');
    const grants = demo.idp.grants.refresh_token;
    expect(await callApi(page)).toBe('200');
    expect(demo.idp.grants.refresh_token).toBe(grants + 1);
    const times = (n: number) => `${n} ${n === 1 ? 'time' : 'times'}`;
    await visible(page, `#token-refreshes >> text="${times(refreshes + 1)}"`);
    await visible(page, '#token-left >> text=/^\\d+ s$/');

    expect(navigations).toBe(0);
    expect(await page.evaluate('window.stayed')).toBe(true);
    expect(page.url()).toBe(`${demo.url}/`);
    await shot(page, 'refreshed');
    await context.close();
  });

  it('shows the login banner when the IdP revoked the grant and the refresh is refused', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await logIn(page, 'carol');
    await stopClock(page);
    expect(await demo.idp.revoke('carol')).toBeGreaterThan(0);
    await pastTokenExpiry(page);

    await page.click('#call-api');
    await visible(page, '#banner');
    expect(await text(page, '#banner-text')).toMatch(/ended by the identity provider/);
    await visible(page, '#banner-login');
    expect(await page.locator('#logged-in').isHidden()).toBe(true);
    expect(page.url()).toBe(`${demo.url}/`);
    await shot(page, 'session-ended');

    // its button logs in again (the IdP still knows the browser: no password asked, and no consent for the new grant)
    await page.click('#banner-login');
    await backFromIdp(page);
    expect(await text(page, '#user-sub')).toBe('carol');
    await context.close();
  });

  it('logs out through the IdP back to the logged-out page, and the old cookie is dead', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await logIn(page, 'dave');
    const cookie = (await context.cookies(demo.url)).find((c) => c.name === 'gatehouse')!;

    await page.click('#logout');
    const confirm = page.locator('button[name=logout][value=yes]'); // oidc-provider's "Sign out?" page
    await confirm.waitFor({ state: 'visible', timeout: 15_000 });
    expect(page.url().startsWith(`${demo.idp.issuer}/`)).toBe(true);
    await confirm.click();
    await page.waitForURL(`${demo.url}/`);
    await visible(page, '#logged-out');
    expect((await context.cookies(demo.url)).find((c) => c.name === 'gatehouse')).toBeUndefined();

    // A plain HTTP client replaying the old cookie gets nothing.
    const replay = (path: string) => fetch(`${demo.url}${path}`, { headers: { cookie: `gatehouse=${cookie.value}`, 'X-CSRF': '1' } });
    const info = await replay('/auth/session');
    expect(info.status).toBe(401);
    expect(await info.json()).toMatchObject({ error: 'unauthenticated' });
    expect((await replay('/api/hello')).status).toBe(401);
    await context.close();
  });

  it('two tabs calling at the same moment at expiry both succeed, with exactly one refresh grant at the IdP', async () => {
    const context = await newContext();
    const first = await context.newPage();
    await logIn(first, 'erin');
    await stopClock(first);
    const second = await context.newPage();
    await second.goto(`${demo.url}/`);
    await visible(second, '#logged-in');
    await stopClock(second);
    await pastTokenExpiry(first);

    const grants = demo.idp.grants.refresh_token;
    const reuse = demo.idp.reuseDetected;
    demo.idp.delay(500); // both calls arrive while the one refresh is still at the IdP
    try {
      const statuses = await Promise.all([callApi(first), callApi(second)]);
      expect(statuses).toEqual(['200', '200']);
    } finally {
      demo.idp.delay(0);
    }
    expect(demo.idp.grants.refresh_token).toBe(grants + 1);
    expect(demo.idp.reuseDetected).toBe(reuse);
    for (const page of [first, second]) expect(await page.locator('#banner').isHidden()).toBe(true);
    await context.close();
  });

  it('shows the live clock over a WebSocket; a logout in another tab closes it with session_ended and shows the banner', async () => {
    const context = await newContext();
    await context.addInitScript(RECORD_CLOSES);
    const first = await context.newPage();
    let sockets = 0;
    first.on('websocket', (ws) => {
      if (ws.url() === `${demo.url.replace(/^http/, 'ws')}/api/live/clock`) sockets++;
    });
    await logIn(first, 'grace');

    // The demo API's clock, through Gatehouse: its time changes every second, for the bearer's subject.
    await visible(first, '#clock-state >> text=live');
    await visible(first, '#clock-sub >> text=grace');
    const times = new Set<string>();
    for (let i = 0; i < 100 && times.size < 2; i++) {
      const t = await text(first, '#clock-time');
      if (t !== '—') times.add(t);
      await first.waitForTimeout(100);
    }
    expect(times.size).toBe(2);
    // While it is open, Gatehouse refreshes the token for it: the count goes up with no API call.
    const refreshes = (await sessionOf(first)).refreshCount;
    await first.waitForFunction(
      `(async () => (await (await fetch('/auth/session', { headers: { 'X-CSRF': '1' } })).json()).refreshCount > ${refreshes})()`,
      undefined,
      { polling: 500, timeout: 15_000 },
    );
    expect(await closesOf(first)).toEqual([]);

    // A second tab of the same browser logs out.
    const second = await context.newPage();
    await second.goto(`${demo.url}/`);
    await visible(second, '#logged-in');
    const loggedOut = second.waitForResponse((r) => new URL(r.url()).pathname === '/auth/logout' && r.status() === 200);
    await second.click('#logout');
    await loggedOut;
    const at = Date.now();

    await first.locator('#banner').waitFor({ state: 'visible', timeout: 3000 });
    expect(Date.now() - at).toBeLessThan(3000);
    expect(await text(first, '#banner-text')).toBe('Your session has ended. Log in again to continue.');
    expect(await first.locator('#logged-in').isHidden()).toBe(true);
    expect(await closesOf(first)).toEqual([{ code: 1008, reason: 'session_ended' }]);
    expect(first.url()).toBe(`${demo.url}/`);
    // No socket is opened again on the dead session (the logged-out page stops polling too).
    await first.waitForTimeout(2500);
    expect(sockets).toBe(1);
    await shot(first, 'socket-session-ended');
    await context.close();
  });

  it('notices a grant revoked at the IdP through the live clock alone: the token refresh for the socket ends the session', async () => {
    const context = await newContext();
    await context.addInitScript(RECORD_CLOSES);
    const page = await context.newPage();
    await logIn(page, 'heidi');
    await visible(page, '#clock-state >> text=live');
    const grants = demo.idp.grants.refresh_token;
    expect(await demo.idp.revoke('heidi')).toBeGreaterThan(0);

    // No API call: the refresh Gatehouse makes for the open socket is refused (invalid_grant).
    await visible(page, '#banner');
    expect(await text(page, '#banner-text')).toBe('Your session has ended. Log in again to continue.');
    expect(await closesOf(page)).toEqual([{ code: 1008, reason: 'session_ended' }]);
    expect(demo.idp.grants.refresh_token).toBeGreaterThan(grants);
    const info = await page.evaluate<number>("fetch('/auth/session', { headers: { 'X-CSRF': '1' } }).then((r) => r.status)");
    expect(info).toBe(401);
    await context.close();
  });
});
