/** Puts a fresh access token on the request (res.locals.accessToken), or answers per DESIGN.md's /api table. */
import type { Step } from '../http/exchange';
import { endSession, rejectSession, sessionKeys, type Lifecycle } from '../session/lifecycle';
import { sendError } from '../http/errors';
import type { GatehouseSession } from '../session/sessionData';
import type { TokenService } from './refresh';

export function attachAccessToken(lc: Lifecycle, tokens: TokenService): Step {
  return async (req, res, next) => {
    const gh = res.locals.session as GatehouseSession;
    const result = await tokens.accessToken(sessionKeys(req, lc), gh);
    switch (result.kind) {
      case 'bearer':
        res.locals.accessToken = result.accessToken;
        return next();
      case 'session-expired':
        // R40: invalid_grant ends the session: records gone, cookie cleared, 401 session_expired.
        await endSession(req, lc, { keepTokenRecord: true });
        lc.metrics.sessionEnded(result.reason ?? 'invalid_grant');
        return rejectSession(res, lc, 'session_expired');
      case 'gone':
        await endSession(req, lc, { keepTokenRecord: false });
        return rejectSession(res, lc, 'unauthenticated');
      case 'unavailable':
        // R41: every other refresh failure keeps the session; the SPA retries after Retry-After.
        return sendError(res, 503, 'token_refresh_unavailable', { 'Retry-After': String(result.retryAfterSeconds) });
    }
  };
}
