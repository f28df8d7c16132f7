/**
 * GET /auth/session: who is logged in and until when (`user`, `expiresAt`, `idleExpiresAt`); never a token;
 * does not extend the session.
 *
 * It also reports the access token's end and how often it was refreshed, read from
 * the token vault (for an SPA's "session health" view; the demo shows them live). The vault record is
 * versioned: the login writes version 1 and every refresh one more, so refreshCount = version - 1.
 * Both are left out when the session has no live token record (a grant found dead a moment ago).
 */
import type { RequestHandler } from 'express';
import { liveSession, rejectSession, sessionKeys, type Lifecycle } from '../session/lifecycle';

export function sessionInfo(lifecycle: Lifecycle): RequestHandler {
  return async (req, res) => {
    const session = await liveSession(req, lifecycle);
    if (!session) return rejectSession(res, lifecycle, 'unauthenticated');
    // The token record came with the session in one MGET (SealedSessionStore.find): no second round trip.
    const entry = await lifecycle.vault.readFor(session, sessionKeys(req, lifecycle));
    const tokens =
      entry && !entry.dead ? { accessTokenExpiresAt: Math.floor(entry.tokens.expiresAt / 1000), refreshCount: entry.version - 1 } : {};
    res.set('Cache-Control', 'no-store').json({
      authenticated: true,
      user: session.user,
      expiresAt: Math.floor(session.absoluteExpiresAt / 1000),
      idleExpiresAt: Math.floor(Math.min(session.activeAt + lifecycle.idleMs, session.absoluteExpiresAt) / 1000),
      ...tokens,
    });
  };
}
