/** Puts a fresh access token on the request (res.locals.token), or answers as the /api table says. */
import type { HttpRequest, HttpResponse, Step } from '../http/exchange';
import { endSession, rejectSession, sessionKeys, type Lifecycle } from '../session/lifecycle';
import { sendError } from '../http/errors';
import type { AccessResult, TokenService } from '../tokens/refresh';
import { upstreamToken } from '../tokens/dpop';

export function attachAccessToken(lifecycle: Lifecycle, tokens: TokenService): Step {
  return async (req, res, next) => {
    const session = res.locals.session!; // set by the session rules, which run first
    // The route's own token when it names an API audience (resource, scope), else the login's.
    const result = await tokens.accessToken(sessionKeys(req, lifecycle), session, res.locals.route?.route.audience);
    if (result.kind !== 'bearer') return answerNoToken(req, res, lifecycle, result);
    res.locals.token = await upstreamToken(result.accessToken, result.dpop);
    next();
  };
}

/** The answer when a session has no access token to give: its end (401) or the IdP's unavailability (503). */
export async function answerNoToken(
  req: HttpRequest,
  res: HttpResponse,
  lifecycle: Lifecycle,
  result: Exclude<AccessResult, { kind: 'bearer' }>,
): Promise<void> {
  switch (result.kind) {
    case 'session-expired':
      // invalid_grant ends the session: records gone, cookie cleared, 401 session_expired.
      await endSession(req, lifecycle, { keepTokenRecord: true });
      lifecycle.metrics.sessionEnded(result.reason ?? 'invalid_grant');
      return rejectSession(res, lifecycle, 'session_expired');
    case 'gone':
      await endSession(req, lifecycle, { keepTokenRecord: false });
      return rejectSession(res, lifecycle, 'unauthenticated');
    case 'unavailable':
      // Every other refresh failure keeps the session; the SPA retries after Retry-After.
      return sendError(res, 503, 'token_refresh_unavailable', { 'Retry-After': String(result.retryAfterSeconds) });
  }
}
