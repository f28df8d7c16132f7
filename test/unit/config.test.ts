import { loadConfig, ConfigError } from '../../src/config/loadConfig';
import { REQUIRED_VARIABLES } from '../support/payloads';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const good = {
  GATEHOUSE_ISSUER: 'https://login.example.com',
  GATEHOUSE_CLIENT_ID: 'gatehouse',
  GATEHOUSE_CLIENT_SECRET: 'client-secret',
  GATEHOUSE_PUBLIC_URL: 'https://app.example.com',
  GATEHOUSE_UPSTREAM: 'https://api.internal.example/v1',
  GATEHOUSE_SESSION_SECRET: 'x'.repeat(32),
  GATEHOUSE_REDIS_URL: 'redis://127.0.0.1:6379',
};

function problems(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(good);
    expect(c.port).toBe(8080);
    expect(c.scopes).toBe('openid profile email offline_access');
    expect(c.refreshSkewSeconds).toBe(30);
    expect(c.sessionIdleSeconds).toBe(1800);
    expect(c.sessionAbsoluteSeconds).toBe(86400);
    expect(c.metricsPort).toBe(9464);
    expect(c.clientAuth).toBe('client_secret_basic');
    expect(c.postLogoutRedirectUri).toBe('https://app.example.com/');
    expect(c.redirectUri).toBe('https://app.example.com/auth/callback');
    expect(c.secureCookies).toBe(true);
    expect(c.warnings).toEqual([]);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reports every problem at once, one line each naming the variable', () => {
    const p = problems({});
    for (const v of REQUIRED_VARIABLES) {
      expect(p.filter((l) => l.startsWith(`${v}:`))).toHaveLength(1);
    }
    for (const line of p) expect(line).not.toContain('\n');
  });

  it.each([
    [{ GATEHOUSE_SESSION_SECRET: 'short' }, 'GATEHOUSE_SESSION_SECRET: secret #1 has 5 characters'],
    [{ GATEHOUSE_SESSION_SECRET: `${'x'.repeat(32)},short` }, 'GATEHOUSE_SESSION_SECRET: secret #2'],
    [
      { GATEHOUSE_SESSION_SECRET: 'change-me-to-a-random-secret-of-at-least-32-characters' },
      'GATEHOUSE_SESSION_SECRET: secret #1 is the placeholder',
    ],
    [{ GATEHOUSE_ISSUER: 'http://login.example.com' }, 'GATEHOUSE_ISSUER: must be https://'],
    [{ GATEHOUSE_ISSUER: 'not a url' }, 'GATEHOUSE_ISSUER: "not a url" is not an absolute URL'],
    [{ GATEHOUSE_PUBLIC_URL: 'https://app.example.com/app' }, 'GATEHOUSE_PUBLIC_URL: must be an origin'],
    [{ GATEHOUSE_UPSTREAM: 'ftp://x' }, 'GATEHOUSE_UPSTREAM: must be an http(s) URL'],
    [{ GATEHOUSE_REDIS_URL: 'http://redis' }, 'GATEHOUSE_REDIS_URL: must be a redis://'],
    [{ GATEHOUSE_PORT: 'eighty' }, 'GATEHOUSE_PORT: "eighty" is not a port'],
    [{ GATEHOUSE_REFRESH_SKEW_SECONDS: '-5' }, 'GATEHOUSE_REFRESH_SKEW_SECONDS'],
    [{ GATEHOUSE_SESSION_IDLE_SECONDS: '0' }, 'GATEHOUSE_SESSION_IDLE_SECONDS'],
    [{ GATEHOUSE_SESSION_IDLE_SECONDS: '1.5' }, 'GATEHOUSE_SESSION_IDLE_SECONDS'],
    [
      { GATEHOUSE_SESSION_IDLE_SECONDS: '7200', GATEHOUSE_SESSION_ABSOLUTE_SECONDS: '3600' },
      'GATEHOUSE_SESSION_IDLE_SECONDS: 7200 is longer than',
    ],
    [{ GATEHOUSE_CLIENT_AUTH: 'magic' }, 'GATEHOUSE_CLIENT_AUTH: "magic" is not supported'],
    [{ GATEHOUSE_CLIENT_AUTH: 'private_key_jwt' }, 'GATEHOUSE_CLIENT_PRIVATE_KEY: is required'],
    [{ GATEHOUSE_SCOPES: 'profile email' }, 'GATEHOUSE_SCOPES: "profile email" lacks openid'],
    [{ GATEHOUSE_LOG_LEVEL: 'loud' }, 'GATEHOUSE_LOG_LEVEL'],
    [{ GATEHOUSE_METRICS_PORT: '8080' }, 'GATEHOUSE_METRICS_PORT: must differ'],
    [{ GATEHOUSE_COOKIE_SAMESITE: 'none' }, 'GATEHOUSE_COOKIE_SAMESITE'],
    [{ GATEHOUSE_ADMIN_TOKEN: 'short' }, 'GATEHOUSE_ADMIN_TOKEN: has 5 characters'],
    [{ GATEHOUSE_ADMIN_TOKEN: 'change-me-admin-token-of-at-least-32-characters' }, 'GATEHOUSE_ADMIN_TOKEN: is the placeholder'],
    [
      { GATEHOUSE_ADMIN_TOKEN: 'a'.repeat(40), GATEHOUSE_METRICS_PORT: '0' },
      'GATEHOUSE_ADMIN_TOKEN: is set but GATEHOUSE_METRICS_PORT is 0',
    ],
    [{ GATEHOUSE_ANOMALY_END_SESSION: 'yes' }, 'GATEHOUSE_ANOMALY_END_SESSION: "yes" is not a boolean'],
    [{ GATEHOUSE_ANOMALY_REFRESHES_PER_HOUR: '-1' }, 'GATEHOUSE_ANOMALY_REFRESHES_PER_HOUR'],
    [{ GATEHOUSE_CONFIG: '/nonexistent/gatehouse.json' }, 'GATEHOUSE_CONFIG: file /nonexistent/gatehouse.json does not exist'],
    [{ GATEHOUSE_UPSTREAM_TIMEOUT_SECONDS: '0' }, 'GATEHOUSE_UPSTREAM_TIMEOUT_SECONDS: "0" is not a positive duration'],
    [{ GATEHOUSE_UPSTREAM_CONNECT_TIMEOUT_SECONDS: '1m' }, 'GATEHOUSE_UPSTREAM_CONNECT_TIMEOUT_SECONDS'],
    [{ GATEHOUSE_UPSTREAM_SOCKETS_PER_SESSION: '1000' }, 'GATEHOUSE_UPSTREAM_SOCKETS_PER_SESSION: "1000" is not a count'],
    [{ GATEHOUSE_DROP_HEADERS: 'X-Tenant-Id, x tenant' }, 'GATEHOUSE_DROP_HEADERS: "x tenant" is not a header name'],
    [{ GATEHOUSE_LOGIN_RATE_PER_MINUTE: '-1' }, 'GATEHOUSE_LOGIN_RATE_PER_MINUTE'],
    [{ GATEHOUSE_LOGINS_IN_FLIGHT_MAX: '0' }, 'GATEHOUSE_LOGINS_IN_FLIGHT_MAX'],
    [{ GATEHOUSE_ADMIN_HOST: 'http://0.0.0.0' }, 'GATEHOUSE_ADMIN_HOST: "http://0.0.0.0" is not an address'],
    [{ GATEHOUSE_TOKEN_EXPIRY_MARGIN_SECONDS: '2.5' }, 'GATEHOUSE_TOKEN_EXPIRY_MARGIN_SECONDS'],
  ])('refuses %o', (override, expected) => {
    const p = problems({ ...good, ...override });
    expect(p.some((l) => l.startsWith(expected))).toBe(true);
  });

  it('reads the upstream, login-door, admin-host and margin settings', () => {
    const c = loadConfig({
      ...good,
      GATEHOUSE_DROP_HEADERS: 'X-Tenant-Id, X-Internal-Role',
      GATEHOUSE_ADMIN_HOST: '[::1]',
      GATEHOUSE_LOGIN_RATE_PER_MINUTE: '0',
    });
    expect(c.dropHeaders).toEqual(['x-tenant-id', 'x-internal-role']);
    expect(c.adminHost).toBe('::1');
    expect(c.loginRatePerMinute).toBe(0);
    expect(c).toMatchObject({ upstreamTimeoutSeconds: 30, upstreamConnectTimeoutSeconds: 10, upstreamSocketsPerSession: 64 });
    expect(c).toMatchObject({ loginsInFlightMax: 40000, tokenExpiryMarginSeconds: 2 });
    expect(loadConfig(good).adminHost).toBeUndefined();
  });

  it('accepts http:// only on loopback, with a warning', () => {
    const c = loadConfig({ ...good, GATEHOUSE_ISSUER: 'http://127.0.0.1:9000', GATEHOUSE_PUBLIC_URL: 'http://localhost:8080' });
    expect(c.allowInsecureIdp).toBe(true);
    expect(c.secureCookies).toBe(false);
    expect(c.warnings.length).toBeGreaterThanOrEqual(2);
  });

  it('warns when no Redis is configured', () => {
    const { GATEHOUSE_REDIS_URL: _omit, ...env } = good;
    expect(loadConfig(env).warnings.some((w) => w.includes('GATEHOUSE_REDIS_URL'))).toBe(true);
  });

  it('reads a JSON config file under the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ upstream: 'https://from-file.example', refreshSkewSeconds: 45 }));
    const { GATEHOUSE_UPSTREAM: _u, ...env } = good;
    const c = loadConfig({ ...env, GATEHOUSE_CONFIG: file, GATEHOUSE_REFRESH_SKEW_SECONDS: '10' });
    expect(c.upstream.href).toBe('https://from-file.example/');
    expect(c.refreshSkewSeconds).toBe(10);
    writeFileSync(file, '{"upstreem": "x"}');
    expect(problems({ ...good, GATEHOUSE_CONFIG: file })[0]).toMatch(/^GATEHOUSE_CONFIG: .* has unknown settings upstreem/);
  });
});

