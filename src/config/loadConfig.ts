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

/** Options given as one value (a variable); `redis` is an object of its own (redisTopology.ts). */
type Setting = Exclude<keyof GatehouseOptions, 'redis' | 'routes'>;

/** Validates options (from loadConfig or an embedder) into a frozen Config; throws ConfigError listing every problem. */
export function validate(
  options: GatehouseOptions,
  problems: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  names: 'option' | 'env' = 'option',
): Config {
  // Problems are listed in the order of the checks below, one line each.
  const settings = settingsOf(options, problems, names);
  const idp = identityProvider(settings);
  const site = publicSite(settings);
  const upstream = defaultUpstream(settings);
  const sessionSecrets = secrets(settings);
  const { redis, redisUrl } = redisSettings(settings, env);
  const { port, metricsPort } = ports(settings);
  const scopes = settings.raw('scopes')!;
  if (!scopes.split(/\s+/).includes('openid'))
    settings.fail('scopes', `"${scopes}" lacks openid — add it, e.g. "openid profile email offline_access"`);
  const life = lifetimes(settings);
  const trustProxy = settings.int('trustProxy', 0, 10, 'a hop count');
  const shutdownSeconds = settings.int('shutdownSeconds', 1, 300, 'a positive duration in seconds');
  const choices = choiceSettings(settings);
  const staticDir = staticFolder(settings);
  const adminToken = adminTokenOf(settings, metricsPort);
  const anomalyRefreshesPerHour = settings.int('anomalyRefreshesPerHour', 0, 100_000, 'a count');
  const dpop = settings.flag('dpop');
  const anomalyEndSession = settings.flag('anomalyEndSession');
  const upstreamTimeoutSeconds = settings.int('upstreamTimeoutSeconds', 1, 3600, 'a positive duration in seconds');
  const upstreamConnectTimeoutSeconds = settings.int('upstreamConnectTimeoutSeconds', 1, 300, 'a positive duration in seconds');
  const upstreamSocketsPerSession = settings.int('upstreamSocketsPerSession', 1, 512, 'a count');
  const websocketsPerSession = settings.int('websocketsPerSession', 1, 1000, 'a count');
  const websocketMaxMessageBytes = settings.int('websocketMaxMessageBytes', 125, 1024 ** 3, 'a size in bytes');
  const dropHeaders = headerNames(settings);
  const loginRatePerMinute = settings.int('loginRatePerMinute', 0, 1_000_000, 'a count (0 turns the limit off)');
  const loginsInFlightMax = settings.int('loginsInFlightMax', 1, 10_000_000, 'a count');
  const adminHost = adminHostOf(settings);
  const tokenExpiryMarginSeconds = settings.int('tokenExpiryMarginSeconds', 0, 300, 'a duration in seconds');
  const routes = parseRoutes(
    upstream.routesGiven ? options.routes : undefined,
    { upstream: upstream.url, timeoutSeconds: upstreamTimeoutSeconds, scopes, scopesName: settings.nameOf('scopes') },
    names === 'env' ? 'GATEHOUSE_ROUTES' : 'routes',
    (p) => problems.push(p),
  );

  if (problems.length) throw new ConfigError(problems);
  return Object.freeze({
    issuer: idp.issuer!,
    issuerId: idp.issuerId!,
    clientId: idp.clientId!,
    clientSecret: idp.clientSecret,
    clientAuth: idp.clientAuth,
    clientPrivateKeyPem: idp.clientPrivateKeyPem,
    postLogoutRedirectUri: site.postLogoutRedirectUri,
    publicOrigin: site.publicOrigin,
    redirectUri: `${site.publicOrigin}/auth/callback`,
    secureCookies: site.publicUrl!.protocol === 'https:',
    // The default route's upstream; with configured routes and no GATEHOUSE_UPSTREAM, the first route's.
    upstream: upstream.url ?? routes[0]!.upstream,
    routes: Object.freeze(routes),
    sessionSecrets: Object.freeze(sessionSecrets),
    redisUrl,
    redis,
    port,
    scopes,
    refreshSkewSeconds: life.refreshSkewSeconds,
    sessionIdleSeconds: life.sessionIdleSeconds,
    sessionAbsoluteSeconds: life.sessionAbsoluteSeconds,
    logLevel: choices.logLevel,
    metricsPort,
    keyPrefix: choices.keyPrefix,
    cookieSameSite: choices.cookieSameSite,
    par: choices.par,
    settingNames: names,
    trustProxy,
    idpTimeoutSeconds: life.idpTimeoutSeconds,
    sessionCacheMs: life.sessionCacheMs,
    staticDir,
    adminToken,
    anomalyRefreshesPerHour,
    anomalyEndSession,
    dpop,
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
    allowInsecureIdp: idp.allowInsecureIdp,
    warnings: Object.freeze(settings.warnings),
  });
}

