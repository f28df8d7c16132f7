/**
 * Every setting Gatehouse reads, with its variable, default and a one-line why.
 * loadConfig() turns the environment (and an optional JSON file) into these options;
 * validate() turns options into a frozen Config or a list of every problem at once.
 */
import type { RedisSettings, RedisTopology } from './redisTopology';
import type { RouteOptions } from './routes';
import type { Route } from '../api/routes';

export type ClientAuth = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/** What an embedder passes to createGatehouse(): strings or numbers, as in the environment. */
export interface GatehouseOptions {
  issuer?: string;
  clientId?: string;
  clientSecret?: string;
  clientAuth?: string;
  /** PEM (PKCS#8) private key for private_key_jwt: the key itself or a path to it. */
  clientPrivateKey?: string;
  postLogoutRedirectUri?: string;
  publicUrl?: string;
  upstream?: string;
  /** One secret or several (comma-separated string or array): the first signs, all verify. */
  sessionSecret?: string | string[];
  redisUrl?: string;
  /** Sentinel, Cluster or a standalone URL with TLS options (config file or embedder; GATEHOUSE_REDIS_URL wins). */
  redis?: RedisSettings;
  port?: number | string;
  scopes?: string;
  refreshSkewSeconds?: number | string;
  sessionIdleSeconds?: number | string;
  sessionAbsoluteSeconds?: number | string;
  sessionCacheMs?: number | string;
  configFile?: string;
  logLevel?: string;
  metricsPort?: number | string;
  keyPrefix?: string;
  cookieSameSite?: string;
  /** Pushed authorization requests: `auto` (when the IdP offers them), `required` or `off`. */
  par?: string;
  trustProxy?: number | string;
  idpTimeoutSeconds?: number | string;
  staticDir?: string;
  adminToken?: string;
  shutdownSeconds?: number | string;
  anomalyRefreshesPerHour?: number | string;
  anomalyEndSession?: boolean | string;
  /** DPoP (RFC 9449) sender-constrained tokens: true or false. */
  dpop?: boolean | string;
  upstreamTimeoutSeconds?: number | string;
  upstreamConnectTimeoutSeconds?: number | string;
  upstreamSocketsPerSession?: number | string;
  websocketsPerSession?: number | string;
  websocketMaxMessageBytes?: number | string;
  /** More request header names never forwarded upstream (comma-separated string or array), besides the built-in list. */
  dropHeaders?: string | string[];
  loginRatePerMinute?: number | string;
  loginsInFlightMax?: number | string;
  adminHost?: string;
  tokenExpiryMarginSeconds?: number | string;
  /** The API routes (or GATEHOUSE_ROUTES, the same JSON as a string); default: one route `/api` → `upstream`. */
  routes?: RouteOptions[] | string;
}

export interface Setting {
  option: keyof GatehouseOptions;
  env: string;
  default?: string;
  why: string;
}

