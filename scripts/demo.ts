/**
 * `npm run demo`: the whole thing on one machine with nothing else installed.
 *
 *   http://localhost:8080  Gatehouse, serving the demo SPA (demo/) and proxying /api (WebSockets under /api/live)
 *   http://localhost:8081  a demo OpenID provider (oidc-provider; any user name and password log in)
 *   http://127.0.0.1:8082  a demo API that answers with the subject of the bearer token it receives, and
 *                          a WebSocket clock (/clock, reached as /api/live/clock)
 *
 * The IdP shows its login form and, at logout, its sign-out confirmation; the demo SPA is its first-party
 * client, so there is no consent screen. Access tokens live 20 seconds and refresh tokens rotate (a reused
 * one revokes the grant), so the transparent refresh is visible within a minute of use. The store is in
 * memory unless GATEHOUSE_REDIS_URL is set. Ports: DEMO_PORT (gateway), DEMO_IDP_PORT, DEMO_API_PORT.
 *
 * With Redis, the demo writes its gateway's settings (throwaway secrets made up at start) to .env.demo at the
 * repository root, git-ignored and deleted when the demo stops, so that the kill switch can be tried on it from
 * another shell: `npm run sessions -- list --sub <user name> --env .env.demo`.
 *
 * startDemo() is also what the real-browser tests (test/browser) run, on ephemeral ports.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import express from 'express';
import { WebSocketServer } from 'ws';
import { createGatehouse, type Gatehouse } from '../src';
import { ConfigError } from '../src/config/loadConfig';
import { startTestIdp, type TestIdp } from '../src/testing/testIdp';
import { guardServer } from '../src/http/serverGuards';

/** The repository root, from scripts/ (run by jest) or dist/scripts/ (npm run demo). */
const root = existsSync(resolve(__dirname, '../package.json')) ? resolve(__dirname, '..') : resolve(__dirname, '../..');

export interface DemoOptions {
  /** Gateway port (0 = ephemeral; default 8080). The public URL is http://localhost:<port>. */
  port?: number;
  /** IdP port (0 = ephemeral; default 8081). */
  idpPort?: number;
  /** Demo API port (0 = ephemeral; default 8082). */
  apiPort?: number;
  /** Access-token lifetime at the IdP in seconds (default 20). */
  accessTokenTtl?: number;
  /** Gatehouse refreshes when the access token has less than this left (default 5). */
  refreshSkewSeconds?: number;
  /** Redis for sessions (default: in memory). */
  redisUrl?: string;
  /** Redis key prefix (default Gatehouse's). */
  keyPrefix?: string;
  sessionSecret?: string;
  logLevel?: string;
}

export interface Demo {
  /** The gateway's public URL, `http://localhost:<port>`. */
  url: string;
  idp: TestIdp;
  gatehouse: Gatehouse;
  apiUrl: string;
  /** The gateway's settings as the GATEHOUSE_* variables `npm start` and `npm run sessions` read. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** Who a bearer is, from the IdP's userinfo endpoint (the demo's access tokens are opaque); null when refused. */
async function whoIs(userinfoUrl: string, authorization: string): Promise<{ sub: string; name?: string } | null> {
  const r = await fetch(userinfoUrl, { headers: { authorization } });
  if (!r.ok) {
    await r.body?.cancel();
    return null;
  }
  return (await r.json()) as { sub: string; name?: string };
}

/** The demo API: a resource server that learns who the bearer is from the IdP's userinfo endpoint. */
function startDemoApi(userinfoUrl: string, port: number): Promise<DemoApi> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    };
    const auth = req.headers.authorization ?? '';
    if (!/^Bearer \S+$/.test(auth)) return send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer' });
    whoIs(userinfoUrl, auth)
      .then((who) => {
        if (!who) return send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
        send(200, {
          message: `Hello, ${who.name ?? who.sub}! This answer comes from the demo API behind Gatehouse.`,
          sub: who.sub,
          method: req.method,
          path: req.url,
          bearerHeaderSeen: true,
          cookieSeen: req.headers.cookie !== undefined,
          at: new Date().toISOString(),
        });
      })
      .catch(() => send(502, { error: 'idp_unreachable' }));
  });
  const clocks = serveClock(server, userinfoUrl);
  return listen(server, port).then(() => ({
    server,
    close() {
      // Upgraded connections are no longer the HTTP server's to close: its close would wait for them.
      for (const ws of clocks.clients) ws.terminate();
      clocks.close();
      return closeServer(server);
    },
  }));
}

interface DemoApi {
  server: http.Server;
  close(): Promise<void>;
}

