/**
 * Configuration is checked once, at start, and every problem is reported together, one line each,
 * naming the variable and the fix (oauth2-proxy's Validate()). Then it is frozen.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { ClientAuth, Config, GatehouseOptions, LogLevel } from './schema';
import { SETTINGS } from './schema';
import { parseRedisTopology, REDIS_URL_PATTERN, type RedisTopology } from './redisTopology';
import { parseRoutes } from '../api/routes';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.join('\n')}`);
  }
}

const ENV_OF = new Map(SETTINGS.map((s) => [s.option, s.env]));
const DEFAULTS = new Map(SETTINGS.filter((s) => s.default !== undefined).map((s) => [s.option, s.default!]));
/** Settings only a config file (or an embedder) can give: they do not fit in one variable. */
const FILE_ONLY = new Set(['redis']);
const CLIENT_AUTHS: readonly ClientAuth[] = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/** Reads GATEHOUSE_* variables, then the JSON file named by GATEHOUSE_CONFIG under them; throws ConfigError. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const fromEnv: GatehouseOptions = {};
  for (const s of SETTINGS) {
    const v = env[s.env];
    if (v !== undefined && v !== '') (fromEnv as Record<string, string>)[s.option] = v;
  }
  const problems: string[] = [];
  let fromFile: GatehouseOptions = {};
  if (fromEnv.configFile) {
    try {
      fromFile = readConfigFile(fromEnv.configFile);
    } catch (e) {
      problems.push(`GATEHOUSE_CONFIG: ${(e as Error).message}`);
    }
  }
  return validate({ ...fromFile, ...fromEnv }, problems, env, 'env');
}

function readConfigFile(path: string): GatehouseOptions {
  if (!existsSync(path)) throw new Error(`file ${path} does not exist — point it at a readable JSON file or unset it`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new Error(`${path} is not valid JSON — fix the syntax`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${path} must hold a JSON object of settings (e.g. {"upstream": "https://api.internal"})`);
  }
  const unknown = Object.keys(json).filter((k) => !FILE_ONLY.has(k) && !ENV_OF.has(k as keyof GatehouseOptions));
  if (unknown.length)
    throw new Error(`${path} has unknown settings ${unknown.join(', ')} — known: ${[...ENV_OF.keys(), ...FILE_ONLY].join(', ')}`);
  return json;
}

/** Validates options (from loadConfig or an embedder) into a frozen Config; throws ConfigError listing every problem. */
/** Options given as one value (a variable); `redis` is an object of its own (redisTopology.ts). */
type Setting = Exclude<keyof GatehouseOptions, 'redis' | 'routes'>;

