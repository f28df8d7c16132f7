/**
 * POST /auth/logout. The local logout always happens first and never waits for the IdP:
 * token record and session deleted, cookie cleared with its own attributes, refresh token revoked in the
 * background. Idempotent: without a session it answers 200 {"logoutUrl": null}.
 * post_logout_redirect_uri comes from configuration only, never from the request (no open redirect).
 * OIDC RP-Initiated Logout 1.0 §2, §3: logoutUrl carries id_token_hint, client_id, the configured
 * post_logout_redirect_uri and a one-time `state`, checked when the IdP sends the browser back.
 */
import type { RequestHandler } from 'express';
import { clearSessionCookie } from '../http/cookies';
import type { Locals } from '../http/exchange';
import { endSession, liveSession, sessionKeys, type Lifecycle } from '../session/lifecycle';
import type { Logger } from '../log/logger';
import type { Kv } from '../store/kv';
import { randomId } from '../crypto/seal';
import type { Idp } from '../idp/idp';

/** How long the IdP may take to send the browser back after logout. */
const RETURN_TTL_MS = 10 * 60 * 1000;

export interface LogoutDeps {
  lifecycle: Lifecycle;
  idp: Idp;
  kv: Kv;
  log: Logger;
}

export function logout(deps: LogoutDeps): RequestHandler {
  const { lifecycle } = deps;
  return async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const session = await liveSession(req, lifecycle);
    if (!session) {
      if ((res.locals as Locals).cookie?.sent) clearSessionCookie(res, lifecycle.cookies);
      res.json({ logoutUrl: null });
      return;
    }
    const keys = sessionKeys(req, lifecycle);
    const tokens = await endSession(req, lifecycle, { keepTokenRecord: false, revoke: true });
    clearSessionCookie(res, lifecycle.cookies);
    lifecycle.metrics.sessionEnded('logout');
    deps.log.info({ session: keys.hash }, 'logout');
    const state = randomId();
    const logoutUrl = deps.idp.endSessionUrl(tokens?.idToken, state);
    // The local logout is done whatever happens here: a store fault only costs the state check on return.
    if (logoutUrl)
      await deps.kv
        .set(lifecycle.keyring.forRandom('o', state).key, '1', RETURN_TTL_MS)
        .catch((err: unknown) => deps.log.warn({ err }, 'could not record the logout state'));
    res.json({ logoutUrl });
  };
}

/**
 * GET <post_logout_redirect_uri path>?state=…: the IdP sends the browser back. A state this gateway issued
 * (one time) lands on `/` with a clean URL; any other state is ignored and the request is served as
 * if it carried none.
 */
export function logoutReturn(deps: { lifecycle: Lifecycle; kv: Kv }): RequestHandler {
  return async (req, res, next) => {
    const state = req.query.state;
    if (typeof state !== 'string' || state.length > 128 || !(await deps.kv.getDel(deps.lifecycle.keyring.forRandom('o', state).key)))
      return next();
    res.set('Cache-Control', 'no-store').set('Referrer-Policy', 'no-referrer').redirect(302, '/');
  };
}
