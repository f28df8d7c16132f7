/**
 * The Redis deployment Gatehouse talks to: one server (a URL), a Sentinel-managed master, or a Cluster.
 * Only a URL fits in an environment variable; Sentinel and Cluster come from the `redis` object of the JSON
 * config file (GATEHOUSE_CONFIG) or of createGatehouse() options. Like every setting, all problems are
 * reported at once, each naming the field and the fix.
 */
import { existsSync, readFileSync } from 'node:fs';

export interface HostPort {
  host: string;
  port: number;
}

export interface RedisAuth {
  username?: string;
  password?: string;
}

/** TLS to Redis: on with the system CAs, or with a private CA file and/or an expected server name. */
export interface RedisTls {
  /** PEM contents of the CA bundle (read from the configured file at start). */
  ca?: string;
  servername?: string;
}

export type RedisTopology =
  | { readonly mode: 'standalone'; readonly url: string }
  | {
      readonly mode: 'sentinel';
      readonly sentinels: readonly HostPort[];
      /** The master group name Sentinel monitors (`sentinel monitor <name> ...`). */
      readonly name: string;
      readonly auth: RedisAuth;
      readonly sentinelAuth: RedisAuth;
      readonly tls: RedisTls | undefined;
      readonly db: number;
      /**
       * Replicas that must acknowledge a token write before it counts (Redis WAIT), so a failover right after
       * a refresh does not bring back the rotated-away refresh token. 0 = do not wait.
       */
      readonly waitForReplicas: number;
    }
  | {
      readonly mode: 'cluster';
      readonly nodes: readonly HostPort[];
      readonly auth: RedisAuth;
      readonly tls: RedisTls | undefined;
    };

/** The `redis` object as written in the config file (see config/gatehouse.example.json). */
export interface RedisSettings {
  mode?: string;
  url?: string;
  sentinels?: unknown;
  name?: string;
  nodes?: unknown;
  username?: string;
  password?: string;
  /** Name of an environment variable holding the password (keeps secrets out of the file). */
  passwordEnv?: string;
  sentinelUsername?: string;
  sentinelPassword?: string;
  sentinelPasswordEnv?: string;
  tls?: unknown;
  db?: unknown;
  waitForReplicas?: unknown;
}

const FIELDS: Record<string, readonly string[]> = {
  standalone: ['mode', 'url'],
  sentinel: [
    'mode',
    'sentinels',
    'name',
    'username',
    'password',
    'passwordEnv',
    'sentinelUsername',
    'sentinelPassword',
    'sentinelPasswordEnv',
    'tls',
    'db',
    'waitForReplicas',
  ],
  cluster: ['mode', 'nodes', 'username', 'password', 'passwordEnv', 'tls'],
};

export const REDIS_URL_PATTERN = /^rediss?:\/\/[^\s]+$/;

