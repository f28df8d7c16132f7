import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestIdp, type TestIdp } from '../support/idp';
import { findFreePort } from '../support/redisServer';
import { redisUrl, startStack, SESSION_SECRET, SPA, type Stack } from '../support/stack';
import { loginAs } from '../support/login';
import { REQUIRED_VARIABLES } from '../support/payloads';
import { buildOnce } from '../support/build';
import { waitFor } from '../support/wait';

const root = join(__dirname, '..', '..');
const main = join(root, 'dist', 'src', 'main.js');

function run(env: NodeJS.ProcessEnv): ChildProcess {
  // process.execPath is the Node 24 that runs jest; only the variables given here reach the gateway.
  return spawn(process.execPath, [main], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Everything the child writes (`out`), and its standard output alone (`stdout`). */
/** Whether the gateway on `port` answers GET /readyz with a 2xx (false while nothing listens there). */
async function isReady(port: number): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
  await r?.body?.cancel();
  return r?.ok ?? false;
}

function collect(child: ChildProcess): { out: () => string; stdout: () => string; exit: Promise<number | null> } {
  let out = '';
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { out: () => out, stdout: () => stdout, exit: new Promise((r) => child.on('exit', (code) => r(code))) };
}

describe('npm start (dist/src/main.js)', () => {
  beforeAll(() => {
    buildOnce();
  }, 60_000);

  it('stops with exit code 2 and one line per configuration problem, naming each variable, without a stack trace', async () => {
    const p = collect(run({ GATEHOUSE_SESSION_SECRET: 'short', GATEHOUSE_PORT: 'http', GATEHOUSE_PUBLIC_URL: 'app.example' }));
    expect(await p.exit).toBe(2);
    const lines = p.out().trim().split('\n');
    for (const v of [...REQUIRED_VARIABLES, 'GATEHOUSE_PORT']) {
      expect(lines.filter((l) => l.startsWith(`gatehouse: ${v}: `))).toHaveLength(1);
    }
    expect(lines.every((l) => l.startsWith('gatehouse: GATEHOUSE_'))).toBe(true);
    expect(p.out()).not.toMatch(/\n\s+at /);
  });

  describe('with a valid configuration', () => {
    let idp: TestIdp;
    beforeAll(async () => {
      idp = await startTestIdp({ redirectUri: 'http://127.0.0.1:1/auth/callback' });
    });
    afterAll(() => idp.close());

    /** The variables of a gateway on `port` with this IdP. */
    const gatewayEnv = (port: number): NodeJS.ProcessEnv => ({
      GATEHOUSE_ISSUER: idp.issuer,
      GATEHOUSE_CLIENT_ID: idp.clientId,
      GATEHOUSE_CLIENT_SECRET: idp.clientSecret,
      GATEHOUSE_PUBLIC_URL: `http://127.0.0.1:${port}`,
      GATEHOUSE_UPSTREAM: 'http://127.0.0.1:1',
      GATEHOUSE_SESSION_SECRET: 'x'.repeat(40),
      GATEHOUSE_REDIS_URL: redisUrl(),
      GATEHOUSE_PORT: String(port),
    });
    const readyOn = (port: number) => waitFor('/readyz to answer 200', () => isReady(port), 10_000, 100);
    /** The status of GET /metrics at `host`, or the connection error's code. */
    const metricsAt = (host: string, port: number) =>
      fetch(`http://${host}:${port}/metrics`).then(
        (r) => r.status,
        (err: unknown) => (err as { cause?: { code?: string } }).cause?.code,
      );
    /** Where the log says the admin port listens. */
    const adminAddress = (out: string) => {
      const line = out.split('\n').find((l) => l.includes('"msg":"admin port listening"'));
      const { host, port } = JSON.parse(line!) as { host: string; port: number };
      return { host, port };
    };

    // Linux routes all of 127.0.0.0/8 to the loopback interface: a port on every interface answers on
    // 127.0.0.2 too, one bound to 127.0.0.1 does not.
    it('listens on the admin port at GATEHOUSE_ADMIN_HOST only: 127.0.0.1 answers, any other address is refused', async () => {
      const [port, adminPort] = [await findFreePort(), await findFreePort()];
      const child = run({ ...gatewayEnv(port), GATEHOUSE_METRICS_PORT: String(adminPort), GATEHOUSE_ADMIN_HOST: '127.0.0.1' });
      const p = collect(child);
      try {
        await readyOn(port);
        expect(await metricsAt('127.0.0.1', adminPort)).toBe(200);
        expect(await metricsAt('127.0.0.2', adminPort)).toBe('ECONNREFUSED');
        expect(await metricsAt('127.0.0.2', port)).toBe(404); // the public port is not affected
      } finally {
        child.kill('SIGTERM');
        expect(await p.exit).toBe(0);
      }
      expect(adminAddress(p.out())).toEqual({ host: '127.0.0.1', port: adminPort });
    });

    it('listens on the admin port on every interface when GATEHOUSE_ADMIN_HOST is unset, so Prometheus can scrape the pod address', async () => {
      const [port, adminPort] = [await findFreePort(), await findFreePort()];
      const child = run({ ...gatewayEnv(port), GATEHOUSE_METRICS_PORT: String(adminPort) });
      const p = collect(child);
      try {
        await readyOn(port);
        expect(await metricsAt('127.0.0.2', adminPort)).toBe(200);
      } finally {
        child.kill('SIGTERM');
        expect(await p.exit).toBe(0);
      }
      expect(adminAddress(p.out()).host).toMatch(/^(::|0\.0\.0\.0)$/);
    });

    it('stops with exit code 1 and one line naming GATEHOUSE_ADMIN_HOST when that address is not this machine’s', async () => {
      const [port, adminPort] = [await findFreePort(), await findFreePort()];
      // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to an interface
      const child = run({ ...gatewayEnv(port), GATEHOUSE_METRICS_PORT: String(adminPort), GATEHOUSE_ADMIN_HOST: '192.0.2.1' });
      const p = collect(child);
      const exited = await Promise.race([p.exit, sleep(15_000, 'still running')]);
      child.kill('SIGKILL'); // a gateway that listened anyway is not left behind
      expect(exited).toBe(1);
      expect(
        p
          .out()
          .split('\n')
          .filter((l) => l.startsWith('gatehouse: ')),
      ).toEqual([`gatehouse: GATEHOUSE_ADMIN_HOST, GATEHOUSE_METRICS_PORT: cannot listen on 192.0.2.1 port ${adminPort}: EADDRNOTAVAIL`]);
      expect(p.out()).not.toMatch(/\n\s+at /);
    });

    it('serves /healthz and /readyz, and exits 0 on SIGTERM', async () => {
      const port = await findFreePort();
      const child = run({ ...gatewayEnv(port), GATEHOUSE_METRICS_PORT: '0' });
      const p = collect(child);
      await waitFor('/readyz to answer 200', () => isReady(port), 10_000, 100);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(await health.json()).toEqual({ status: 'ok' });
      child.kill('SIGTERM');
      expect(await p.exit).toBe(0);
      expect(p.out()).toContain('gatehouse listening');
    });
  });

  it('npm run demo: serves the demo SPA, sends /auth/login to the demo IdP, and stops on SIGTERM', async () => {
    const [port, idpPort, apiPort] = [await findFreePort(), await findFreePort(), await findFreePort()];
    const child = spawn(process.execPath, [join(root, 'dist', 'scripts', 'demo.js')], {
      env: { PATH: process.env.PATH, DEMO_PORT: String(port), DEMO_IDP_PORT: String(idpPort), DEMO_API_PORT: String(apiPort) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = collect(child);
    await waitFor('the demo to start', () => p.out().includes('Press Ctrl+C'), 10_000, 100);
    expect(p.out()).toContain(`Open http://localhost:${port}`);
    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Gatehouse');
    const login = await fetch(`http://127.0.0.1:${port}/auth/login`, { redirect: 'manual' });
    expect(login.status).toBe(302);
    expect(login.headers.get('location')).toMatch(new RegExp(`^http://localhost:${idpPort}/auth\\?`));
    const api = await fetch(`http://127.0.0.1:${apiPort}/hello`);
    expect(api.status).toBe(401);
    child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
  });

  describe('npm run sessions (the kill switch from a shell)', () => {
    let stack: Stack;
    beforeAll(async () => {
      stack = await startStack();
    });
    afterAll(() => stack.close());

    const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => {
      const child = spawn(process.execPath, [join(root, 'dist', 'scripts', 'sessions.js'), ...args], {
        env: {
          PATH: process.env.PATH,
          GATEHOUSE_ISSUER: stack.idp.issuer,
          GATEHOUSE_CLIENT_ID: stack.idp.clientId,
          GATEHOUSE_CLIENT_SECRET: stack.idp.clientSecret,
          GATEHOUSE_PUBLIC_URL: stack.gw.url,
          GATEHOUSE_UPSTREAM: stack.upstream.url,
          GATEHOUSE_SESSION_SECRET: SESSION_SECRET,
          GATEHOUSE_REDIS_URL: redisUrl(),
          GATEHOUSE_KEY_PREFIX: stack.prefix,
          GATEHOUSE_METRICS_PORT: '0',
          ...env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      return collect(child);
    };

    it('lists a user’s sessions, ends them all, and revokes their refresh tokens at the IdP', async () => {
      const browser = stack.gw.agent();
      await loginAs(browser, stack.idp, 'quinn');
      await browser.get('/api/x').set(SPA).expect(200);
      const list = cli(['list', '--sub', 'quinn']);
      expect(await list.exit).toBe(0);
      expect((JSON.parse(list.stdout()) as { sessions: unknown[] }).sessions).toHaveLength(1);
      const revocations = stack.idp.revocations;
      const revoke = cli(['revoke', '--sub', 'quinn']);
      expect(await revoke.exit).toBe(0);
      expect(JSON.parse(revoke.stdout())).toEqual({ ended: 1, revoked: 1, kept: 0, failed: 0 });
      expect(stack.idp.revocations).toBe(revocations + 1); // the CLI waits for the revocation before exiting
      await browser.get('/api/x').set(SPA).expect(401);
    });

    it('reports a revocation the IdP refused (a wrong client secret): the session ended, failed 1, exit code 1', async () => {
      const browser = stack.gw.agent();
      await loginAs(browser, stack.idp, 'rosa');
      const refused = stack.idp.revocationRequests.length;
      const revoke = cli(['revoke', '--sub', 'rosa'], { GATEHOUSE_CLIENT_SECRET: 'not-the-client-secret-0123456789abcdef0123' });
      expect(await revoke.exit).toBe(1);
      expect(JSON.parse(revoke.stdout())).toEqual({ ended: 1, revoked: 0, kept: 0, failed: 1 });
      expect(
        revoke
          .out()
          .split('\n')
          .filter((l) => l.startsWith('sessions: ')),
      ).toEqual([expect.stringMatching(/1 refresh token\(s\) could not be revoked at the IdP/)]);
      expect(stack.idp.revocationRequests.slice(refused)).toEqual([expect.objectContaining({ status: 401 })]);
      await browser.get('/api/x').set(SPA).expect(401);
    });

    it('shows session times in unix seconds, like every other time Gatehouse shows', async () => {
      const before = Math.floor(Date.now() / 1000);
      await loginAs(stack.gw.agent(), stack.idp, 'sasha');
      const list = cli(['list', '--sub', 'sasha']);
      expect(await list.exit).toBe(0);
      const [session] = (JSON.parse(list.stdout()) as { sessions: Array<{ createdAt: number; absoluteExpiresAt: number }> }).sessions;
      expect(session!.createdAt).toBeGreaterThanOrEqual(before);
      expect(session!.createdAt).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
      expect(session!.absoluteExpiresAt - session!.createdAt).toBe(stack.gw.gatehouse.config.sessionAbsoluteSeconds);
    });

    it('stops with exit code 2 and one line when sessions are stored but none opens with the session secret given', async () => {
      const browser = stack.gw.agent();
      await loginAs(browser, stack.idp, 'tariq');
      const wrong = { GATEHOUSE_SESSION_SECRET: 'not-the-gateways-secret-0123456789abcdef0123' };
      for (const args of [
        ['list', '--sub', 'tariq'],
        ['revoke', '--sub', 'tariq'],
      ]) {
        const p = cli(args, wrong);
        expect(await p.exit).toBe(2);
        expect(p.stdout()).toBe('');
        // (the other lines on stderr are the development-settings warnings of every start)
        const said = p
          .out()
          .split('\n')
          .filter((l) => l.startsWith('sessions: '));
        expect(said).toEqual([expect.stringMatching(/none opens with GATEHOUSE_SESSION_SECRET/)]);
      }
      await browser.get('/api/x').set(SPA).expect(200); // nothing was ended
      // With the right secret, a user without sessions is no error.
      const none = cli(['list', '--sub', 'nobody-here']);
      expect(await none.exit).toBe(0);
      expect(JSON.parse(none.stdout())).toEqual({ sessions: [] });
    });

    it('stops with exit code 2 and a usage line on bad arguments', async () => {
      for (const args of [[], ['revoke'], ['drop', '--sub', 'x'], ['revoke', '--sub']]) {
        const p = cli(args);
        expect(await p.exit).toBe(2);
        expect(p.out()).toMatch(/usage: npm run sessions/);
      }
    });
  });
});
