/**
 * An anomaly signal reported by the IdP: a refresh token presented again after it was rotated (RFC 9700
 * §4.14.2 refresh token reuse detection). The IdP revokes the grant; this endpoint is where its event hook
 * tells Gatehouse, on the admin port with the admin token (Auth0 log streams `ferrt`, Okta event hooks,
 * Keycloak admin events, Curity):
 *
 *   POST /admin/security/refresh-token-reuse {"sub": "...", "sid"?: "...", "iss"?: "..."} → 200 {"reported": true, "ended": <n>}
 *
 * Reuse is never inferred from a refresh grant's `invalid_grant`: that answer also means expired or revoked
 * (and IdP errors are classified by their protocol code, never by message text), so the IdP's own report is the signal.
 * Logged as a security event and counted; with GATEHOUSE_ANOMALY_END_SESSION=true the sessions are ended.
 */
import type { RequestHandler } from 'express';
import { sendError } from '../http/errors';
import type { Logger } from '../log/logger';
import type { Metrics } from '../health/metrics';
import type { SessionAdmin } from './sessionAdmin';

/** A subject or IdP session id: printable ASCII (the admin routes' rule for a `sub`). */
export const IDENTIFIER = /^[\x21-\x7e]{1,255}$/;
const MEMBERS = new Set(['sub', 'sid', 'iss']);

type Report = { sub: string; sid?: string };

/** Strict: a misspelt member (`session_id` for `sid`) would otherwise widen the report to all of the user's sessions. */
function parseReport(body: unknown, issuer: string): Report | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const b = body as Record<string, unknown>;
  if (Object.keys(b).some((k) => !MEMBERS.has(k))) return undefined;
  const { sub, sid, iss } = b;
  if (typeof sub !== 'string' || !IDENTIFIER.test(sub)) return undefined;
  if (sid !== undefined && (typeof sid !== 'string' || !IDENTIFIER.test(sid))) return undefined;
  // OIDC Core §16.15: issuers compare as exact strings. A report from another IdP names other users.
  if (iss !== undefined && iss !== issuer) return undefined;
  return sid === undefined ? { sub } : { sub, sid };
}

export function reuseReport(deps: {
  sessions: SessionAdmin;
  metrics: Metrics;
  log: Logger;
  issuer: () => string;
  endSession: boolean;
}): RequestHandler {
  return async (req, res) => {
    const report = parseReport(req.body, deps.issuer());
    if (!report) return sendError(res, 400, 'invalid_request');
    // Counted once handled: a report that failed here (store down) is answered 5xx and the hook retries it.
    const { sessions, ended } = await deps.sessions.compromised(report, { end: deps.endSession });
    deps.metrics.securityEvent('refresh_token_reuse');
    // Like admin_kill, the operator-supplied sub is logged; the IdP's sid is not (only whether it narrowed the report).
    deps.log.warn(
      { event: 'refresh_token_reuse', sub: report.sub, by: report.sid === undefined ? 'sub' : 'sid', sessions, ended },
      'security event: refresh token reuse reported by the IdP',
    );
    res.json({ reported: true, ended });
  };
}