/**
 * The demo API's WebSocket, `/clock`: `{"time": "<ISO>", "sub": "<the bearer's subject>"}` at once and then every
 * second. The bearer is checked once, at the handshake (one userinfo call per connection): the socket outlives
 * that token, and it is Gatehouse that closes it when the session ends.
 */
function serveClock(api: http.Server, userinfoUrl: string): WebSocketServer {
  const wss = new WebSocketServer({ noServer: true });
  api.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const refuse = (status: string, fields = '') =>
      socket.end(`HTTP/1.1 ${status}\r\n${fields}Content-Length: 0\r\nConnection: close\r\n\r\n`);
    if (new URL(req.url ?? '/', 'http://api').pathname !== '/clock') return refuse('404 Not Found');
    const auth = req.headers.authorization ?? '';
    if (!/^Bearer \S+$/.test(auth)) return refuse('401 Unauthorized', 'WWW-Authenticate: Bearer\r\n');
    whoIs(userinfoUrl, auth)
      .then((who) => {
        if (!who) return refuse('401 Unauthorized', 'WWW-Authenticate: Bearer error="invalid_token"\r\n');
        wss.handleUpgrade(req, socket, head, (ws) => {
          const tick = () => ws.send(JSON.stringify({ time: new Date().toISOString(), sub: who.sub }));
          tick();
          const timer = setInterval(tick, 1000);
          ws.on('close', () => clearInterval(timer));
          ws.on('error', () => ws.terminate());
        });
      })
      .catch(() => refuse('502 Bad Gateway'));
  });
  return wss;
}

function listen<T extends http.Server>(server: T, port: number): Promise<T> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((r) => server.close(() => r()));
}

