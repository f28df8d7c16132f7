/**
 * POST /auth/backchannel-logout: OpenID Connect Back-Channel Logout 1.0 (with errata 1).
 *
 * Server to server, so no CSRF rule and no cookie. A form-encoded body with exactly one `logout_token`
 * (§2.5), validated fully (§2.6, logoutToken.ts). A `jti` is remembered until the token expires, so a
 * replayed token is refused, and sessions created after the token was issued are never ended.
 * A `sid` ends the sessions of that IdP session (of that `sub` too when both are given); a `sub` alone ends
 * every session of the user (§2.7). 200 also when no session was live; 400 for an invalid token and when
 * the logout itself failed, which is logged as an error (§2.8); always `Cache-Control: no-store`.
 */
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { sendError } from '../http/errors';
import type { Kv } from '../store/kv';
import type { Logger } from '../log/logger';
import type { Keyring } from '../session/keyring';
import type { IndexEntry, SessionIndex } from '../session/sessionIndex';
import type { Terminator } from '../session/terminator';
import type { Idp } from '../idp/idp';
import { validateLogoutToken } from '../idp/logoutToken';
import type { EndedIdpSessions } from '../session/endedIdpSessions';

/** Clock difference between the IdP and Gatehouse tolerated when comparing a session's start with `iat`. */
const SKEW_MS = 5000;
/** The jti is remembered until the token's exp plus this margin. */
const JTI_MARGIN_S = 60;

export interface BackchannelDeps {
  idp: Idp;
  kv: Kv;
  keyring: Keyring;
  index: SessionIndex;
  terminator: Terminator;
  /** Logouts of an IdP session, remembered so that a login of that session still under way makes no session. */
  endedIdpSessions: EndedIdpSessions;
  clientId: string;
  log: Logger;
  now: () => number;
}

export function backchannelLogout(deps: BackchannelDeps): [RequestHandler, RequestHandler, ErrorRequestHandler] {
  const parse = express.urlencoded({ extended: false, limit: '64kb', type: 'application/x-www-form-urlencoded' });
  const handle: RequestHandler = async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const token = (req.body as Record<string, unknown> | undefined)?.logout_token;
    if (typeof token !== 'string' || token === '') {
      deps.log.warn(
        { event: 'backchannel_logout_refused', reason: 'missing, repeated or not form-encoded logout_token' },
        'back-channel logout refused',
      );
      return sendError(res, 400, 'invalid_request');
    }
    let jtiKey: string | undefined;
    try {
      const verification = await deps.idp.logoutTokenVerification();
      const result = await validateLogoutToken(token, {
        ...verification,
        clientId: deps.clientId,
        nowSeconds: Math.floor(deps.now() / 1000),
      });
      if (!result.ok) {
        deps.log.warn({ event: 'backchannel_logout_refused', reason: result.reason }, 'back-channel logout refused');
        return sendError(res, 400, 'invalid_request');
      }
      const { iss, sub, sid, iat, exp, jti } = result.claims;
      const ttlS = Math.max(1, exp - Math.floor(deps.now() / 1000)) + JTI_MARGIN_S;
      const key = deps.keyring.forRandom('j', `${iss}|${jti}`).key;
      if (!(await deps.kv.setIfAbsent(key, '1', ttlS * 1000))) {
        deps.log.warn({ event: 'backchannel_logout_refused', reason: 'jti replayed' }, 'back-channel logout refused');
        return sendError(res, 400, 'invalid_request');
      }
      jtiKey = key;
      // Before the sessions are ended: a callback of this IdP session that lists nothing yet must see it.
      if (sid) await deps.endedIdpSessions.remember(iss, sid, iat);
      const listed = sid
        ? (await deps.index.list('sid', iss, sid)).filter((e) => sub === undefined || e.sub === sub)
        : await deps.index.list('sub', iss, sub!);
      const issuedAt = iat * 1000 + SKEW_MS;
      // A session of the ended IdP session that authenticated before the logout is ended, even one made after
      // the token was issued (an IdP that delivers late); any other is judged by when it was made here.
      const predates = (e: IndexEntry) => (sid !== undefined && e.authAt !== undefined ? e.authAt <= iat : e.createdAt <= issuedAt);
      const { count: ended } = await deps.terminator.end(
        listed.filter(predates),
        'backchannel',
        { revoke: false }, // the IdP ended the session: it knows (BCL §2.7 leaves the tokens to it)
      );
      deps.log.info({ event: 'backchannel_logout', by: sid ? 'sid' : 'sub', ended }, 'back-channel logout');
      res.status(200).end();
    } catch (err) {
      deps.log.error({ err, event: 'backchannel_logout_failed' }, 'back-channel logout failed');
      // The logout did not happen: forget the jti, so the IdP's retry of the same token is not a "replay".
      if (jtiKey) await deps.kv.del(jtiKey).catch(() => undefined);
      sendError(res, 400, 'invalid_request');
    }
  };
  // A body that cannot be read is refused like an invalid token, 400 invalid_request (a body too large stays 413).
  const parseErrors: ErrorRequestHandler = (err: unknown, _req, res, _next) => {
    res.set('Cache-Control', 'no-store');
    if ((err as { type?: unknown }).type === 'entity.too.large') return sendError(res, 413, 'payload_too_large');
    sendError(res, 400, 'invalid_request');
  };
  return [parse, handle, parseErrors];
}
