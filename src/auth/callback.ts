/**
 * GET /auth/callback: the authorization response (RFC 6749 §4.1.2, OIDC Core §3.1.2.5). Every failure is the
 * same 400 login_failed with no session; the reason goes to the log only: nothing from the IdP's error
 * response is reflected to the browser (anyone can craft one).
 *
 * In order: the login transaction is taken (takeTransaction), a silent login the IdP declined goes back to
 * the page (declineSilently), the code is redeemed (redeemCode), and the session is made (startSession).
 */
import type { Request, RequestHandler, Response } from 'express';
import { clearTxCookie, cookieValues, txCookieName } from '../http/cookies';
import { GatewayError, sendError } from '../http/errors';
import { StoreUnavailableError } from '../store/kv';
import type { Logger } from '../log/logger';
import type { SessionKeys } from '../session/keyring';
import { retire, sessionKeys, type Lifecycle } from '../session/lifecycle';
import type { GatehouseSession } from '../session/sessionData';
import { tokensFrom, type TokenTiming } from '../tokens/vault';
import { TOKEN_GRACE_MS } from '../session/expiryLedger';
import { identityClaims } from '../idp/claims';
import { classifyRefreshError } from '../idp/classify';
import type { Idp, TokenSet } from '../idp/idp';
import type { LoginTransactions, LoginTx } from './loginTx';
import type { EndedIdpSessions } from '../session/endedIdpSessions';
import { newDpopKey } from '../tokens/dpop';

