/**
 * createGatehouse(): wires every module from a validated configuration. Used by main.ts and by anyone
 * embedding Gatehouse (supertest: `request(gatehouse.frontDoor)`).
 */
import type { Express } from 'express';
import session from 'express-session';
import type { Config, GatehouseOptions } from './config/schema';
import { validate } from './config/loadConfig';
import { createLogger, type Logger } from './log/logger';
import { MemoryKv } from './store/memoryKv';
import { RedisKv } from './store/redisKv';
import { createRedis, waitForRedis, type RedisClient } from './store/redisClient';
import { randomId } from './crypto/seal';
import { cookiePolicy, type CookiePolicy } from './http/cookies';
import { Keyring } from './session/keyring';
import { sessionLoader } from './api/sessionLoader';
import { KvBackingStore, SealedSessionStore, redisBackingStore, type BackingStore } from './session/sealedStore';
import type { Lifecycle } from './session/lifecycle';
import { SessionIndex } from './session/sessionIndex';
import { Terminator } from './session/terminator';
import { ExpiryLedger } from './session/expiryLedger';
import { SessionCache } from './session/sessionCache';
import { localInvalidations, redisInvalidations } from './store/invalidations';
import { Idp } from './idp/idp';
import { LoginTransactions } from './auth/loginTx';
import { EndedIdpSessions } from './session/endedIdpSessions';
import { Revoker } from './idp/revoker';
import { Vault } from './tokens/vault';
import { TokenService, type RefreshEvents, type TokenServiceOptions } from './tokens/refresh';
import { ClientTokens } from './tokens/clientTokens';
import { createForwarder, forwardShared, type Forwarder } from './api/forward';
import type { Route } from './api/routes';
import { createSocketForwarder } from './api/websocket/forwardSocket';
import { LiveSockets } from './api/websocket/liveSockets';
import { createApp } from './auth/app';
import { createFrontDoor, type FrontDoor } from './frontDoor';
import { createMetrics } from './health/metrics';
import { createAdminApp } from './admin/adminApp';
import { sessionAdmin, type SessionAdmin } from './admin/sessionAdmin';
import type { Metrics } from './health/metrics';
import type { Kv } from './store/kv';
import type { Invalidations } from './store/invalidations';

/** How often each replica looks for sessions that timed out. */
const SWEEP_INTERVAL_MS = 2000;

export interface GatehouseDeps {
  /** An ioredis client (Redis or Cluster) to use instead of connecting to the configured Redis (Gatehouse does not close it). */
  redis?: RedisClient;
  logger?: Logger;
  /** Clock (epoch ms), for tests that move time. */
  now?: () => number;
  events?: RefreshEvents;
  /** Run the expiry sweeper in this process (default true; `npm run sessions` turns it off). */
  sweepExpired?: boolean;
}

export interface Gatehouse {
  /**
   * Every request's entry point: `http.createServer(gatehouse.frontDoor)`, `request(gatehouse.frontDoor)` in
   * supertest, or `hostApp.use(gatehouse.frontDoor)` in an Express app (what Gatehouse does not serve goes on).
   */
  readonly frontDoor: FrontDoor;
  /** The Express app behind the front door: `/auth/*`, health and static files (never the API lane). */
  readonly app: Express;
  /** The admin port's app (GATEHOUSE_METRICS_PORT): the session API when GATEHOUSE_ADMIN_TOKEN is set. */
  readonly adminApp: Express;
  /** List and end sessions by user, on every replica at once (the kill switch; also `npm run sessions`). */
  readonly sessions: SessionAdmin;
  readonly config: Config;
  /** True once the store answers and IdP metadata is loaded. */
  ready(): Promise<boolean>;
  /** Marks the gateway as draining: /readyz answers 503 so load balancers send no more; requests are still served. */
  drain(): void;
  /** Closes every WebSocket with 1001 (going away) and opens no more; resolves when they are closed (a second or so). */
  closeSockets(): Promise<void>;
  /** Drains, finishes background work (refreshes in flight, revocations) and closes connections it opened. */
  close(): Promise<void>;
}

function isConfig(o: GatehouseOptions | Config): o is Config {
  return o instanceof Object && 'publicOrigin' in o && 'warnings' in o;
}

