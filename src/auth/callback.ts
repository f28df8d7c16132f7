/**
 * GET /auth/callback: the authorization response (RFC 6749 §4.1.2, OIDC Core §3.1.2.5). Every failure is the
 * same 400 login_failed with no session; the reason goes to the log only: nothing from the IdP's error
 * response is reflected to the browser (anyone can craft one).
 */
import type { Request, RequestHandler } from 'express';
import { clearTxCookie, cookieValues, txCookieName, type CookiePolicy } from '../http/cookies';
import { GatewayError, sendError } from '../http/errors';
import { StoreUnavailableError } from '../store/kv';
import type { Logger } from '../log/logger';
import type { Keyring } from '../session/keyring';
import { retire, sessionKeys, type Lifecycle } from '../session/lifecycle';
import type { GatehouseSession } from '../session/sessionData';
import { tokensFrom, type TokenTiming, type Vault } from '../tokens/vault';
import { TOKEN_GRACE_MS } from '../session/expiryLedger';
import { identityClaims } from '../idp/claims';
import { classifyRefreshError } from '../idp/classify';
import type { Idp } from '../idp/idp';
import type { LoginTransactions } from './loginTx';
import type { EndedIdpSessions } from '../session/endedIdpSessions';
import { newDpopKey } from '../tokens/dpop';

export interface CallbackDeps {
  idp: Idp;
  tx: LoginTransactions;
  endedIdpSessions: EndedIdpSessions;
  keyring: Keyring;
  vault: Vault;
  lifecycle: Lifecycle;
  cookies: CookiePolicy;
  log: Logger;
  publicOrigin: string;
  secureCookies: boolean;
  timing: TokenTiming;
  absoluteMs: number;
  /** RFC 9449: each session gets its own DPoP key pair, made here. */
  dpop: boolean;
  now: () => number;
}

class LoginFailed extends Error {}

/** OIDC Core §3.1.2.6: the answers to `prompt=none` that mean the IdP needs the user. */
const NEEDS_THE_USER = new Set(['login_required', 'interaction_required', 'consent_required', 'account_selection_required']);

const fail = (reason: string, cause?: unknown): never => {
  throw new LoginFailed(reason, { cause });
};

/** express-session's callbacks get the store's error (a StoreUnavailableError from the sealed store: 503). */
const asError = (err: unknown): Error => (err instanceof Error ? err : new StoreUnavailableError(err));

function regenerate(req: Request): Promise<void> {
  return new Promise((resolve, reject) => req.session.regenerate((err: unknown) => (err ? reject(asError(err)) : resolve())));
}

function save(req: Request): Promise<void> {
  return new Promise((resolve, reject) => req.session.save((err: unknown) => (err ? reject(asError(err)) : resolve())));
}