/** Parses the `redis` settings; pushes one line per problem onto `problems` and returns undefined if any. */
export function parseRedisTopology(
  value: unknown,
  env: NodeJS.ProcessEnv,
  problems: string[],
  where = 'GATEHOUSE_CONFIG',
): RedisTopology | undefined {
  const before = problems.length;
  const fail = (field: string, msg: string) => problems.push(`${where}: redis.${field} ${msg}`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push(`${where}: redis must be an object, e.g. {"mode": "sentinel", "sentinels": ["10.0.0.1:26379"], "name": "mymaster"}`);
    return undefined;
  }
  const s = value as RedisSettings;
  const mode = s.mode ?? 'standalone';
  const allowed = FIELDS[mode];
  if (!allowed) {
    fail('mode', `"${String(mode)}" is not a Redis topology — use standalone, sentinel or cluster`);
    return undefined;
  }
  const unknown = Object.keys(s).filter((k) => !allowed.includes(k));
  if (unknown.length) fail(unknown[0]!, `is not a ${mode} setting (unknown: ${unknown.join(', ')}) — known: ${allowed.join(', ')}`);

  const secret = (field: 'password' | 'sentinelPassword'): string | undefined => {
    const envName = s[`${field}Env`];
    if (envName !== undefined) {
      if (s[field] !== undefined) fail(field, `and redis.${field}Env are both set — keep one`);
      const v = typeof envName === 'string' ? env[envName] : undefined;
      if (!v) fail(`${field}Env`, `names ${String(envName)}, which is not set — export it or remove redis.${field}Env`);
      return v;
    }
    if (s[field] !== undefined && typeof s[field] !== 'string') fail(field, 'must be a string');
    return s[field];
  };
  const auth = (user: string | undefined, password: string | undefined): RedisAuth => ({
    ...(user !== undefined && { username: String(user) }),
    ...(password !== undefined && { password }),
  });

  if (mode === 'standalone') {
    if (typeof s.url !== 'string' || !REDIS_URL_PATTERN.test(s.url))
      fail('url', 'must be a redis:// or rediss:// URL — e.g. "rediss://gatehouse:PASSWORD@redis.internal:6380/0"');
    return problems.length > before ? undefined : { mode, url: s.url! };
  }

  const tls = parseTls(s.tls, fail);
  if (mode === 'sentinel') {
    const sentinels = hostPorts(s.sentinels, 'sentinels', '["10.0.0.11:26379", "10.0.0.12:26379"]', fail);
    if (typeof s.name !== 'string' || !/^[\w.-]+$/.test(s.name))
      fail('name', 'must be the master group name Sentinel monitors — e.g. "mymaster"');
    const db = wholeNumber(s.db, 0, 0, 15, 'db', fail);
    const waitForReplicas = wholeNumber(s.waitForReplicas, 1, 0, 10, 'waitForReplicas', fail);
    const topology: RedisTopology = {
      mode,
      sentinels,
      name: s.name!,
      auth: auth(s.username, secret('password')),
      sentinelAuth: auth(s.sentinelUsername, secret('sentinelPassword')),
      tls,
      db,
      waitForReplicas,
    };
    return problems.length > before ? undefined : topology;
  }

  const nodes = hostPorts(s.nodes, 'nodes', '["10.0.0.21:6379", "10.0.0.22:6379", "10.0.0.23:6379"]', fail);
  const topology: RedisTopology = { mode: 'cluster', nodes, auth: auth(s.username, secret('password')), tls };
  return problems.length > before ? undefined : topology;
}

type Fail = (field: string, msg: string) => void;

function hostPorts(value: unknown, field: string, example: string, fail: Fail): HostPort[] {
  if (!Array.isArray(value) || value.length === 0) {
    fail(field, `must be a non-empty list of "host:port" — e.g. ${example}`);
    return [];
  }
  const out: HostPort[] = [];
  value.forEach((v, i) => {
    let host: unknown, port: unknown;
    if (typeof v === 'string') {
      const m = /^(\[[^\]]+\]|[^:\s]+):(\d+)$/.exec(v);
      [host, port] = m ? [m[1]!.replace(/^\[|\]$/g, ''), Number(m[2])] : [undefined, undefined];
    } else if (typeof v === 'object' && v !== null) {
      ({ host, port } = v as { host?: unknown; port?: unknown });
    }
    if (typeof host !== 'string' || !host || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      fail(`${field}[${i}]`, `${JSON.stringify(v)} is not "host:port" — e.g. ${example}`);
    else out.push({ host, port });
  });
  return out;
}

function wholeNumber(value: unknown, dflt: number, min: number, max: number, field: string, fail: Fail): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(field, `${JSON.stringify(value)} is not a whole number from ${min} to ${max}`);
    return dflt;
  }
  return value;
}

function parseTls(value: unknown, fail: Fail): RedisTls | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('tls', 'must be true or {"ca": "/path/to/ca.pem", "servername": "redis.internal"}');
    return undefined;
  }
  const { ca, servername, ...rest } = value as { ca?: unknown; servername?: unknown };
  if (Object.keys(rest).length) fail('tls', `has unknown settings ${Object.keys(rest).join(', ')} — known: ca, servername`);
  const tls: RedisTls = {};
  if (ca !== undefined) {
    if (typeof ca !== 'string' || !existsSync(ca))
      fail('tls.ca', `${JSON.stringify(ca)} is not a readable file — give the path of a PEM CA bundle`);
    else tls.ca = readFileSync(ca, 'utf8');
  }
  if (servername !== undefined) {
    if (typeof servername !== 'string' || !servername) fail('tls.servername', 'must be a host name');
    else tls.servername = servername;
  }
  return tls;
}

/** Where a topology's data lives, for logs (never a password). */
export function describeTopology(t: RedisTopology): string {
  switch (t.mode) {
    case 'standalone': {
      const u = new URL(t.url);
      return `redis ${u.protocol}//${u.host}${u.pathname}`;
    }
    case 'sentinel':
      return `redis sentinel master "${t.name}" via ${t.sentinels.map((n) => `${n.host}:${n.port}`).join(', ')}`;
    case 'cluster':
      return `redis cluster via ${t.nodes.map((n) => `${n.host}:${n.port}`).join(', ')}`;
  }
}