export async function createGatehouse(options: GatehouseOptions | Config, deps: GatehouseDeps = {}): Promise<Gatehouse> {
  const cfg = isConfig(options) ? options : validate(options);
  const log = deps.logger ?? createLogger(cfg.logLevel);
  for (const w of cfg.warnings) log.warn({}, w);
  const now = deps.now ?? Date.now;

  const { redis, closeRedis } = await connectRedis(cfg, deps, log);
  const metrics = createMetrics();
  const kv = redis
    ? new RedisKv(redis, {
        observer: (seconds, failed) => metrics.redisCommand(seconds, failed),
        waitForReplicas: cfg.redis?.mode === 'sentinel' ? cfg.redis.waitForReplicas : 0,
      })
    : new MemoryKv(now);
  const { keyring, invalidations, cache, vault, store, index, ledger } = sessionStorage(cfg, redis, kv, log, now);
  const cookies = cookiePolicy(cfg);
  const idp = new Idp(cfg, log, now);
  try {
    await idp.start();
  } catch (err) {
    // The IdP's metadata contradicts the configuration (a ConfigError): nothing opened here stays open.
    idp.close();
    await invalidations.close();
    await closeRedis();
    throw err;
  }
  const revoker = new Revoker(idp, index, log, (kind) => metrics.idpError('revocation', kind));
  const revokeLater = revoker.revokeLater;
  const idleMs = cfg.sessionIdleSeconds * 1000;
  const lifecycle: Lifecycle = { keyring, store, vault, index, ledger, metrics, revokeLater, cookies, idleMs, now };
  const terminator = new Terminator(lifecycle, kv, log);
  const sweeper = deps.sweepExpired === false ? undefined : startSweeper(ledger, terminator, log);
  const tokens = tokenService(cfg, { kv, vault, idp, log, now, revokeLater }, metrics, deps.events);
  const { forwarders, socketForwarders } = routeForwarders(cfg, log, metrics);
  // WebSockets: each lives with its session (api/websocket/liveSockets.ts), told of every session change.
  const live = new LiveSockets({ lifecycle, tokens, log, perSession: cfg.websocketsPerSession });
  if (socketForwarders.size > 0) cache.watch(live);

  let draining = false;
  const { app, api } = createApp({
    cfg,
    log,
    kv,
    idp,
    lifecycle,
    transactions: new LoginTransactions(kv, keyring, { key: `${cfg.keyPrefix}logins`, max: cfg.loginsInFlightMax, now }),
    tokens,
    forwarders,
    clientTokens: new ClientTokens({
      kv,
      keyring,
      idp,
      log,
      now,
      timing: { skewSeconds: cfg.refreshSkewSeconds, marginSeconds: cfg.tokenExpiryMarginSeconds },
      lockWaitMs: cfg.idpTimeoutSeconds * 1000 + 5000,
      dpop: cfg.dpop,
      onGrant: (outcome) => (outcome === 'ok' ? undefined : metrics.idpError('refresh', 'client_credentials')),
    }),
    sockets: { forwarders: socketForwarders, live },
    session: sessionMiddleware(cfg, store, cookies),
    sessionLoader: sessionLoader(store, cfg.sessionSecrets, cookies.sessionName),
    terminator,
    endedIdpSessions: new EndedIdpSessions(kv, keyring),
    draining: () => draining,
  });

  const sessions = sessionAdmin({ index, terminator, issuer: () => idp.issuerId() });
  const adminApp = createAdminApp({
    adminToken: cfg.adminToken,
    sessions,
    metrics,
    log,
    issuer: () => idp.issuerId(),
    endSessionOnReuse: cfg.anomalyEndSession,
  });

  return {
    frontDoor: createFrontDoor({ api, app }),
    app,
    adminApp,
    sessions,
    config: cfg,
    async ready() {
      const storeOk = await kv.ping().then(
        () => true,
        () => false,
      );
      return storeOk && idp.ready();
    },
    drain() {
      draining = true;
    },
    closeSockets: () => live.shutdown(),
    async close() {
      draining = true;
      await shutdown({ live, sweeper, tokens, idp, revoker, forwarders, invalidations, closeRedis });
    },
  };
}

/**
 * Stops what createGatehouse started, in this order: WebSockets, the sweeper, refreshes under way, the IdP
 * client, revocations under way, the forwarders' connections, session-change announcements, and Redis.
 */
async function shutdown(parts: {
  live: LiveSockets;
  sweeper: Sweeper | undefined;
  tokens: TokenService;
  idp: Idp;
  revoker: Revoker;
  forwarders: ReadonlyMap<Route, Forwarder>;
  invalidations: Invalidations;
  closeRedis: () => Promise<void>;
}): Promise<void> {
  await parts.live.shutdown();
  await parts.sweeper?.stop();
  // A refresh outlives a browser that went away: the IdP may have rotated the refresh token already, and
  // only this refresh can store the new one, so Redis stays open until it is done (main.ts bounds the wait).
  while (parts.tokens.pending > 0) await new Promise((r) => setTimeout(r, 20));
  parts.idp.close();
  await parts.revoker.close();
  for (const forwarder of parts.forwarders.values()) forwarder.close();
  await parts.invalidations.close();
  await parts.closeRedis();
}

