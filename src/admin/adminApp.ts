/**
 * The admin port (GATEHOUSE_METRICS_PORT): never served on the public port. Its session API is on only
 * when GATEHOUSE_ADMIN_TOKEN is set, and every call must carry `Authorization: Bearer <that token>`,
 * compared in constant time.
 *
 *   GET  /metrics                                     → Prometheus text format (no token)
 *   GET  /admin/sessions?sub=<sub>                    → 200 {"sessions":[{session, createdAt, absoluteExpiresAt}]}
 *   POST /admin/sessions/revoke {"sub": "...", "session"?: "..."} → 200 {"revoked": <n>}
 *   POST /admin/security/refresh-token-reuse {"sub": "...", "sid"?: "...", "iss"?: "..."} → 200 {"reported": true, "ended": <n>}
 *        (the IdP's event hook reporting refresh-token reuse: reuseReport.ts)
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type RequestHandler } from 'express';
import { errorHandler, sendError } from '../http/errors';
import type { Logger } from '../log/logger';
import type { SessionAdmin } from './sessionAdmin';
import type { Metrics } from '../health/metrics';
import { IDENTIFIER as SUB, reuseReport } from './reuseReport';

const digest = (s: string) => createHash('sha256').update(s).digest();

function requireAdminToken(token: string): RequestHandler {
  const expected = digest(token);
  return (req, res, next) => {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    if (!m || !timingSafeEqual(digest(m[1]!), expected)) {
      res.set('WWW-Authenticate', 'Bearer realm="gatehouse-admin"');
      return sendError(res, 401, 'unauthenticated');
    }
    next();
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
    const auth = requireAdminToken(deps.adminToken);
    app.get('/admin/sessions', auth, async (req, res) => {
      const sub = req.query.sub;
      if (typeof sub !== 'string' || !SUB.test(sub)) return sendError(res, 400, 'invalid_request');
      res.json({ sessions: await deps.sessions.list(sub) });
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
      const revoked = await deps.sessions.revoke(session === undefined ? { sub } : { sub, session });
      deps.log.info({ event: 'admin_kill', sub, session, revoked }, 'sessions ended by an operator');
      res.json({ revoked });
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
