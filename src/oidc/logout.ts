/**
 * POST /auth/logout: R31, R52–R56. The local logout always happens first and never waits for the IdP:
 * token record and session deleted, cookie cleared with its own attributes, refresh token revoked in the
 * background. Idempotent: without a session it answers 200 {"logoutUrl": null}.
 * R20: post_logout_redirect_uri comes from configuration only.
 */
import type { RequestHandler } from 'express';
import { clearSessionCookie } from '../http/cookies';
import type { CookieState } from '../http/cookieGuard';
import { endSession, liveSession, sessionKeys, type Lifecycle } from '../session/lifecycle';
import type { Logger } from '../log/logger';
import type { Idp } from './idp';

export function logout(deps: { lifecycle: Lifecycle; idp: Idp; log: Logger }): RequestHandler {
  const lc = deps.lifecycle;
  return async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const gh = await liveSession(req, lc);
    if (!gh) {
      if ((res.locals.cookie as CookieState | undefined)?.sent) clearSessionCookie(res, lc.cookies);
      res.json({ logoutUrl: null });
      return;
    }
    const keys = sessionKeys(req, lc);
    const tokens = await endSession(req, lc, { keepTokenRecord: false, revoke: true });
    clearSessionCookie(res, lc.cookies);
    deps.log.info({ session: keys.hash }, 'logout');
    res.json({ logoutUrl: deps.idp.endSessionUrl(tokens?.idToken) });
  };
}