export function validate(
  options: GatehouseOptions,
  problems: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  names: 'option' | 'env' = 'option',
): Config {
  const warnings: string[] = [];
  // Problems name settings as the caller wrote them: variables for loadConfig(), options for createGatehouse().
  const nameOf = (k: Setting): string => (names === 'env' ? ENV_OF.get(k)! : k);
  const setTo = (k: Setting, v: string): string => (names === 'env' ? `${ENV_OF.get(k)}=${v}` : `${k}: '${v}'`);
  const raw = (k: Setting): string | undefined => {
    const v = options[k] ?? DEFAULTS.get(k);
    if (v === undefined || v === '') return undefined;
    return Array.isArray(v) ? v.join(',') : String(v).trim();
  };
  const fail = (k: Setting, msg: string) => problems.push(`${nameOf(k)}: ${msg}`);
  const required = (k: Setting, example: string): string | undefined => {
    const v = raw(k);
    if (v === undefined) fail(k, `is required — set it, e.g. ${setTo(k, example)}`);
    return v;
  };
  const url = (k: Setting, v: string | undefined, example: string): URL | undefined => {
    if (v === undefined) return undefined;
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      fail(k, `"${v}" is not an absolute URL — use e.g. ${example}`);
      return undefined;
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') fail(k, `must be an http(s) URL — use e.g. ${example}`);
    else if (u.search || u.hash) fail(k, `must not have a query or fragment — use e.g. ${example}`);
    else if (u.username || u.password) fail(k, `must not carry credentials — remove the user:password@ part`);
    else return u;
    return undefined;
  };
  const int = (k: Setting, min: number, max: number, what: string): number => {
    const v = raw(k) ?? '0';
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) {
      fail(k, `"${v}" is not ${what} — use a whole number from ${min} to ${max}`);
      return min;
    }
    return n;
  };

  const issuerRaw = required('issuer', 'https://login.example.com');
  const issuer = url('issuer', issuerRaw, 'https://login.example.com');
  let allowInsecureIdp = false;
  if (issuer?.protocol === 'http:') {
    if (LOOPBACK.test(issuer.hostname)) {
      allowInsecureIdp = true;
      warnings.push(`${nameOf('issuer')} is http:// on a loopback host: acceptable for local development only`);
    } else fail('issuer', "must be https:// (http:// is allowed only for localhost) — use the IdP's https issuer URL");
  }

  const clientId = required('clientId', 'gatehouse');
  const authRaw = raw('clientAuth')!;
  let clientAuth: ClientAuth = 'client_secret_basic';
  if ((CLIENT_AUTHS as readonly string[]).includes(authRaw)) clientAuth = authRaw as ClientAuth;
  else fail('clientAuth', `"${authRaw}" is not supported — use one of ${CLIENT_AUTHS.join(', ')}`);
  const clientSecret = raw('clientSecret');
  let clientPrivateKeyPem: string | undefined;
  if (clientAuth === 'private_key_jwt') {
    const k = raw('clientPrivateKey');
    if (!k)
      fail('clientPrivateKey', `is required with ${setTo('clientAuth', 'private_key_jwt')} — set a PKCS#8 PEM key or the path of one`);
    else if (k.includes('-----BEGIN')) clientPrivateKeyPem = k;
    else if (existsSync(k)) clientPrivateKeyPem = readFileSync(k, 'utf8');
    else fail('clientPrivateKey', `file ${k} does not exist — give the path of a PKCS#8 PEM private key`);
    if (clientPrivateKeyPem && !clientPrivateKeyPem.includes('BEGIN PRIVATE KEY')) {
      fail('clientPrivateKey', 'is not a PKCS#8 PEM key — convert it with `openssl pkcs8 -topk8 -nocrypt`');
    }
  } else if (!clientSecret) {
    fail(
      'clientSecret',
      `is required with ${clientAuth} — set the secret registered at the IdP, or use ${setTo('clientAuth', 'private_key_jwt')}`,
    );
  }

  const publicRaw = required('publicUrl', 'https://app.example.com');
  const publicUrl = url('publicUrl', publicRaw, 'https://app.example.com');
  let publicOrigin = '';
  if (publicUrl) {
    if (publicUrl.pathname !== '/') fail('publicUrl', `must be an origin without a path — use ${publicUrl.origin}`);
    publicOrigin = publicUrl.origin;
    if (publicUrl.protocol === 'http:') {
      warnings.push(`${nameOf('publicUrl')} is http://: the session cookie drops Secure and the __Host- prefix (development only)`);
    }
  }
  const postLogoutRedirectUri = raw('postLogoutRedirectUri') ?? (publicOrigin ? `${publicOrigin}/` : '');
  if (raw('postLogoutRedirectUri')) url('postLogoutRedirectUri', postLogoutRedirectUri, 'https://app.example.com/');

  // GATEHOUSE_UPSTREAM is the default route's upstream: needed only when no routes are configured.
  const routesGiven = options.routes !== undefined && options.routes !== '';
  const upstreamGiven = raw('upstream') !== undefined;
  const upstream =
    routesGiven && !upstreamGiven
      ? undefined
      : url('upstream', required('upstream', 'https://api.internal.example'), 'https://api.internal.example');

  const secretsRaw = required('sessionSecret', '$(openssl rand -base64 48)');
  const sessionSecrets = (secretsRaw ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (secretsRaw !== undefined) {
    if (sessionSecrets.length === 0) fail('sessionSecret', 'is empty — set at least one secret of 32+ characters');
    sessionSecrets.forEach((s, i) => {
      if (s.length < 32)
        fail('sessionSecret', `secret #${i + 1} has ${s.length} characters — use 32 or more, e.g. $(openssl rand -base64 48)`);
      else if (s.startsWith('change-me'))
        fail('sessionSecret', `secret #${i + 1} is the placeholder from config/example.env — generate one with openssl rand -base64 48`);
    });
  }

  // GATEHOUSE_REDIS_URL wins over the file's `redis` object, as every variable wins over the file.
  let redisUrl = raw('redisUrl');
  let redis: RedisTopology | undefined;
  if (redisUrl !== undefined) {
    if (!REDIS_URL_PATTERN.test(redisUrl))
      fail('redisUrl', 'must be a redis:// or rediss:// URL — e.g. redis://127.0.0.1:6379/0, or unset it for the in-memory store');
    else redis = { mode: 'standalone', url: redisUrl };
  } else if (options.redis !== undefined) {
    redis = parseRedisTopology(options.redis, env, problems);
    if (redis?.mode === 'standalone') redisUrl = redis.url;
  } else {
    warnings.push(`${nameOf('redisUrl')} is not set: sessions live in memory, are lost on restart and cannot be shared by replicas`);
  }

  const port = int('port', 0, 65535, 'a port');
  const metricsPort = int('metricsPort', 0, 65535, 'a port');
  if (metricsPort !== 0 && metricsPort === port)
    fail(
      'metricsPort',
      `must differ from ${nameOf('port')} (${port}) — the admin port never answers on the public port; use another port or 0`,
    );

  const scopes = raw('scopes')!;
  if (!scopes.split(/\s+/).includes('openid'))
    fail('scopes', `"${scopes}" lacks openid — add it, e.g. "openid profile email offline_access"`);

  const day = 86400;
  const refreshSkewSeconds = int('refreshSkewSeconds', 0, 3600, 'a duration in seconds');
  const sessionIdleSeconds = int('sessionIdleSeconds', 1, 365 * day, 'a positive duration in seconds');
  const sessionAbsoluteSeconds = int('sessionAbsoluteSeconds', 1, 365 * day, 'a positive duration in seconds');
  if (sessionIdleSeconds > sessionAbsoluteSeconds) {
    fail(
      'sessionIdleSeconds',
      `${sessionIdleSeconds} is longer than ${nameOf('sessionAbsoluteSeconds')} (${sessionAbsoluteSeconds}) — make the idle timeout the shorter one`,
    );
  }
  // How long a replica may serve a session from its cache, an ended one too: a second at most.
  const sessionCacheMs = int('sessionCacheMs', 0, 1000, 'a duration in milliseconds (0 turns the cache off)');
  const idpTimeoutSeconds = int('idpTimeoutSeconds', 1, 120, 'a positive duration in seconds');
  const trustProxy = int('trustProxy', 0, 10, 'a hop count');
  const shutdownSeconds = int('shutdownSeconds', 1, 300, 'a positive duration in seconds');

  const logLevel = raw('logLevel')! as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) fail('logLevel', `"${logLevel}" is not a level — use one of ${LOG_LEVELS.join(', ')}`);
  const sameSite = raw('cookieSameSite')!.toLowerCase();
  if (sameSite !== 'strict' && sameSite !== 'lax') fail('cookieSameSite', `"${sameSite}" is not allowed — use strict (default) or lax`);
  const par = raw('par')!.toLowerCase();
  if (par !== 'auto' && par !== 'required' && par !== 'off') fail('par', `"${par}" is not allowed — use auto (default), required or off`);
  const keyPrefix = raw('keyPrefix')!;
  if (/[\s{}]/.test(keyPrefix))
    fail('keyPrefix', 'must not contain spaces or braces (braces are Redis Cluster hash tags) — e.g. gatehouse:');

  let staticDir = raw('staticDir');
  if (staticDir !== undefined) {
    staticDir = isAbsolute(staticDir) ? staticDir : resolve(staticDir);
    if (!existsSync(staticDir)) fail('staticDir', `folder ${staticDir} does not exist — build the SPA first or unset it`);
  }

  const adminToken = raw('adminToken');
  if (adminToken !== undefined) {
    if (adminToken.length < 32) fail('adminToken', `has ${adminToken.length} characters — use 32 or more, e.g. $(openssl rand -base64 32)`);
    else if (adminToken.startsWith('change-me'))
      fail('adminToken', 'is the placeholder from config/example.env — generate one with openssl rand -base64 32');
    if (metricsPort === 0)
      fail('adminToken', `is set but ${nameOf('metricsPort')} is 0 — the admin API is served on the admin port; set a port`);
  }

  const anomalyRefreshesPerHour = int('anomalyRefreshesPerHour', 0, 100_000, 'a count');
  const dpopRaw = raw('dpop')!.toLowerCase();
  if (dpopRaw !== 'true' && dpopRaw !== 'false') fail('dpop', `"${dpopRaw}" is not a boolean — use true or false`);
  const endRaw = raw('anomalyEndSession')!.toLowerCase();
  if (endRaw !== 'true' && endRaw !== 'false') fail('anomalyEndSession', `"${endRaw}" is not a boolean — use true or false`);

  const upstreamTimeoutSeconds = int('upstreamTimeoutSeconds', 1, 3600, 'a positive duration in seconds');
  const upstreamConnectTimeoutSeconds = int('upstreamConnectTimeoutSeconds', 1, 300, 'a positive duration in seconds');
  const upstreamSocketsPerSession = int('upstreamSocketsPerSession', 1, 512, 'a count');
  const websocketsPerSession = int('websocketsPerSession', 1, 1000, 'a count');
  const websocketMaxMessageBytes = int('websocketMaxMessageBytes', 125, 1024 ** 3, 'a size in bytes');
  const dropHeaders = (raw('dropHeaders') ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  for (const h of dropHeaders)
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(h))
      fail('dropHeaders', `"${h}" is not a header name — list names such as X-Tenant-Id, comma-separated`);
  const loginRatePerMinute = int('loginRatePerMinute', 0, 1_000_000, 'a count (0 turns the limit off)');
  const loginsInFlightMax = int('loginsInFlightMax', 1, 10_000_000, 'a count');
  const adminHost = raw('adminHost');
  if (adminHost !== undefined && !/^(\[[0-9a-f:.]+\]|[0-9a-f:.]+|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)$/i.test(adminHost))
    fail(
      'adminHost',
      `"${adminHost}" is not an address — use an interface address such as 127.0.0.1 or ::, or unset it for every interface`,
    );
  const tokenExpiryMarginSeconds = int('tokenExpiryMarginSeconds', 0, 300, 'a duration in seconds');
  const routesName = names === 'env' ? 'GATEHOUSE_ROUTES' : 'routes';
  const routes = parseRoutes(
    routesGiven ? options.routes : undefined,
    { upstream, timeoutSeconds: upstreamTimeoutSeconds, scopes, scopesName: nameOf('scopes') },
    routesName,
    (p) => problems.push(p),
  );

  if (problems.length) throw new ConfigError(problems);
  return Object.freeze({
    issuer: issuer!,
    issuerId: issuerRaw!,
    clientId: clientId!,
    clientSecret,
    clientAuth,
    clientPrivateKeyPem,
    postLogoutRedirectUri,
    publicOrigin,
    redirectUri: `${publicOrigin}/auth/callback`,
    secureCookies: publicUrl!.protocol === 'https:',
    // The default route's upstream; with configured routes and no GATEHOUSE_UPSTREAM, the first route's.
    upstream: upstream ?? routes[0]!.upstream,
    routes: Object.freeze(routes),
    sessionSecrets: Object.freeze(sessionSecrets),
    redisUrl,
    redis,
    port,
    scopes,
    refreshSkewSeconds,
    sessionIdleSeconds,
    sessionAbsoluteSeconds,
    logLevel,
    metricsPort,
    keyPrefix,
    cookieSameSite: sameSite as 'strict' | 'lax',
    par: par as 'auto' | 'required' | 'off',
    settingNames: names,
    trustProxy,
    idpTimeoutSeconds,
    sessionCacheMs,
    staticDir,
    adminToken,
    anomalyRefreshesPerHour,
    anomalyEndSession: endRaw === 'true',
    dpop: dpopRaw === 'true',
    shutdownSeconds,
    upstreamTimeoutSeconds,
    upstreamConnectTimeoutSeconds,
    upstreamSocketsPerSession,
    websocketsPerSession,
    websocketMaxMessageBytes,
    dropHeaders: Object.freeze(dropHeaders),
    loginRatePerMinute,
    loginsInFlightMax,
    adminHost: adminHost?.replace(/^\[(.*)\]$/, '$1'),
    tokenExpiryMarginSeconds,
    allowInsecureIdp,
    warnings: Object.freeze(warnings),
  });
}