export interface CallbackDeps {
  idp: Idp;
  transactions: LoginTransactions;
  endedIdpSessions: EndedIdpSessions;
  /** The session rules and storage: keyring, vault, index, ledger, cookie policy and clock. */
  lifecycle: Lifecycle;
  log: Logger;
  publicOrigin: string;
  timing: TokenTiming;
  absoluteMs: number;
  /** RFC 9449: each session gets its own DPoP key pair, made here. */
  dpop: boolean;
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
      const { params, state, tx } = await takeTransaction(req, res, deps);
      const error = params.get('error');
      if (tx.silent && error !== null && NEEDS_THE_USER.has(error)) return declineSilently(res, params, tx, deps);
      if (error === 'invalid_target') deps.idp.refusedResources(); // a configuration problem: say which routes
      const login = await redeemCode(req, state, tx, deps);
      const keys = await startSession(req, login, deps);
      deps.lifecycle.metrics.sessionCreated();
      deps.log.info({ session: keys.hash, sub: deps.lifecycle.keyring.fingerprint(login.sub) }, 'login');
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

/** The login transaction this callback ends, taken (used up) and checked against this browser. */
async function takeTransaction(
  req: Request,
  res: Response,
  deps: CallbackDeps,
): Promise<{ params: URLSearchParams; state: string; tx: LoginTx }> {
  const { cookies } = deps.lifecycle;
  const params = new URLSearchParams(req.originalUrl.slice(req.originalUrl.indexOf('?') + 1 || req.originalUrl.length));
  // RFC 6749 §3.1: parameters MUST NOT be included more than once.
  for (const name of ['state', 'code', 'iss', 'error']) if (params.getAll(name).length > 1) fail(`duplicate ${name}`);
  const state = params.get('state');
  if (!state || state.length > 512) return fail('missing state');
  // The cookie of this transaction (named after its state), never another login's.
  const txCookie = txCookieName(cookies, state);
  const bindings = cookieValues(req, txCookie);
  if (bindings.length !== 1) fail('missing login transaction cookie');
  // The transaction is consumed now, whatever happens next: a state works once.
  const taken = await deps.transactions.take(state, bindings[0]!);
  clearTxCookie(res, cookies, txCookie); // used up with its transaction
  if (!taken) return fail('unknown, used or expired state');
  // The state must belong to this browser's transaction (RFC 6749 §10.12: no login CSRF).
  if (!taken.bound) fail('state bound to another browser');
  if (cookies.secure && !req.secure) {
    fail('request arrived over http while GATEHOUSE_PUBLIC_URL is https; set GATEHOUSE_TRUST_PROXY to the TLS proxy hop count');
  }
  return { params, state, tx: taken.tx };
}

/**
 * A silent login the IdP could not finish without the user (OIDC Core §3.1.2.6): no session, and back to
 * the page with login=none, so the SPA offers a login button instead of trying again in a loop.
 */
function declineSilently(res: Response, params: URLSearchParams, tx: LoginTx, deps: CallbackDeps): void {
  const iss = params.get('iss');
  if (iss !== null && iss !== deps.idp.issuerId()) fail('an error response from another issuer'); // RFC 9207
  const back = new URL(tx.returnTo, deps.publicOrigin);
  back.searchParams.set('login', 'none');
  res.set('Referrer-Policy', 'no-referrer');
  res.redirect(302, back.pathname + back.search + back.hash);
}

/** What the code brought: the IdP's tokens and who they are for. */
interface Login {
  tokens: TokenSet;
  /** The ID token's claims. */
  claims: Record<string, unknown>;
  sub: string;
  /** The ID token's `auth_time` (unix seconds, the IdP's clock), if it has one. */
  authenticatedAt: number | undefined;
  userinfo: Record<string, unknown>;
  /** When the code was sent: the tokens' lifetimes count from here. */
  sentAt: number;
  /** The session's DPoP key pair (RFC 9449), when DPoP is on. */
  dpop: Awaited<ReturnType<typeof newDpopKey>> | undefined;
}

/** The code exchange and the ID token's checks (idp.ts), then userinfo. */
async function redeemCode(req: Request, state: string, tx: LoginTx, deps: CallbackDeps): Promise<Login> {
  // openid-client derives redirect_uri from this URL: built from the configured origin, never the Host header.
  const callbackUrl = new URL(req.originalUrl, deps.publicOrigin);
  // RFC 6749 §5.1: expiry counts from the response; the time the request was sent is never later.
  const sentAt = deps.lifecycle.now();
  // RFC 9449: the session's key pair, proven at the code exchange; its private key goes into the sealed record.
  const dpop = deps.dpop ? await newDpopKey() : undefined;
  let tokens: TokenSet;
  try {
    tokens = await deps.idp.codeGrant(callbackUrl, { state, nonce: tx.nonce, codeVerifier: tx.codeVerifier }, dpop?.key);
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
  return { tokens, claims, sub, authenticatedAt, userinfo, sentAt, dpop };
}

/**
 * A new session id at every login (session fixation). The session this browser had ends for good, once
 * the new one is indexed: its refresh token is revoked only if no other session of the user is left, and
 * the new one may share its grant (the IdP's SSO session issued both). Returns the new session's keys.
 */
async function startSession(req: Request, login: Login, deps: CallbackDeps): Promise<SessionKeys> {
  const { lifecycle } = deps;
  const previous = req.session.gatehouse ? { keys: sessionKeys(req, lifecycle), session: req.session.gatehouse } : undefined;
  await regenerate(req);
  const now = lifecycle.now();
  const { claims, sub, authenticatedAt } = login;
  const session: GatehouseSession = {
    iss: claims.iss as string,
    sub,
    ...(typeof claims.sid === 'string' && { sid: claims.sid }),
    user: identityClaims({ ...login.userinfo, ...claims, sub }),
    createdAt: now,
    absoluteExpiresAt: now + deps.absoluteMs,
    activeAt: now,
    ...(authenticatedAt !== undefined && { authAt: authenticatedAt }),
  };
  const keys = lifecycle.keyring.forSession(req.sessionID);
  const ttl = Math.min(session.absoluteExpiresAt, session.activeAt + lifecycle.idleMs) - now;
  const retirePrevious = async () => {
    if (!previous) return;
    await retire(lifecycle, previous.keys, previous.session, { keepTokenRecord: false, revoke: true }).catch((err: unknown) =>
      deps.log.warn(
        { err, session: previous.keys.hash },
        'could not clean up the session this login replaced; its records expire by themselves',
      ),
    );
  };
  try {
    // Indexed before its tokens are stored: a revocation deciding meanwhile whether the user has another
    // session (one that may share the grant) must see this one.
    await lifecycle.index.add(keys, session);
    const record = { ...tokensFrom(login.tokens, login.sentAt, deps.timing), ...(login.dpop && { dpopKey: login.dpop.jwk }) };
    if (!(await lifecycle.vault.write(keys, 0, record, ttl + TOKEN_GRACE_MS))) fail('session id collision');
    req.session.gatehouse = session;
    await lifecycle.ledger.add(keys, session, now + ttl);
    await save(req);
    // A back-channel logout of this IdP session that arrived while the session was being made found
    // nothing to end; from here on it is indexed, so look once more.
    if (session.sid && (await deps.endedIdpSessions.predatesLogout(session.iss, session.sid, session.authAt)))
      fail('the IdP session ended by a back-channel logout while this login was under way');
  } catch (err) {
    // No half-made session: a regenerated id would otherwise still be sent as a cookie, naming nothing.
    // Each record is removed on its own, so one that cannot be leaves the others gone.
    await new Promise<void>((resolve) => (req.session ? req.session.destroy(() => resolve()) : resolve()));
    await lifecycle.vault.remove(keys).catch(() => undefined);
    await lifecycle.index.remove(keys, session).catch(() => undefined);
    await lifecycle.ledger.remove(keys).catch(() => undefined);
    await retirePrevious();
    throw err;
  }
  await retirePrevious();
  return keys;
}
