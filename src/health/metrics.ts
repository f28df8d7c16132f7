/**
 * Prometheus metrics, served on the admin port only (GATEHOUSE_METRICS_PORT). Names follow Prometheus
 * conventions with a `gatehouse_` prefix. Each gateway has its own registry (several can share a process).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type SessionEndReason = 'logout' | 'invalid_grant' | 'idle' | 'absolute' | 'backchannel' | 'admin' | 'anomaly';
export type SecurityEventKind = 'refresh_rate' | 'refresh_token_reuse';
export type RefreshOutcome = 'ok' | 'invalid_grant' | 'transient' | 'race_recovered';
/**
 * Why an /api request got no (whole) upstream answer: unreachable (no connection), connect_timeout,
 * response_timeout (no response head in time), malformed (an answer HTTP does not allow), reset (the
 * connection closed or broke before the answer was complete).
 */
export type UpstreamErrorKind = 'unreachable' | 'connect_timeout' | 'response_timeout' | 'malformed' | 'reset';
/** rate_limit: one client address over its logins a minute (429); in_flight: too many logins stored at once (503). */
export type LoginRefusal = 'rate_limit' | 'in_flight';
/**
 * Why a WebSocket closed: browser or upstream (either side closed it, or its connection broke), session_ended
 * (the session ended: logout, kill switch, back-channel logout, invalid_grant, idle or absolute end),
 * unchecked (session changes could not be received), shutdown, too_big (a browser message over the limit),
 * protocol (bytes that are no WebSocket frames).
 */
export type SocketCloseReason = 'browser' | 'upstream' | 'session_ended' | 'unchecked' | 'shutdown' | 'too_big' | 'protocol';
export const SOCKET_CLOSE_REASONS: readonly SocketCloseReason[] = [
  'browser',
  'upstream',
  'session_ended',
  'unchecked',
  'shutdown',
  'too_big',
  'protocol',
];

