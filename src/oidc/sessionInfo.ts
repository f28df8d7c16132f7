/** GET /auth/session (R27): who is logged in and until when; never a token; does not extend the session. */
import type { RequestHandler } from 'express';
import { liveSession, rejectSession, type Lifecycle } from '../session/lifecycle';

export function sessionInfo(lc: Lifecycle): RequestHandler {
  return async (req, res) => {
    const gh = await liveSession(req, lc);
    if (!gh) return rejectSession(res, lc, 'unauthenticated');
    res.set('Cache-Control', 'no-store').json({
      authenticated: true,
      user: gh.user,
      expiresAt: Math.floor(gh.absoluteExpiresAt / 1000),
      idleExpiresAt: Math.floor(Math.min(gh.activeAt + lc.idleMs, gh.absoluteExpiresAt) / 1000),
    });
  };
}
