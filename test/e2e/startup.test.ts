import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { startTestIdp, type TestIdp } from '../support/idp';
import { findFreePort } from '../support/redisServer';
import { redisUrl, startStack, SESSION_SECRET, SPA, type Stack } from '../support/stack';
import { loginAs } from '../support/login';
import { REQUIRED_VARIABLES } from '../support/payloads';
import { buildOnce } from '../support/build';

const root = join(__dirname, '..', '..');
const main = join(root, 'dist', 'src', 'main.js');

function run(env: NodeJS.ProcessEnv): ChildProcess {
  // process.execPath is the Node 24 that runs jest; only the variables given here reach the gateway.
  return spawn(process.execPath, [main], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Everything the child writes (`out`), and its standard output alone (`stdout`). */
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

    it('serves /healthz and /readyz, and exits 0 on SIGTERM', async () => {
      const port = await findFreePort();
      const child = run({
        GATEHOUSE_ISSUER: idp.issuer,
        GATEHOUSE_CLIENT_ID: idp.clientId,
        GATEHOUSE_CLIENT_SECRET: idp.clientSecret,
        GATEHOUSE_PUBLIC_URL: `http://127.0.0.1:${port}`,
        GATEHOUSE_UPSTREAM: 'http://127.0.0.1:1',
        GATEHOUSE_SESSION_SECRET: 'x'.repeat(40),
        GATEHOUSE_REDIS_URL: redisUrl(),
        GATEHOUSE_PORT: String(port),
        GATEHOUSE_METRICS_PORT: '0',
      });
      const p = collect(child);
      let ready: Response | undefined;
      for (let i = 0; i < 100 && !ready?.ok; i++) {
        await new Promise((r) => setTimeout(r, 100));
        ready = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      }
      expect(ready?.status).toBe(200);
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
    for (let i = 0; i < 100 && !p.out().includes('Press Ctrl+C'); i++) await new Promise((r) => setTimeout(r, 100));
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

    const cli = (args: string[]) => {
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
      expect(JSON.parse(revoke.stdout())).toEqual({ revoked: 1 });
      expect(stack.idp.revocations).toBe(revocations + 1); // the CLI waits for the revocation before exiting
      await browser.get('/api/x').set(SPA).expect(401);
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