describe('config file: the redis topology', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-redis-'));
  const { GATEHOUSE_REDIS_URL: _r, ...noRedis } = good;
  const withFile = (json: unknown, env: NodeJS.ProcessEnv = noRedis) => {
    const file = join(dir, `c${Math.random()}.json`);
    writeFileSync(file, JSON.stringify(json));
    return { ...env, GATEHOUSE_CONFIG: file };
  };

  it('loads the complete example in config/ (secrets from the environment it names)', () => {
    const { GATEHOUSE_UPSTREAM: _u, GATEHOUSE_ISSUER: _i, GATEHOUSE_PUBLIC_URL: _p, ...env } = noRedis;
    const c = loadConfig({
      ...env,
      GATEHOUSE_CONFIG: join(__dirname, '../../config/gatehouse.example.json'),
      GATEHOUSE_REDIS_PASSWORD: 'redis-password',
      GATEHOUSE_REDIS_SENTINEL_PASSWORD: 'sentinel-password',
    });
    expect(c.redis).toMatchObject({
      mode: 'sentinel',
      name: 'gatehouse',
      auth: { username: 'gatehouse', password: 'redis-password' },
      sentinelAuth: { password: 'sentinel-password' },
      tls: {},
      waitForReplicas: 1,
    });
    expect(c.redis?.mode === 'sentinel' && c.redis.sentinels[0]).toEqual({ host: 'redis-sentinel-0.redis', port: 26379 });
    expect(c.warnings).toEqual([]);
  });

  it('reads a cluster and a standalone URL', () => {
    const cluster = loadConfig(withFile({ redis: { mode: 'cluster', nodes: ['10.0.0.1:6379', { host: '10.0.0.2', port: 6380 }] } }));
    expect(cluster.redis).toEqual({
      mode: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 6379 },
        { host: '10.0.0.2', port: 6380 },
      ],
      auth: {},
      tls: undefined,
    });
    const one = loadConfig(withFile({ redis: { url: 'rediss://redis.internal:6380/0' } }));
    expect(one.redis).toEqual({ mode: 'standalone', url: 'rediss://redis.internal:6380/0' });
    expect(one.redisUrl).toBe('rediss://redis.internal:6380/0');
  });

  it('lets GATEHOUSE_REDIS_URL win over the file', () => {
    const c = loadConfig(withFile({ redis: { mode: 'cluster', nodes: ['10.0.0.1:6379'] } }, good));
    expect(c.redis).toEqual({ mode: 'standalone', url: good.GATEHOUSE_REDIS_URL });
  });

  it('reports every problem of the redis object at once, naming the field and the fix', () => {
    const env = withFile({
      redis: { mode: 'sentinel', sentinels: ['10.0.0.1', 'host:99999'], name: 'my master', passwordEnv: 'NOPE', db: 99, colour: 'red' },
    });
    const p = problems(env);
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.colour is not a sentinel setting/),
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.sentinels\[0\] "10\.0\.0\.1" is not "host:port"/),
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.sentinels\[1\] "host:99999" is not "host:port"/),
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.name must be the master group name/),
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.passwordEnv names NOPE, which is not set/),
        expect.stringMatching(/^GATEHOUSE_CONFIG: redis\.db 99 is not a whole number from 0 to 15/),
      ]),
    );
    expect(problems(withFile({ redis: { mode: 'replicated' } }))).toEqual([
      'GATEHOUSE_CONFIG: redis.mode "replicated" is not a Redis topology — use standalone, sentinel or cluster',
    ]);
    expect(problems(withFile({ redis: { mode: 'cluster', nodes: [] } }))[0]).toMatch(/redis\.nodes must be a non-empty list/);
    expect(problems(withFile({ redis: { mode: 'cluster', nodes: ['a:1'], tls: { ca: '/nonexistent/ca.pem' } } }))[0]).toMatch(
      /redis\.tls\.ca "\/nonexistent\/ca\.pem" is not a readable file/,
    );
  });
});