export const SETTINGS: readonly Setting[] = [
  { option: 'issuer', env: 'GATEHOUSE_ISSUER', why: 'OIDC issuer URL; metadata comes from its discovery document' },
  { option: 'clientId', env: 'GATEHOUSE_CLIENT_ID', why: 'client id registered at the IdP' },
  { option: 'clientSecret', env: 'GATEHOUSE_CLIENT_SECRET', why: 'client secret (not needed with private_key_jwt)' },
  { option: 'clientAuth', env: 'GATEHOUSE_CLIENT_AUTH', default: 'client_secret_basic', why: 'token-endpoint client authentication' },
  { option: 'clientPrivateKey', env: 'GATEHOUSE_CLIENT_PRIVATE_KEY', why: 'PKCS#8 PEM key or path to one, for private_key_jwt' },
  {
    option: 'postLogoutRedirectUri',
    env: 'GATEHOUSE_POST_LOGOUT_REDIRECT_URI',
    why: 'where the IdP sends the browser after logout (default <PUBLIC_URL>/)',
  },
  { option: 'publicUrl', env: 'GATEHOUSE_PUBLIC_URL', why: 'origin the browser sees; the redirect URI is <PUBLIC_URL>/auth/callback' },
  { option: 'upstream', env: 'GATEHOUSE_UPSTREAM', why: 'base URL for /api/* (the default route), unless routes are configured' },
  {
    option: 'routes',
    env: 'GATEHOUSE_ROUTES',
    why: "the API routes as JSON (the config file's routes array; this variable wins): path, upstream, token, methods, timeoutSeconds, allowSetCookie",
  },
  {
    option: 'sessionSecret',
    env: 'GATEHOUSE_SESSION_SECRET',
    why: 'cookie signing and storage-key secrets, >= 32 chars, comma-separated for rotation',
  },
  { option: 'redisUrl', env: 'GATEHOUSE_REDIS_URL', why: 'redis:// or rediss:// URL; unset = in-memory store (one instance only)' },
  { option: 'port', env: 'GATEHOUSE_PORT', default: '8080', why: 'listen port' },
  { option: 'scopes', env: 'GATEHOUSE_SCOPES', default: 'openid profile email offline_access', why: 'requested scopes' },
  {
    option: 'refreshSkewSeconds',
    env: 'GATEHOUSE_REFRESH_SKEW_SECONDS',
    default: '30',
    why: 'refresh when the access token has less than this left',
  },
  { option: 'sessionIdleSeconds', env: 'GATEHOUSE_SESSION_IDLE_SECONDS', default: '1800', why: 'idle timeout (sliding)' },
  {
    option: 'sessionAbsoluteSeconds',
    env: 'GATEHOUSE_SESSION_ABSOLUTE_SECONDS',
    default: '86400',
    why: 'absolute session lifetime from login',
  },
  {
    option: 'sessionCacheMs',
    env: 'GATEHOUSE_SESSION_CACHE_MS',
    default: '500',
    why: 'how long a replica reuses a session it read from Redis, 0-1000 (0 = read on every request); ends reach every replica at once by pub/sub',
  },
  { option: 'configFile', env: 'GATEHOUSE_CONFIG', why: 'path of a JSON file with more settings (the environment wins)' },
  { option: 'logLevel', env: 'GATEHOUSE_LOG_LEVEL', default: 'info', why: 'trace, debug, info, warn, error, fatal or silent' },
  { option: 'metricsPort', env: 'GATEHOUSE_METRICS_PORT', default: '9464', why: 'admin port for /metrics (0 = off)' },
  { option: 'keyPrefix', env: 'GATEHOUSE_KEY_PREFIX', default: 'gatehouse:', why: 'prefix of every Redis key' },
  { option: 'cookieSameSite', env: 'GATEHOUSE_COOKIE_SAMESITE', default: 'strict', why: 'SameSite of the session cookie: strict or lax' },
  {
    option: 'dpop',
    env: 'GATEHOUSE_DPOP',
    default: 'false',
    why: 'sender-constrained tokens (RFC 9449): a key pair per session, DPoP proofs on every token request and every upstream request',
  },
  {
    option: 'par',
    env: 'GATEHOUSE_PAR',
    default: 'auto',
    why: "pushed authorization requests (RFC 9126): auto (when the IdP's metadata offers them), required (start-up fails without), or off",
  },
  { option: 'trustProxy', env: 'GATEHOUSE_TRUST_PROXY', default: '0', why: 'number of proxy hops whose X-Forwarded-* headers are trusted' },
  { option: 'idpTimeoutSeconds', env: 'GATEHOUSE_IDP_TIMEOUT_SECONDS', default: '10', why: 'timeout of every call to the IdP' },
  { option: 'staticDir', env: 'GATEHOUSE_STATIC_DIR', why: 'folder of SPA files served for paths outside /auth and /api' },
  {
    option: 'anomalyRefreshesPerHour',
    env: 'GATEHOUSE_ANOMALY_REFRESHES_PER_HOUR',
    default: '360',
    why: 'more refreshes than this by one session in an hour is a security event (0 = off)',
  },
  {
    option: 'anomalyEndSession',
    env: 'GATEHOUSE_ANOMALY_END_SESSION',
    default: 'false',
    why: 'also end a session whose refresh rate is anomalous, and the sessions an IdP refresh-token reuse report names (true or false)',
  },
  {
    option: 'upstreamTimeoutSeconds',
    env: 'GATEHOUSE_UPSTREAM_TIMEOUT_SECONDS',
    default: '30',
    why: "time from sending a request upstream to the upstream's response headers, then 504 upstream_timeout (a streaming body is never cut)",
  },
  {
    option: 'upstreamConnectTimeoutSeconds',
    env: 'GATEHOUSE_UPSTREAM_CONNECT_TIMEOUT_SECONDS',
    default: '10',
    why: 'time to open a connection to the upstream, then 504 upstream_timeout',
  },
  {
    option: 'upstreamSocketsPerSession',
    env: 'GATEHOUSE_UPSTREAM_SOCKETS_PER_SESSION',
    default: '64',
    why: 'upstream requests one session may have open at once; past it 503 upstream_busy, so one user cannot take the pool',
  },
  {
    option: 'websocketsPerSession',
    env: 'GATEHOUSE_WEBSOCKETS_PER_SESSION',
    default: '8',
    why: 'WebSockets one session may have open on each replica; past it the upgrade gets 429 too_many_sockets',
  },
  {
    option: 'websocketMaxMessageBytes',
    env: 'GATEHOUSE_WEBSOCKET_MAX_MESSAGE_BYTES',
    default: '4194304',
    why: 'the longest message a browser may send on a WebSocket (its frames together); a longer one closes the socket with 1009',
  },
  {
    option: 'dropHeaders',
    env: 'GATEHOUSE_DROP_HEADERS',
    why: 'more request header names (comma-separated) never forwarded upstream, besides the built-in identity and client-address list',
  },
  {
    option: 'loginRatePerMinute',
    env: 'GATEHOUSE_LOGIN_RATE_PER_MINUTE',
    default: '60',
    why: 'logins (/auth/login, /auth/callback) one client address may start per minute, across replicas; past it 429 (0 = no limit)',
  },
  {
    option: 'loginsInFlightMax',
    env: 'GATEHOUSE_LOGINS_IN_FLIGHT_MAX',
    default: '40000',
    why: 'login transactions stored at once (each lives 10 minutes at most); past it /auth/login answers 503',
  },
  {
    option: 'adminHost',
    env: 'GATEHOUSE_ADMIN_HOST',
    why: 'address the admin port listens on (unset = every interface, so Prometheus can scrape the pod address)',
  },
  {
    option: 'tokenExpiryMarginSeconds',
    env: 'GATEHOUSE_TOKEN_EXPIRY_MARGIN_SECONDS',
    default: '2',
    why: "an access token is not sent upstream in its last seconds (the API's clock may run ahead); while the IdP cannot refresh it, 503",
  },
  { option: 'adminToken', env: 'GATEHOUSE_ADMIN_TOKEN', why: 'bearer token of the admin session API on the admin port (unset = API off)' },
  {
    option: 'shutdownSeconds',
    env: 'GATEHOUSE_SHUTDOWN_SECONDS',
    default: '15',
    why: 'on SIGTERM/SIGINT, how long requests in flight and open streams may go on before the process exits',
  },
];

