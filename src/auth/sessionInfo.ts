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

export function sessionInfo(lc: Lifecycle): RequestHandler {
  return async (req, res) => {
    const gh = await liveSession(req, lc);
    if (!gh) return rejectSession(res, lc, 'unauthenticated');
    // The token record came with the session in one MGET (SealedSessionStore.find): no second round trip.
    const entry = await lc.vault.readFor(gh, sessionKeys(req, lc));
    const tokens =
      entry && !entry.dead ? { accessTokenExpiresAt: Math.floor(entry.tokens.expiresAt / 1000), refreshCount: entry.version - 1 } : {};
    res.set('Cache-Control', 'no-store').json({
      authenticated: true,
      user: gh.user,
      expiresAt: Math.floor(gh.absoluteExpiresAt / 1000),
      idleExpiresAt: Math.floor(Math.min(gh.activeAt + lc.idleMs, gh.absoluteExpiresAt) / 1000),
      ...tokens,
    });
  };
}