describe('routes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-routes-'));
  const { GATEHOUSE_UPSTREAM: _u, ...noUpstream } = good;
  const routes = [
    { path: '/api', upstream: 'https://api.internal' },
    { path: '/api/public', upstream: 'https://cms.internal/v2', token: 'none' },
  ];

  it('without routes, one route /api → GATEHOUSE_UPSTREAM with the user token', () => {
    const c = loadConfig(good);
    expect(c.routes.map((r) => [r.path, r.upstream.href, r.token])).toEqual([['/api', 'https://api.internal.example/v1', 'user']]);
  });

  it('reads GATEHOUSE_ROUTES, and then needs no GATEHOUSE_UPSTREAM', () => {
    const c = loadConfig({ ...noUpstream, GATEHOUSE_ROUTES: JSON.stringify(routes) });
    expect(c.routes.map((r) => [r.path, r.token])).toEqual([
      ['/api', 'user'],
      ['/api/public', 'none'],
    ]);
  });

  it('reads the config file’s routes array, and GATEHOUSE_ROUTES wins over it', () => {
    const file = join(dir, 'routes.json');
    writeFileSync(file, JSON.stringify({ routes }));
    expect(loadConfig({ ...noUpstream, GATEHOUSE_CONFIG: file }).routes).toHaveLength(2);
    const env = { ...noUpstream, GATEHOUSE_CONFIG: file, GATEHOUSE_ROUTES: '[{"path": "/api/only", "upstream": "http://only"}]' };
    expect(loadConfig(env).routes.map((r) => r.path)).toEqual(['/api/only']);
  });

  it('stops start-up with one line per route problem, naming the route and field', () => {
    const p = problems({
      ...noUpstream,
      GATEHOUSE_ROUTES: '[{"path": "/orders", "upstream": "x"}, {"path": "/api", "upstream": "http://a", "token": "admin"}]',
    });
    expect(p).toEqual([
      expect.stringMatching(/^GATEHOUSE_ROUTES\[0\]\.path: "\/orders" is not \/api/),
      expect.stringMatching(/^GATEHOUSE_ROUTES\[0\]\.upstream: "x" is not an absolute URL/),
      expect.stringMatching(/^GATEHOUSE_ROUTES\[1\]\.token: "admin" is not a token policy/),
    ]);
    expect(problems(noUpstream)).toEqual([expect.stringMatching(/^GATEHOUSE_UPSTREAM: is required/)]);
  });
});