/** Reads single settings (given or default) and records what is wrong with them, in the caller's names. */
interface Settings {
  readonly options: GatehouseOptions;
  readonly problems: string[];
  readonly warnings: string[];
  /** The setting as the caller wrote it: a variable for loadConfig(), an option for createGatehouse(). */
  nameOf(k: Setting): string;
  /** How to set it, for a problem's fix: `VAR=value` or `option: 'value'`. */
  setTo(k: Setting, v: string): string;
  /** The value given, or its default; undefined when neither or empty. */
  raw(k: Setting): string | undefined;
  fail(k: Setting, msg: string): void;
  required(k: Setting, example: string): string | undefined;
  /** An http(s) URL without query, fragment or credentials. */
  url(k: Setting, v: string | undefined, example: string): URL | undefined;
  /** A whole number from min to max (min when it is not one). */
  int(k: Setting, min: number, max: number, what: string): number;
  /** `true` or `false`, in any case. */
  flag(k: Setting): boolean;
}

function settingsOf(options: GatehouseOptions, problems: string[], names: 'option' | 'env'): Settings {
  const nameOf = (k: Setting): string => (names === 'env' ? ENV_OF.get(k)! : k);
  const setTo = (k: Setting, v: string): string => (names === 'env' ? `${ENV_OF.get(k)}=${v}` : `${k}: '${v}'`);
  const raw = (k: Setting): string | undefined => {
    const v = options[k] ?? DEFAULTS.get(k);
    if (v === undefined || v === '') return undefined;
    return Array.isArray(v) ? v.join(',') : String(v).trim();
  };
  const fail = (k: Setting, msg: string) => void problems.push(`${nameOf(k)}: ${msg}`);
  return {
    options,
    problems,
    warnings: [],
    nameOf,
    setTo,
    raw,
    fail,
    required(k, example) {
      const v = raw(k);
      if (v === undefined) fail(k, `is required — set it, e.g. ${setTo(k, example)}`);
      return v;
    },
    url(k, v, example) {
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
    },
    int(k, min, max, what) {
      const v = raw(k) ?? '0';
      const n = Number(v);
      if (!/^\d+$/.test(v) || n < min || n > max) {
        fail(k, `"${v}" is not ${what} — use a whole number from ${min} to ${max}`);
        return min;
      }
      return n;
    },
    flag(k) {
      const v = raw(k)!.toLowerCase();
      if (v !== 'true' && v !== 'false') fail(k, `"${v}" is not a boolean — use true or false`);
      return v === 'true';
    },
  };
}

/** The IdP (https, or http on a loopback host) and how Gatehouse authenticates to it. */
function identityProvider(settings: Settings) {
  const issuerId = settings.required('issuer', 'https://login.example.com');
  const issuer = settings.url('issuer', issuerId, 'https://login.example.com');
  let allowInsecureIdp = false;
  if (issuer?.protocol === 'http:') {
    if (LOOPBACK.test(issuer.hostname)) {
      allowInsecureIdp = true;
      settings.warnings.push(`${settings.nameOf('issuer')} is http:// on a loopback host: acceptable for local development only`);
    } else settings.fail('issuer', "must be https:// (http:// is allowed only for localhost) — use the IdP's https issuer URL");
  }
  const clientId = settings.required('clientId', 'gatehouse');
  return { issuer, issuerId, allowInsecureIdp, clientId, ...clientAuthentication(settings) };
}

/** A client secret, or a PKCS#8 private key (given, or the path of one) for private_key_jwt. */
function clientAuthentication(settings: Settings) {
  const authRaw = settings.raw('clientAuth')!;
  let clientAuth: ClientAuth = 'client_secret_basic';
  if ((CLIENT_AUTHS as readonly string[]).includes(authRaw)) clientAuth = authRaw as ClientAuth;
  else settings.fail('clientAuth', `"${authRaw}" is not supported — use one of ${CLIENT_AUTHS.join(', ')}`);
  const clientSecret = settings.raw('clientSecret');
  let clientPrivateKeyPem: string | undefined;
  if (clientAuth === 'private_key_jwt') {
    const k = settings.raw('clientPrivateKey');
    if (!k)
      settings.fail(
        'clientPrivateKey',
        `is required with ${settings.setTo('clientAuth', 'private_key_jwt')} — set a PKCS#8 PEM key or the path of one`,
      );
    else if (k.includes('-----BEGIN')) clientPrivateKeyPem = k;
    else if (existsSync(k)) clientPrivateKeyPem = readFileSync(k, 'utf8');
    else settings.fail('clientPrivateKey', `file ${k} does not exist — give the path of a PKCS#8 PEM private key`);
    if (clientPrivateKeyPem && !clientPrivateKeyPem.includes('BEGIN PRIVATE KEY')) {
      settings.fail('clientPrivateKey', 'is not a PKCS#8 PEM key — convert it with `openssl pkcs8 -topk8 -nocrypt`');
    }
  } else if (!clientSecret) {
    settings.fail(
      'clientSecret',
      `is required with ${clientAuth} — set the secret registered at the IdP, or use ${settings.setTo('clientAuth', 'private_key_jwt')}`,
    );
  }
  return { clientAuth, clientSecret, clientPrivateKeyPem };
}