/** The validated, frozen configuration every module receives. */
export interface Config {
  readonly issuer: URL;
  /** The issuer exactly as configured (what ID tokens' `iss` carries once discovery has confirmed it). */
  readonly issuerId: string;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly clientAuth: ClientAuth;
  readonly clientPrivateKeyPem: string | undefined;
  readonly postLogoutRedirectUri: string;
  readonly publicOrigin: string;
  readonly redirectUri: string;
  /** https public URL: Secure cookies with the __Host- prefix. */
  readonly secureCookies: boolean;
  readonly upstream: URL;
  /** The API routes, checked and frozen (api/routes.ts). */
  readonly routes: readonly Route[];
  readonly sessionSecrets: readonly string[];
  /** The standalone URL when Redis is one server (GATEHOUSE_REDIS_URL or redis.url). */
  readonly redisUrl: string | undefined;
  /** Where sessions live: undefined = the in-memory store. */
  readonly redis: RedisTopology | undefined;
  readonly port: number;
  readonly scopes: string;
  readonly refreshSkewSeconds: number;
  readonly sessionIdleSeconds: number;
  readonly sessionAbsoluteSeconds: number;
  /** How long a session read from Redis is reused by this replica (session/sessionCache.ts); 0 = never. */
  readonly sessionCacheMs: number;
  readonly logLevel: LogLevel;
  readonly metricsPort: number;
  readonly keyPrefix: string;
  readonly cookieSameSite: 'strict' | 'lax';
  readonly par: 'auto' | 'required' | 'off';
  /** How problems found later (in the IdP's metadata) name a setting: by environment variable or by option. */
  readonly settingNames?: 'option' | 'env';
  readonly trustProxy: number;
  readonly idpTimeoutSeconds: number;
  readonly staticDir: string | undefined;
  readonly adminToken: string | undefined;
  /** Bound of the drain on SIGTERM/SIGINT: the process exits within it. */
  readonly shutdownSeconds: number;
  readonly anomalyRefreshesPerHour: number;
  readonly anomalyEndSession: boolean;
  readonly dpop: boolean;
  readonly upstreamTimeoutSeconds: number;
  readonly upstreamConnectTimeoutSeconds: number;
  readonly upstreamSocketsPerSession: number;
  readonly websocketsPerSession: number;
  readonly websocketMaxMessageBytes: number;
  /** Lower-case request header names dropped before forwarding, besides the built-in list. */
  readonly dropHeaders: readonly string[];
  /** 0 = no limit. */
  readonly loginRatePerMinute: number;
  readonly loginsInFlightMax: number;
  /** undefined = every interface. */
  readonly adminHost: string | undefined;
  readonly tokenExpiryMarginSeconds: number;
  /** http:// issuer on a loopback host (demo and tests only). */
  readonly allowInsecureIdp: boolean;
  /** Start-up warnings (insecure development settings). */
  readonly warnings: readonly string[];
}