/** The embedder's Redis client, or one to the configured Redis (which Gatehouse then closes), or none (memory). */
async function connectRedis(
  cfg: Config,
  deps: GatehouseDeps,
  log: Logger,
): Promise<{ redis: RedisClient | undefined; closeRedis: () => Promise<void> }> {
  if (deps.redis || !cfg.redis) return { redis: deps.redis, closeRedis: () => Promise.resolve() };
  const redis = createRedis(cfg.redis, log);
  if (!(await waitForRedis(redis, 3000))) log.warn({}, 'redis is not reachable yet; requests answer 503 until it is');
  return {
    redis,
    closeRedis: async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** Where sessions and their tokens live: sealed records, the indexes that find them, and the replica's cache. */
function sessionStorage(cfg: Config, redis: RedisClient | undefined, kv: Kv, log: Logger, now: () => number) {
  const keyring = new Keyring(cfg.sessionSecrets, cfg.keyPrefix);
  const idleMs = cfg.sessionIdleSeconds * 1000;
  const backingPrefix = `${cfg.keyPrefix}s:`;
  const backing: BackingStore = redis ? redisBackingStore(redis, backingPrefix, now) : new KvBackingStore(kv, backingPrefix, now);
  // Sessions read a moment ago are reused; every change is announced to every replica.
  const invalidations: Invalidations = redis ? redisInvalidations(redis, `${cfg.keyPrefix}changed`, log) : localInvalidations();
  const cache = new SessionCache(cfg.sessionCacheMs, (hash) => invalidations.publish(hash));
  invalidations.listen(
    (hash) => cache.drop(hash),
    (listening) => cache.setListening(listening),
  );
  const vault = new Vault(kv, cache);
  const store = new SealedSessionStore(backing, kv, keyring, vault, idleMs, now, cache);
  const index = new SessionIndex(kv, keyring, now);
  const ledger = new ExpiryLedger(kv, keyring, cfg.keyPrefix, now);
  return { keyring, invalidations, cache, vault, store, index, ledger };
}

interface Sweeper {
  /** Stops sweeping; resolves when the sweep under way (if any) is done. */
  stop(): Promise<void>;
}

/**
 * Sessions that timed out: every few seconds, revoke their refresh tokens and clean their records
 * (expiryLedger.ts). One sweep at a time; stop() waits for the one under way.
 */
function startSweeper(ledger: ExpiryLedger, terminator: Terminator, log: Logger): Sweeper {
  let sweeping: Promise<void> | undefined;
  const timer = setInterval(() => {
    sweeping ??= ledger
      .sweep((due) => terminator.end(due, 'expired', { revoke: true }))
      .catch((err: unknown) => log.warn({ err }, 'expiry sweep failed; the next one retries'))
      .finally(() => (sweeping = undefined));
  }, SWEEP_INTERVAL_MS).unref();
  return {
    async stop() {
      clearInterval(timer);
      await sweeping;
    },
  };
}

/** Access tokens of sessions, refreshed exactly once per expiry across requests and replicas (tokens/refresh.ts). */
function tokenService(
  cfg: Config,
  parts: Pick<TokenServiceOptions, 'kv' | 'vault' | 'idp' | 'log' | 'now' | 'revokeLater'>,
  metrics: Metrics,
  events: RefreshEvents | undefined,
): TokenService {
  return new TokenService({
    ...parts,
    timing: { skewSeconds: cfg.refreshSkewSeconds, marginSeconds: cfg.tokenExpiryMarginSeconds },
    lockLeaseMs: 10_000,
    lockWaitMs: cfg.idpTimeoutSeconds * 1000 + 5000,
    events: {
      onRefresh: (outcome, seconds, mode) => {
        metrics.refreshed(outcome, seconds, mode);
        events?.onRefresh?.(outcome, seconds, mode);
      },
      onLockWait: () => metrics.lockWaited(),
      onLockTimeout: () => metrics.lockTimedOut(),
      onIdpError: (kind) => metrics.idpError('refresh', kind),
      onAnomaly: () => metrics.securityEvent('refresh_rate'),
    },
    anomaly: { perHour: cfg.anomalyRefreshesPerHour, endSession: cfg.anomalyEndSession },
  });
}

/** One forwarder (one proxy and one connection pool) per route, and one per WebSocket route. */
function routeForwarders(cfg: Config, log: Logger, metrics: Metrics) {
  const shared = forwardShared(cfg);
  const forwarders = new Map(
    cfg.routes.map((route) => [
      route,
      createForwarder(
        { upstream: route.upstream, timeoutSeconds: route.timeoutSeconds, allowSetCookie: route.allowSetCookie },
        shared,
        log,
        metrics,
      ),
    ]),
  );
  const socketForwarders = new Map(
    cfg.routes
      .filter((route) => route.websocket)
      .map((route) => [
        route,
        createSocketForwarder(
          {
            upstream: route.upstream,
            timeoutSeconds: route.timeoutSeconds,
            allowSetCookie: false,
            maxMessageBytes: cfg.websocketMaxMessageBytes,
          },
          shared,
          log,
          metrics,
        ),
      ]),
  );
  return { forwarders, socketForwarders };
}

/** express-session for /auth: it writes a session only at login, under a fresh 256-bit id. */
function sessionMiddleware(cfg: Config, store: SealedSessionStore, cookies: CookiePolicy) {
  return session({
    name: cookies.sessionName,
    secret: [...cfg.sessionSecrets],
    store,
    resave: false,
    saveUninitialized: false,
    rolling: false,
    genid: () => randomId(), // 256 bits from the CSPRNG: not guessable
    cookie: { httpOnly: true, secure: cfg.secureCookies, sameSite: cookies.sameSite === 'Lax' ? 'lax' : 'strict', path: '/' },
  });
}