export function callback(deps: CallbackDeps): RequestHandler {
  return async (req, res) => {
    try {
      const q = new URLSearchParams(req.originalUrl.slice(req.originalUrl.indexOf('?') + 1 || req.originalUrl.length));
      // RFC 6749 §3.1: parameters MUST NOT be included more than once.
      for (const name of ['state', 'code', 'iss', 'error']) if (q.getAll(name).length > 1) fail(`duplicate ${name}`);
      const state = q.get('state');
      if (!state || state.length > 512) fail('missing state');
      // The cookie of this transaction (named after its state), never another login's.
      const txCookie = txCookieName(deps.cookies, state!);
      const bindings = cookieValues(req, txCookie);
      if (bindings.length !== 1) fail('missing login transaction cookie');
      // The transaction is consumed now, whatever happens next: a state works once.
      const taken = await deps.tx.take(state!, bindings[0]!);
      clearTxCookie(res, deps.cookies, txCookie); // used up with its transaction
      if (!taken) fail('unknown, used or expired state');
      // The state must belong to this browser's transaction (RFC 6749 §10.12: no login CSRF).
      if (!taken!.bound) fail('state bound to another browser');
      const tx = taken!.tx;
      if (deps.secureCookies && !req.secure) {
        fail('request arrived over http while GATEHOUSE_PUBLIC_URL is https; set GATEHOUSE_TRUST_PROXY to the TLS proxy hop count');
      }

      // A silent login the IdP could not finish without the user (OIDC Core §3.1.2.6): no session, and back
      // to the page with login=none, so the SPA offers a login button instead of trying again in a loop.
      const error = q.get('error');
      if (tx.silent && error !== null && NEEDS_THE_USER.has(error)) {
        const iss = q.get('iss');
        if (iss !== null && iss !== deps.idp.issuerId()) fail('an error response from another issuer'); // RFC 9207
        const back = new URL(tx.returnTo, deps.publicOrigin);
        back.searchParams.set('login', 'none');
        res.set('Referrer-Policy', 'no-referrer');
        return res.redirect(302, back.pathname + back.search + back.hash);
      }

      if (error === 'invalid_target') deps.idp.refusedResources(); // a configuration problem: say which routes

      // openid-client derives redirect_uri from this URL: built from the configured origin, never the Host header.
      const callbackUrl = new URL(req.originalUrl, deps.publicOrigin);
      // RFC 6749 §5.1: expiry counts from the response; the time the request was sent is never later.
      const sentAt = deps.now();
      // RFC 9449: the session's key pair, proven at the code exchange; its private key goes into the sealed record.
      const dpop = deps.dpop ? await newDpopKey() : undefined;
      let tokens;
      try {
        tokens = await deps.idp.codeGrant(callbackUrl, { state: state!, nonce: tx.nonce, codeVerifier: tx.codeVerifier }, dpop?.key);
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        deps.lifecycle.metrics.idpError('login', classifyRefreshError(err));
        return fail('code exchange or ID token validation failed', err);
      }
      const claims = tokens.claims ?? fail('no ID token');
      const sub = claims.sub as string;
      // A code issued before a back-channel logout of its IdP session, redeemed after it, makes no session.
      const authenticatedAt = typeof claims.auth_time === 'number' ? claims.auth_time : undefined;
      if (typeof claims.sid === 'string' && (await deps.endedIdpSessions.predatesLogout(claims.iss as string, claims.sid, authenticatedAt)))
        fail('the IdP session ended by a back-channel logout while this login was under way');
      let userinfo: Record<string, unknown> = {};
      try {
        userinfo = await deps.idp.userinfo(tokens, sub, dpop?.key);
      } catch (err) {
        deps.log.warn({ err }, 'userinfo failed; the session carries the ID token claims only');
      }

      // A new session id at every login (session fixation). The session this browser had ends for good,
      // once the new one is indexed: its refresh token is revoked only if no other session of the user is
      // left, and the new one may share its grant (the IdP's SSO session issued both).
      const previous = req.session.gatehouse ? { keys: sessionKeys(req, deps.lifecycle), session: req.session.gatehouse } : undefined;
      await regenerate(req);
      const now = deps.now();
      const session: GatehouseSession = {
        iss: claims.iss as string,
        sub,
        ...(typeof claims.sid === 'string' && { sid: claims.sid }),
        user: identityClaims({ ...userinfo, ...claims, sub }),
        createdAt: now,
        absoluteExpiresAt: now + deps.absoluteMs,
        activeAt: now,
        ...(authenticatedAt !== undefined && { authAt: authenticatedAt }),
      };
      const keys = deps.keyring.forSession(req.sessionID);
      const ttl = Math.min(session.absoluteExpiresAt, session.activeAt + deps.lifecycle.idleMs) - now;
      const retirePrevious = async () => {
        if (!previous) return;
        await retire(deps.lifecycle, previous.keys, previous.session, { keepTokenRecord: false, revoke: true }).catch((err: unknown) =>
          deps.log.warn(
            { err, session: previous.keys.hash },
            'could not clean up the session this login replaced; its records expire by themselves',
          ),
        );
      };
      try {
        // Indexed before its tokens are stored: a revocation deciding meanwhile whether the user has another
        // session (one that may share the grant) must see this one.
        await deps.lifecycle.index.add(keys, session);
        const record = { ...tokensFrom(tokens, sentAt, deps.timing), ...(dpop && { dpopKey: dpop.jwk }) };
        if (!(await deps.vault.write(keys, 0, record, ttl + TOKEN_GRACE_MS))) fail('session id collision');
        req.session.gatehouse = session;
        await deps.lifecycle.ledger.add(keys, session, now + ttl);
        await save(req);
        // A back-channel logout of this IdP session that arrived while the session was being made found
        // nothing to end; from here on it is indexed, so look once more.
        if (session.sid && (await deps.endedIdpSessions.predatesLogout(session.iss, session.sid, session.authAt)))
          fail('the IdP session ended by a back-channel logout while this login was under way');
      } catch (err) {
        // No half-made session: a regenerated id would otherwise still be sent as a cookie, naming nothing.
        await new Promise<void>((resolve) => (req.session ? req.session.destroy(() => resolve()) : resolve()));
        await deps.vault.remove(keys).catch(() => undefined);
        await deps.lifecycle.index.remove(keys, session).catch(() => undefined);
        await deps.lifecycle.ledger.remove(keys).catch(() => undefined);
        await retirePrevious();
        throw err;
      }
      await retirePrevious();
      deps.lifecycle.metrics.sessionCreated();
      deps.log.info({ session: keys.hash, sub: deps.keyring.fingerprint(sub) }, 'login');
      // Leave the callback URL at once: its code and state must not leak through Referer.
      res.set('Referrer-Policy', 'no-referrer');
      res.redirect(302, tx.returnTo);
    } catch (err) {
      if (!(err instanceof LoginFailed)) throw err;
      deps.log.warn({ reason: err.message, err: err.cause }, 'login failed');
      sendError(res, 400, 'login_failed');
    }
  };
}
