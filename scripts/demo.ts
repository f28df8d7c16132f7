/**
 * `npm run demo`: the whole thing on one machine with nothing else installed.
 *
 *   http://localhost:8080  Gatehouse, serving the demo SPA (demo/public) and proxying /api
 *   http://localhost:8081  a demo OpenID provider (oidc-provider; any user name and password log in)
 *   http://127.0.0.1:8082  a demo API that answers with the subject of the bearer token it receives
 *
 * Access tokens live 20 seconds and refresh tokens rotate (a reused one revokes the grant), so the
 * transparent refresh is visible within a minute of use. The store is in memory unless
 * GATEHOUSE_REDIS_URL is set. Ports: DEMO_PORT (gateway), DEMO_IDP_PORT, DEMO_API_PORT.
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { createGatehouse } from '../src';
import { ConfigError } from '../src/config/loadConfig';
import { startTestIdp } from '../src/testing/testIdp';
import { guardServer } from '../src/http/serverGuards';

const port = Number(process.env.DEMO_PORT ?? 8080);
const idpPort = Number(process.env.DEMO_IDP_PORT ?? 8081);
const apiPort = Number(process.env.DEMO_API_PORT ?? 8082);
const publicUrl = `http://localhost:${port}`;

/** The demo API: a resource server that learns who the bearer is from the IdP's userinfo endpoint. */
function startDemoApi(userinfoUrl: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    };
    const auth = req.headers.authorization ?? '';
    if (!/^Bearer \S+$/.test(auth)) return send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer' });
    fetch(userinfoUrl, { headers: { authorization: auth } })
      .then(async (r) => {
        if (!r.ok) return send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
        const who = (await r.json()) as { sub: string; name?: string };
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
  return new Promise((r) => server.listen(apiPort, '127.0.0.1', () => r(server)));
}

async function main(): Promise<void> {
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startTestIdp({
    port: idpPort,
    hostname: 'localhost',
    interactions: 'dev',
    clientId: 'gatehouse-demo',
    clientSecret,
    redirectUri: `${publicUrl}/auth/callback`,
    postLogoutRedirectUri: `${publicUrl}/`,
    backchannelLogoutUri: `${publicUrl}/auth/backchannel-logout`,
    accessTokenTtl: 20,
    refreshTokenTtl: 8 * 3600,
  });
  const api = await startDemoApi(`${idp.issuer}/me`);
  const gatehouse = await createGatehouse({
    issuer: idp.issuer,
    clientId: 'gatehouse-demo',
    clientSecret,
    publicUrl,
    upstream: `http://127.0.0.1:${apiPort}`,
    sessionSecret: process.env.GATEHOUSE_SESSION_SECRET ?? randomBytes(36).toString('base64url'),
    redisUrl: process.env.GATEHOUSE_REDIS_URL,
    refreshSkewSeconds: 5,
    metricsPort: 0,
    logLevel: process.env.GATEHOUSE_LOG_LEVEL ?? 'warn',
    staticDir: resolve(__dirname, '../../demo/public'),
  });
  const server = guardServer(http.createServer(gatehouse.app));
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));

  const store = process.env.GATEHOUSE_REDIS_URL
    ? `Redis at ${process.env.GATEHOUSE_REDIS_URL}`
    : 'in memory (set GATEHOUSE_REDIS_URL to use Redis)';
  process.stdout.write(
    [
      '',
      'Gatehouse demo is running.',
      '',
      `  Open ${publicUrl} and log in with any user name and password.`,
      '',
      `  gateway   ${publicUrl}   demo SPA, /auth/*, /api/* -> demo API`,
      `  IdP       ${idp.issuer}   oidc-provider: access tokens live 20 s, refresh tokens rotate`,
      `  demo API  http://127.0.0.1:${apiPort}   answers with the bearer's subject`,
      `  sessions  ${store}`,
      '',
      'Press Ctrl+C to stop.',
      '',
    ].join('\n'),
  );

  const stop = () => {
    server.closeAllConnections();
    server.close();
    api.closeAllConnections();
    api.close();
    void gatehouse
      .close()
      .then(() => idp.close())
      .finally(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) for (const p of err.problems) process.stderr.write(`demo: ${p}\n`);
  else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
    process.stderr.write(
      `demo: port ${(err as { port?: number }).port ?? ''} is in use — stop what uses it, or set DEMO_PORT, DEMO_IDP_PORT, DEMO_API_PORT\n`,
    );
  } else process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
