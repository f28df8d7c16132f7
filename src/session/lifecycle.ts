/**
 * Session rules applied on every authenticated request: a session exists, is within its idle and
 * absolute lifetimes (OWASP session management: enforced server-side), and ends cleanly.
 */
import type { HttpRequest, HttpResponse } from '../http/exchange';
import type { Keyring, SessionKeys } from './keyring';
import type { SealedSessionStore } from './sealedStore';
import type { GatehouseSession } from './sessionData';
import type { Tokens, Vault } from '../tokens/vault';
import type { SessionIndex } from './sessionIndex';
import type { ExpiryLedger } from './expiryLedger';
import type { Metrics } from '../health/metrics';
import { clearSessionCookie, type CookiePolicy } from '../http/cookies';
import { sendError, type ErrorCode } from '../http/errors';
import { StoreUnavailableError } from '../store/kv';
import type { RevokeLater } from '../idp/revoker';

export interface Lifecycle {
  readonly keyring: Keyring;
  readonly store: SealedSessionStore;
  readonly vault: Vault;
  readonly index: SessionIndex;
  readonly ledger: ExpiryLedger;
  readonly metrics: Metrics;
  /** RFC 7009 revocation in the background (never blocks the request), unless the grant may be shared. */
  readonly revokeLater: RevokeLater;
  readonly cookies: CookiePolicy;
  readonly idleMs: number;
  readonly now: () => number;
}

/** The storage keys of this request's session, under the secret it was found with. */
export function sessionKeys(req: HttpRequest, lifecycle: Lifecycle): SessionKeys {
  return lifecycle.keyring.forSession(req.sessionID, req.session?.gatehouse?.secretIndex);
}

/** The live session of this request, or undefined (expired ones are ended on the way). */
export async function liveSession(req: HttpRequest, lifecycle: Lifecycle): Promise<GatehouseSession | undefined> {
  const session = req.session?.gatehouse;
  if (!session) return undefined;
  const now = lifecycle.now();
  if (now >= session.absoluteExpiresAt || now >= session.activeAt + lifecycle.idleMs) {
    // The IdP does not know the session timed out here: revoke its refresh token (RFC 7009).
    await endSession(req, lifecycle, { keepTokenRecord: false, revoke: true });
    lifecycle.metrics.sessionEnded(now >= session.absoluteExpiresAt ? 'absolute' : 'idle');
    return undefined;
  }
  return session;
}

/**
 * The idle window slides in steps of a tenth of its length: at most one Redis write per step, never one
 * per request.
 */
export async function slideIdle(req: HttpRequest, lifecycle: Lifecycle, session: GatehouseSession): Promise<GatehouseSession> {
  const now = lifecycle.now();
  if (now - session.activeAt < lifecycle.idleMs / 10) return session;
  const slid = { ...session, activeAt: now };
  if (await lifecycle.store.slide(req.sessionID, { cookie: req.session.cookie, gatehouse: slid })) {
    await lifecycle.ledger.move(sessionKeys(req, lifecycle), Math.min(slid.absoluteExpiresAt, slid.activeAt + lifecycle.idleMs));
  }
  return slid;
}

/**
 * Ends the request's session: token record, index entries and session deleted (never just the cookie, which a copy of it would outlive);
 * with `revoke`, the refresh token is revoked at the IdP in the background and the tokens are returned.
 * After invalid_grant the token record is left as the short-lived "dead" marker, so requests waiting
 * on other replicas learn the outcome.
 */
export async function endSession(
  req: HttpRequest,
  lifecycle: Lifecycle,
  opts: { keepTokenRecord: boolean; revoke?: boolean },
): Promise<Tokens | undefined> {
  const tokens = await retireSession(req, lifecycle, opts);
  await new Promise<void>((resolve, reject) =>
    req.session.destroy((err: unknown) => (err ? reject(err instanceof Error ? err : new StoreUnavailableError(err)) : resolve())),
  );
  return tokens;
}

/**
 * Everything endSession does but destroying the express-session: token record taken (GETDEL) and its
 * refresh token revoked when asked (and not possibly shared: idp/revoker.ts), index and expiry-ledger
 * entries removed.
 */
export async function retireSession(
  req: HttpRequest,
  lifecycle: Lifecycle,
  opts: { keepTokenRecord: boolean; revoke?: boolean },
): Promise<Tokens | undefined> {
  return retire(lifecycle, sessionKeys(req, lifecycle), req.session.gatehouse, opts);
}

/** retireSession for a session named by its keys (a login retires the one its browser had after regenerating). */
export async function retire(
  lifecycle: Lifecycle,
  keys: SessionKeys,
  session: GatehouseSession | undefined,
  opts: { keepTokenRecord: boolean; revoke?: boolean },
): Promise<Tokens | undefined> {
  const entry = opts.revoke && !opts.keepTokenRecord ? await lifecycle.vault.take(keys) : null;
  const tokens = entry && !entry.dead ? entry.tokens : undefined;
  if (!opts.keepTokenRecord) await lifecycle.vault.remove(keys);
  if (session) await lifecycle.index.remove(keys, session);
  await lifecycle.ledger.remove(keys);
  if (tokens?.refreshToken && session)
    void lifecycle.revokeLater(tokens.refreshToken, { iss: session.iss, sub: session.sub, session: keys.hash });
  return tokens;
}

/**
 * Every kind of missing session gets the same 401 body (it tells a guessed id from an expired one to no one);
 * a cookie that named no live session is cleared (with the attributes it was set with, or browsers keep it).
 */
export function rejectSession(res: HttpResponse, lifecycle: Lifecycle, code: ErrorCode & ('unauthenticated' | 'session_expired')): void {
  if (res.locals.cookie?.sent || code === 'session_expired') clearSessionCookie(res, lifecycle.cookies);
  res.setHeader('Cache-Control', 'no-store');
  sendError(res, 401, code);
}
