/**
 * The admin port (GATEHOUSE_METRICS_PORT): never served on the public port. Its session API is on only
 * when GATEHOUSE_ADMIN_TOKEN is set, and every call must carry `Authorization: Bearer <that token>`,
 * compared in constant time. Refused calls are counted (gatehouse_admin_auth_failures_total) and logged,
 * at most one line a minute. The port listens on GATEHOUSE_ADMIN_HOST (default: every interface).
 *
 *   GET  /metrics                                     → Prometheus text format (no token)
 *   GET  /admin/sessions?sub=<sub>                    → 200 {"sessions":[{session, createdAt, absoluteExpiresAt}]} (unix seconds)
 *   POST /admin/sessions/revoke {"sub": "...", "session"?: "..."}
 *        → 200 {"ended": <sessions ended>, "revoked": <refresh tokens revoked>, "kept": <left: grant may be shared>, "failed": <refused>}
 *   POST /admin/security/refresh-token-reuse {"sub": "...", "sid"?: "...", "iss"?: "..."} → 200 {"reported": true, "ended": <n>}
 *        (the IdP's event hook reporting refresh-token reuse: reuseReport.ts)
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type RequestHandler } from 'express';
import { errorHandler, sendError } from '../http/errors';
import type { LogFn, Logger } from '../log/logger';
import type { SessionAdmin, SessionSummary } from './sessionAdmin';
import type { Metrics } from '../health/metrics';
import { IDENTIFIER as SUB, reuseReport } from './reuseReport';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Session times in unix seconds, the unit of every other time Gatehouse shows (/auth/session, tokens'
 * `exp`); sessions keep them in epoch milliseconds. `npm run sessions -- list` prints them the same way.
 */
export function inSeconds(sessions: SessionSummary[]): SessionSummary[] {
  const s = (ms: number) => Math.floor(ms / 1000);
  return sessions.map((x) => ({ ...x, createdAt: s(x.createdAt), absoluteExpiresAt: s(x.absoluteExpiresAt) }));
}

/** Failed admin authentication is logged at most once per this many milliseconds (every failure is counted). */
export const AUTH_FAILURE_LOG_WINDOW_MS = 60_000;

/**
 * A warning written at most once per `windowMs`: a client guessing the admin token cannot flood the log.
 * Each line carries `suppressed`, how many were left out since the line before.
 */
export function throttledWarning(log: Logger, windowMs: number, now: () => number = Date.now): LogFn {
  let last = -Infinity;
  let suppressed = 0;
  return (fields, msg) => {
    const t = now();
    if (t - last < windowMs) {
      suppressed++;
      return;
    }
    log.warn({ ...fields, suppressed }, msg);
    last = t;
    suppressed = 0;
  };
}

/** The admin API's own 401 body: its callers are operators and IdP hooks, who cannot log in at /auth/login. */
const ADMIN_UNAUTHENTICATED = JSON.stringify({
  error: 'unauthenticated',
  message: 'The admin API needs the admin token: send Authorization: Bearer <GATEHOUSE_ADMIN_TOKEN>.',
});

function requireAdminToken(token: string, deps: Pick<AdminDeps, 'log' | 'metrics'>): RequestHandler {
  const expected = digest(token);
  const warn = throttledWarning(deps.log, AUTH_FAILURE_LOG_WINDOW_MS);
  return (req, res, next) => {
    const header = req.headers.authorization;
    const m = /^Bearer (\S+)$/.exec(header ?? '');
    if (m && timingSafeEqual(digest(m[1]!), expected)) return next();
    // Never the presented header or token: a near miss would reveal most of the real one.
    const reason = header === undefined ? 'no_credentials' : m ? 'wrong_token' : 'not_bearer';
    deps.metrics.adminAuthFailed();
    warn(
      { event: 'admin_auth_failed', reason, method: req.method, path: req.path, client: req.socket.remoteAddress },
      'admin API call refused: missing or wrong admin token',
    );
    // RFC 6750 §3.1: no error code when no bearer token was sent; invalid_token when the one sent is wrong.
    res.set('WWW-Authenticate', `Bearer realm="gatehouse-admin"${reason === 'wrong_token' ? ', error="invalid_token"' : ''}`);
    res.status(401).type('application/json').send(ADMIN_UNAUTHENTICATED);
  };
}

export interface AdminDeps {
  adminToken: string | undefined;
  sessions: SessionAdmin;
  metrics: Metrics;
  log: Logger;
  /** The IdP's issuer identifier (from discovery): a reuse report naming another issuer is refused. */
  issuer: () => string;
  /** GATEHOUSE_ANOMALY_END_SESSION: end the sessions a reuse report names. */
  endSessionOnReuse: boolean;
}

export function createAdminApp(deps: AdminDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  // Prometheus text format; the admin port is not the public port, so no token (scrapers rarely carry one).
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  if (deps.adminToken) {
    const auth = requireAdminToken(deps.adminToken, deps);
    app.get('/admin/sessions', auth, async (req, res) => {
      const sub = req.query.sub;
      if (typeof sub !== 'string' || !SUB.test(sub)) return sendError(res, 400, 'invalid_request');
      res.json({ sessions: inSeconds(await deps.sessions.list(sub)) });
    });
    app.post('/admin/sessions/revoke', auth, express.json({ limit: '4kb' }), async (req, res) => {
      const body = req.body as { sub?: unknown; session?: unknown } | undefined;
      const sub = body?.sub;
      const session = body?.session;
      if (
        typeof sub !== 'string' ||
        !SUB.test(sub) ||
        (session !== undefined && (typeof session !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(session)))
      ) {
        return sendError(res, 400, 'invalid_request');
      }
      const report = await deps.sessions.revoke(session === undefined ? { sub } : { sub, session });
      deps.log.info({ event: 'admin_kill', sub, session, ...report }, 'sessions ended by an operator');
      res.json(report);
    });
    app.post(
      '/admin/security/refresh-token-reuse',
      auth,
      express.json({ limit: '4kb' }),
      reuseReport({ ...deps, endSession: deps.endSessionOnReuse }),
    );
  }
  app.use((_req, res) => sendError(res, 404, 'not_found'));
  app.use(errorHandler(deps.log));
  return app;
}