/** The origin the browser sees (an http one only for development), and where the IdP sends it after logout. */
function publicSite(settings: Settings) {
  const publicUrl = settings.url('publicUrl', settings.required('publicUrl', 'https://app.example.com'), 'https://app.example.com');
  let publicOrigin = '';
  if (publicUrl) {
    if (publicUrl.pathname !== '/') settings.fail('publicUrl', `must be an origin without a path — use ${publicUrl.origin}`);
    publicOrigin = publicUrl.origin;
    if (publicUrl.protocol === 'http:') {
      settings.warnings.push(
        `${settings.nameOf('publicUrl')} is http://: the session cookie drops Secure and the __Host- prefix (development only)`,
      );
    }
  }
  const postLogoutRedirectUri = settings.raw('postLogoutRedirectUri') ?? (publicOrigin ? `${publicOrigin}/` : '');
  if (settings.raw('postLogoutRedirectUri')) settings.url('postLogoutRedirectUri', postLogoutRedirectUri, 'https://app.example.com/');
  return { publicUrl, publicOrigin, postLogoutRedirectUri };
}

/** GATEHOUSE_UPSTREAM is the default route's upstream: needed only when no routes are configured. */
function defaultUpstream(settings: Settings): { url: URL | undefined; routesGiven: boolean } {
  const routesGiven = settings.options.routes !== undefined && settings.options.routes !== '';
  const upstreamGiven = settings.raw('upstream') !== undefined;
  if (routesGiven && !upstreamGiven) return { url: undefined, routesGiven };
  return {
    url: settings.url('upstream', settings.required('upstream', 'https://api.internal.example'), 'https://api.internal.example'),
    routesGiven,
  };
}

