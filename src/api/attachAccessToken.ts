/** Puts a fresh access token on the request (res.locals.token), or answers as the /api table says. */
import type { HttpRequest, HttpResponse, Step } from '../http/exchange';
import { endSession, rejectSession, sessionKeys, type Lifecycle } from '../session/lifecycle';
import { sendError } from '../http/errors';
import type { AccessResult, TokenService } from '../tokens/refresh';
import { upstreamToken } from '../tokens/dpop';

export function attachAccessToken(lc: Lifecycle, tokens: TokenService): Step {
  return async (req, res, next) => {
    const gh = res.locals.session!; // set by the session rules, which run first
    // The route's own token when it names an API audience (resource, scope), else the login's.
    const result = await tokens.accessToken(sessionKeys(req, lc), gh, res.locals.route?.route.audience);
    if (result.kind !== 'bearer') return answerNoToken(req, res, lc, result);
    res.locals.token = await upstreamToken(result.accessToken, result.dpop);
    next();
  };
}

/** The answer when a session has no access token to give: its end (401) or the IdP's unavailability (503). */
export async function answerNoToken(
  req: HttpRequest,
  res: HttpResponse,
  lc: Lifecycle,
  result: Exclude<AccessResult, { kind: 'bearer' }>,
): Promise<void> {
  switch (result.kind) {
    case 'session-expired':
      // invalid_grant ends the session: records gone, cookie cleared, 401 session_expired.
      await endSession(req, lc, { keepTokenRecord: true });
      lc.metrics.sessionEnded(result.reason ?? 'invalid_grant');
      return rejectSession(res, lc, 'session_expired');
    case 'gone':
      await endSession(req, lc, { keepTokenRecord: false });
      return rejectSession(res, lc, 'unauthenticated');
    case 'unavailable':
      // Every other refresh failure keeps the session; the SPA retries after Retry-After.
      return sendError(res, 503, 'token_refresh_unavailable', { 'Retry-After': String(result.retryAfterSeconds) });
  }
}