/** Starts the IdP, the demo API and Gatehouse serving the demo SPA; resolves once all listen. */
export async function startDemo(opts: DemoOptions = {}): Promise<Demo> {
  // The gateway listens first, so its URL (an ephemeral port included) is known to the IdP's client registration.
  const web = express().disable('x-powered-by');
  const server = guardServer(await listen(http.createServer(web), opts.port ?? 8080));
  const publicUrl = `http://localhost:${(server.address() as AddressInfo).port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startTestIdp({
    port: opts.idpPort ?? 8081,
    hostname: 'localhost',
    interactions: 'dev',
    // The demo SPA is the IdP's own app here, as a company's SPA is at its own IdP: no consent screen.
    skipConsent: true,
    clientId: 'gatehouse-demo',
    clientSecret,
    redirectUri: `${publicUrl}/auth/callback`,
    postLogoutRedirectUri: `${publicUrl}/`,
    backchannelLogoutUri: `${publicUrl}/auth/backchannel-logout`,
    accessTokenTtl: opts.accessTokenTtl ?? 20,
    refreshTokenTtl: 8 * 3600,
  });
  const api = await startDemoApi(`${idp.issuer}/me`, opts.apiPort ?? 8082);
  const apiUrl = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
  // /api/* → the demo API; /api/live/* too, WebSocket upgrades included (/api/live/clock → /clock).
  const routes = [
    { path: '/api', upstream: apiUrl },
    { path: '/api/live', upstream: apiUrl, websocket: true },
  ];
  const sessionSecret = opts.sessionSecret ?? randomBytes(36).toString('base64url');
  const gatehouse = await createGatehouse({
    issuer: idp.issuer,
    clientId: 'gatehouse-demo',
    clientSecret,
    publicUrl,
    routes,
    sessionSecret,
    redisUrl: opts.redisUrl,
    ...(opts.keyPrefix !== undefined && { keyPrefix: opts.keyPrefix }),
    refreshSkewSeconds: opts.refreshSkewSeconds ?? 5,
    metricsPort: 0,
    logLevel: opts.logLevel ?? 'warn',
    staticDir: resolve(root, 'demo/public'),
  });
  // The SPA's script and gatehouse-bff/client, as `npm run build` compiled them (tsconfig.client.json); the rest,
  // index.html included, is Gatehouse's (GATEHOUSE_STATIC_DIR=demo/public).
  // Called as a handler rather than mounted, so Gatehouse inherits none of this app's settings.
  web.use('/demo', express.static(resolve(root, 'dist/demo'), { index: false }));
  web.use('/client', express.static(resolve(root, 'dist/client'), { index: false }));
  web.use((req, res) => gatehouse.frontDoor(req, res));
  // WebSocket upgrades are the server's `upgrade` event, which Express never sees.
  server.on('upgrade', gatehouse.frontDoor.upgrade);

  return {
    url: publicUrl,
    idp,
    gatehouse,
    apiUrl,
    env: {
      GATEHOUSE_ISSUER: idp.issuer,
      GATEHOUSE_CLIENT_ID: 'gatehouse-demo',
      GATEHOUSE_CLIENT_SECRET: clientSecret,
      GATEHOUSE_PUBLIC_URL: publicUrl,
      GATEHOUSE_ROUTES: JSON.stringify(routes),
      GATEHOUSE_SESSION_SECRET: sessionSecret,
      ...(opts.redisUrl !== undefined && { GATEHOUSE_REDIS_URL: opts.redisUrl }),
      ...(opts.keyPrefix !== undefined && { GATEHOUSE_KEY_PREFIX: opts.keyPrefix }),
    },
    async close() {
      await gatehouse.closeSockets(); // 1001 to every browser's socket, as a gateway going away sends
      await Promise.all([closeServer(server), api.close()]);
      await gatehouse.close();
      await idp.close();
    },
  };
}

/** Where `npm run demo` leaves its settings for `npm run sessions -- --env .env.demo` (git-ignored). */
const ENV_FILE = '.env.demo';

/** The variables in the dotenv format Node reads (`--env-file`, process.loadEnvFile), each value single-quoted. */
function envFileText(env: Record<string, string>): string {
  const lines = Object.entries(env).map(([name, value]) => {
    if (/['\n\r]/.test(value)) throw new Error(`${name} cannot be written to ${ENV_FILE}`);
    return `${name}='${value}'`;
  });
  return `# Written by \`npm run demo\` for \`npm run sessions -- <command> --env ${ENV_FILE}\`; deleted when it stops.\n# Throwaway secrets of the demo's own IdP and gateway, made up at its start.\n${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const redisUrl = process.env.GATEHOUSE_REDIS_URL || undefined;
  // `npm run demo` builds first (predemo); started some other way, the page would load without its script.
  if (!existsSync(resolve(root, 'dist/demo/app.js'))) process.stderr.write('demo: dist/demo/app.js is missing: run `npm run build`\n');
  const demo = await startDemo({
    port: Number(process.env.DEMO_PORT ?? 8080),
    idpPort: Number(process.env.DEMO_IDP_PORT ?? 8081),
    apiPort: Number(process.env.DEMO_API_PORT ?? 8082),
    redisUrl,
    sessionSecret: process.env.GATEHOUSE_SESSION_SECRET,
    logLevel: process.env.GATEHOUSE_LOG_LEVEL,
  });
  const store = redisUrl ? `Redis at ${redisUrl}` : 'in memory (set GATEHOUSE_REDIS_URL to use Redis)';
  const envFile = resolve(root, ENV_FILE);
  // Without Redis the sessions live in this process, out of the CLI's reach: no file then.
  if (redisUrl) writeFileSync(envFile, envFileText(demo.env), { mode: 0o600 });
  const killSwitch = redisUrl
    ? [
        `  kill switch  npm run sessions -- list --sub <user name> --env ${ENV_FILE}`,
        `               (${ENV_FILE}: this demo's settings and throwaway secrets; revoke ends the sessions)`,
      ]
    : [
        `  kill switch  needs Redis: GATEHOUSE_REDIS_URL=redis://127.0.0.1:6379 npm run demo, then`,
        `               npm run sessions -- list --sub <user name> --env ${ENV_FILE}`,
      ];
  process.stdout.write(
    [
      '',
      'Gatehouse demo is running.',
      '',
      `  Open ${demo.url} and log in with any user name and password.`,
      '  The demo IdP shows two pages of its own: its login form, and at logout a "Sign out?" confirmation.',
      '',
      `  gateway   ${demo.url}   demo SPA, /auth/*, /api/* -> demo API (WebSocket: /api/live/clock)`,
      `  IdP       ${demo.idp.issuer}   oidc-provider: access tokens live 20 s, refresh tokens rotate`,
      `  demo API  ${demo.apiUrl}   answers with the bearer's subject; /clock: a WebSocket clock`,
      `  sessions  ${store}`,
      '',
      ...killSwitch,
      '',
      'Press Ctrl+C to stop.',
      '',
    ].join('\n'),
  );
  const stop = () =>
    void demo.close().finally(() => {
      if (redisUrl) rmSync(envFile, { force: true });
      process.exit(0);
    });
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    if (err instanceof ConfigError) for (const p of err.problems) process.stderr.write(`demo: ${p}\n`);
    else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(
        `demo: port ${(err as { port?: number }).port ?? ''} is in use — stop what uses it, or set DEMO_PORT, DEMO_IDP_PORT, DEMO_API_PORT\n`,
      );
    } else process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