/** The session secrets, comma-separated: the first keys new sessions, the others are still accepted (rotation). */
function secrets(settings: Settings): string[] {
  const secretsRaw = settings.required('sessionSecret', '$(openssl rand -base64 48)');
  const sessionSecrets = (secretsRaw ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  if (secretsRaw !== undefined) {
    if (sessionSecrets.length === 0) settings.fail('sessionSecret', 'is empty — set at least one secret of 32+ characters');
    sessionSecrets.forEach((secret, i) => {
      if (secret.length < 32)
        settings.fail(
          'sessionSecret',
          `secret #${i + 1} has ${secret.length} characters — use 32 or more, e.g. $(openssl rand -base64 48)`,
        );
      else if (secret.startsWith('change-me'))
        settings.fail(
          'sessionSecret',
          `secret #${i + 1} is the placeholder from config/example.env — generate one with openssl rand -base64 48`,
        );
    });
  }
  return sessionSecrets;
}

/** GATEHOUSE_REDIS_URL wins over the file's `redis` object, as every variable wins over the file. */
function redisSettings(settings: Settings, env: NodeJS.ProcessEnv): { redis: RedisTopology | undefined; redisUrl: string | undefined } {
  let redisUrl = settings.raw('redisUrl');
  let redis: RedisTopology | undefined;
  if (redisUrl !== undefined) {
    if (!REDIS_URL_PATTERN.test(redisUrl))
      settings.fail('redisUrl', 'must be a redis:// or rediss:// URL — e.g. redis://127.0.0.1:6379/0, or unset it for the in-memory store');
    else redis = { mode: 'standalone', url: redisUrl };
  } else if (settings.options.redis !== undefined) {
    redis = parseRedisTopology(settings.options.redis, env, settings.problems);
    if (redis?.mode === 'standalone') redisUrl = redis.url;
  } else {
    settings.warnings.push(
      `${settings.nameOf('redisUrl')} is not set: sessions live in memory, are lost on restart and cannot be shared by replicas`,
    );
  }
  return { redis, redisUrl };
}

/** The public port and the admin port (0: none), never the same. */
function ports(settings: Settings): { port: number; metricsPort: number } {
  const port = settings.int('port', 0, 65535, 'a port');
  const metricsPort = settings.int('metricsPort', 0, 65535, 'a port');
  if (metricsPort !== 0 && metricsPort === port)
    settings.fail(
      'metricsPort',
      `must differ from ${settings.nameOf('port')} (${port}) — the admin port never answers on the public port; use another port or 0`,
    );
  return { port, metricsPort };
}

/** How long tokens, sessions, cached sessions and IdP calls last. */
function lifetimes(settings: Settings) {
  const day = 86400;
  const refreshSkewSeconds = settings.int('refreshSkewSeconds', 0, 3600, 'a duration in seconds');
  const sessionIdleSeconds = settings.int('sessionIdleSeconds', 1, 365 * day, 'a positive duration in seconds');
  const sessionAbsoluteSeconds = settings.int('sessionAbsoluteSeconds', 1, 365 * day, 'a positive duration in seconds');
  if (sessionIdleSeconds > sessionAbsoluteSeconds) {
    settings.fail(
      'sessionIdleSeconds',
      `${sessionIdleSeconds} is longer than ${settings.nameOf('sessionAbsoluteSeconds')} (${sessionAbsoluteSeconds}) — make the idle timeout the shorter one`,
    );
  }
  // How long a replica may serve a session from its cache, an ended one too: a second at most.
  const sessionCacheMs = settings.int('sessionCacheMs', 0, 1000, 'a duration in milliseconds (0 turns the cache off)');
  const idpTimeoutSeconds = settings.int('idpTimeoutSeconds', 1, 120, 'a positive duration in seconds');
  return { refreshSkewSeconds, sessionIdleSeconds, sessionAbsoluteSeconds, sessionCacheMs, idpTimeoutSeconds };
}

/** Settings with a closed set of values, and the Redis key prefix. */
function choiceSettings(settings: Settings) {
  const logLevel = settings.raw('logLevel')! as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) settings.fail('logLevel', `"${logLevel}" is not a level — use one of ${LOG_LEVELS.join(', ')}`);
  const sameSite = settings.raw('cookieSameSite')!.toLowerCase();
  if (sameSite !== 'strict' && sameSite !== 'lax')
    settings.fail('cookieSameSite', `"${sameSite}" is not allowed — use strict (default) or lax`);
  const par = settings.raw('par')!.toLowerCase();
  if (par !== 'auto' && par !== 'required' && par !== 'off')
    settings.fail('par', `"${par}" is not allowed — use auto (default), required or off`);
  const keyPrefix = settings.raw('keyPrefix')!;
  if (/[\s{}]/.test(keyPrefix))
    settings.fail('keyPrefix', 'must not contain spaces or braces (braces are Redis Cluster hash tags) — e.g. gatehouse:');
  return { logLevel, cookieSameSite: sameSite as 'strict' | 'lax', par: par as 'auto' | 'required' | 'off', keyPrefix };
}

/** The SPA's folder, made absolute; it must exist. */
function staticFolder(settings: Settings): string | undefined {
  const given = settings.raw('staticDir');
  if (given === undefined) return undefined;
  const staticDir = isAbsolute(given) ? given : resolve(given);
  if (!existsSync(staticDir)) settings.fail('staticDir', `folder ${staticDir} does not exist — build the SPA first or unset it`);
  return staticDir;
}

/** The admin API's bearer token: long, not the placeholder, and only with an admin port to serve it. */
function adminTokenOf(settings: Settings, metricsPort: number): string | undefined {
  const adminToken = settings.raw('adminToken');
  if (adminToken !== undefined) {
    if (adminToken.length < 32)
      settings.fail('adminToken', `has ${adminToken.length} characters — use 32 or more, e.g. $(openssl rand -base64 32)`);
    else if (adminToken.startsWith('change-me'))
      settings.fail('adminToken', 'is the placeholder from config/example.env — generate one with openssl rand -base64 32');
    if (metricsPort === 0)
      settings.fail(
        'adminToken',
        `is set but ${settings.nameOf('metricsPort')} is 0 — the admin API is served on the admin port; set a port`,
      );
  }
  return adminToken;
}

/** Request headers never forwarded upstream: comma-separated header names, lower-cased. */
function headerNames(settings: Settings): string[] {
  const dropHeaders = (settings.raw('dropHeaders') ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  for (const h of dropHeaders)
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(h))
      settings.fail('dropHeaders', `"${h}" is not a header name — list names such as X-Tenant-Id, comma-separated`);
  return dropHeaders;
}

/** The admin port's interface: an IPv4 or IPv6 address (brackets allowed) or a host name. */
function adminHostOf(settings: Settings): string | undefined {
  const adminHost = settings.raw('adminHost');
  if (adminHost !== undefined && !/^(\[[0-9a-f:.]+\]|[0-9a-f:.]+|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)$/i.test(adminHost))
    settings.fail(
      'adminHost',
      `"${adminHost}" is not an address — use an interface address such as 127.0.0.1 or ::, or unset it for every interface`,
    );
  return adminHost;
}