export interface Metrics {
  readonly registry: Registry;
  proxied(statusCode: number, seconds: number): void;
  refreshed(outcome: RefreshOutcome, seconds: number, mode: 'foreground' | 'background'): void;
  lockWaited(): void;
  lockTimedOut(): void;
  sessionCreated(): void;
  sessionEnded(reason: SessionEndReason): void;
  redisCommand(seconds: number, failed: boolean): void;
  idpError(operation: 'discovery' | 'login' | 'refresh' | 'revocation' | 'userinfo', kind: string): void;
  securityEvent(kind: SecurityEventKind): void;
  loginRefused(reason: LoginRefusal): void;
  /** A call to the admin session API refused for a missing or wrong admin token. */
  adminAuthFailed(): void;
  upstreamError(kind: UpstreamErrorKind): void;
  /** An /api request refused because its session had its upstream requests in flight (503 upstream_busy). */
  upstreamBusy(): void;
  /** An upstream 401 invalid_token to a request without a body, answered by refreshing the token (replayed at most once). */
  upstreamTokenRetried(): void;
  /** A WebSocket opened through the gateway (the 101 passed on), or closed. */
  socketOpened(): void;
  socketClosed(reason: SocketCloseReason): void;
  /** An upgrade refused before any socket opened, by the error code answered (or `upstream`: the upstream refused it). */
  upgradeRefused(reason: string): void;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' });
  const proxiedTotal = new Counter({
    name: 'gatehouse_proxy_requests_total',
    help: 'Requests answered on /api, by route and status class.',
    labelNames: ['route', 'status_class'] as const,
    registers: [registry],
  });
  const proxiedSeconds = new Histogram({
    name: 'gatehouse_proxy_request_duration_seconds',
    help: 'Time to answer /api requests (to the end of the response), by route.',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const refreshTotal = new Counter({
    name: 'gatehouse_refresh_total',
    help:
      'Refresh grants sent to the IdP, by outcome, and by mode (foreground: a call waited for it, its token ' +
      'inside the expiry margin; background: calls went on with the current token).',
    labelNames: ['outcome', 'mode'] as const,
    registers: [registry],
  });
  const refreshSeconds = new Histogram({
    name: 'gatehouse_refresh_duration_seconds',
    help: 'Duration of refresh grants at the IdP.',
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const lockWaits = new Counter({
    name: 'gatehouse_refresh_lock_waits_total',
    help: 'Requests that waited for another replica’s refresh.',
    registers: [registry],
  });
  const lockTimeouts = new Counter({
    name: 'gatehouse_refresh_lock_timeouts_total',
    help: 'Requests that gave up waiting for another replica’s refresh.',
    registers: [registry],
  });
  const created = new Counter({ name: 'gatehouse_sessions_created_total', help: 'Sessions created (logins).', registers: [registry] });
  const ended = new Counter({
    name: 'gatehouse_sessions_ended_total',
    help: 'Sessions ended, by reason.',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const redisSeconds = new Histogram({
    name: 'gatehouse_redis_command_duration_seconds',
    help: 'Latency of Redis commands (and scripts) sent by the gateway.',
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const redisErrors = new Counter({
    name: 'gatehouse_redis_errors_total',
    help: 'Redis commands that failed or timed out.',
    registers: [registry],
  });
  const idpErrors = new Counter({
    name: 'gatehouse_idp_errors_total',
    help: 'Failed requests to the IdP, by operation and kind.',
    labelNames: ['operation', 'kind'] as const,
    registers: [registry],
  });
  const security = new Counter({
    name: 'gatehouse_security_events_total',
    help:
      'Security events, by kind (refresh_rate: a session refreshing more often than the anomaly bound; ' +
      'refresh_token_reuse: the IdP reported a refresh token presented again after rotation).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  for (const kind of ['refresh_rate', 'refresh_token_reuse']) security.labels(kind).inc(0);
  const upstreamErrors = new Counter({
    name: 'gatehouse_upstream_errors_total',
    help: 'Upstream requests of /api that failed, by kind (unreachable, connect_timeout, response_timeout, malformed, reset).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  for (const kind of ['unreachable', 'connect_timeout', 'response_timeout', 'malformed', 'reset']) upstreamErrors.labels(kind).inc(0);
  const upstreamBusy = new Counter({
    name: 'gatehouse_upstream_busy_total',
    help: 'Requests of /api refused with 503 upstream_busy: their session already had its upstream requests in flight.',
    registers: [registry],
  });
  const tokenRetries = new Counter({
    name: 'gatehouse_upstream_token_retries_total',
    help: 'Upstream 401 invalid_token answers to requests without a body that led to a token refresh (and at most one replay).',
    registers: [registry],
  });
  const adminAuthFailures = new Counter({
    name: 'gatehouse_admin_auth_failures_total',
    help: 'Calls to the admin session API refused for a missing or wrong admin token.',
    registers: [registry],
  });
  const loginRefusals = new Counter({
    name: 'gatehouse_login_refused_total',
    help:
      'Requests to /auth/login and /auth/callback refused, by reason (rate_limit: a client address over ' +
      'GATEHOUSE_LOGIN_RATE_PER_MINUTE, 429; in_flight: GATEHOUSE_LOGINS_IN_FLIGHT_MAX logins stored, 503).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of ['rate_limit', 'in_flight']) loginRefusals.labels(reason).inc(0);
  const socketsOpen = new Gauge({
    name: 'gatehouse_websockets_open',
    help: 'WebSockets open through this replica.',
    registers: [registry],
  });
  const socketsClosed = new Counter({
    name: 'gatehouse_websockets_closed_total',
    help:
      'WebSockets closed, by reason (browser, upstream, session_ended, unchecked: session changes could not be ' +
      'received, shutdown, too_big, protocol).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of SOCKET_CLOSE_REASONS) socketsClosed.labels(reason).inc(0);
  const upgradesRefused = new Counter({
    name: 'gatehouse_websocket_upgrades_refused_total',
    help: 'WebSocket upgrades refused before a socket opened, by reason (the error code answered, or upstream).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  // Labelled series appear at zero from the start, so dashboards and alerts see them before the first event.
  for (const outcome of ['ok', 'invalid_grant', 'transient', 'race_recovered'])
    for (const mode of ['foreground', 'background']) refreshTotal.labels(outcome, mode).inc(0);
  for (const reason of ['logout', 'invalid_grant', 'idle', 'absolute', 'backchannel', 'admin', 'anomaly']) ended.labels(reason).inc(0);

  return {
    registry,
    proxied(statusCode, seconds) {
      proxiedTotal.labels('api', `${Math.floor(statusCode / 100)}xx`).inc();
      proxiedSeconds.labels('api').observe(seconds);
    },
    refreshed(outcome, seconds, mode) {
      refreshTotal.labels(outcome, mode).inc();
      refreshSeconds.observe(seconds);
    },
    lockWaited: () => lockWaits.inc(),
    lockTimedOut: () => lockTimeouts.inc(),
    sessionCreated: () => created.inc(),
    sessionEnded: (reason) => ended.labels(reason).inc(),
    redisCommand(seconds, failed) {
      redisSeconds.observe(seconds);
      if (failed) redisErrors.inc();
    },
    idpError: (operation, kind) => idpErrors.labels(operation, kind).inc(),
    securityEvent: (kind) => security.labels(kind).inc(),
    loginRefused: (reason) => loginRefusals.labels(reason).inc(),
    adminAuthFailed: () => adminAuthFailures.inc(),
    upstreamError: (kind) => upstreamErrors.labels(kind).inc(),
    upstreamBusy: () => upstreamBusy.inc(),
    upstreamTokenRetried: () => tokenRetries.inc(),
    socketOpened: () => socketsOpen.inc(),
    socketClosed(reason) {
      socketsOpen.dec();
      socketsClosed.labels(reason).inc();
    },
    upgradeRefused: (reason) => upgradesRefused.labels(reason).inc(),
  };
}
