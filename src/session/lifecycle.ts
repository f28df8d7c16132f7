/**
 * Session rules applied on every authenticated request: a session exists, is within its idle and
 * absolute lifetimes (OWASP session management: enforced server-side), and ends cleanly.
 */
import type { HttpRequest, HttpResponse } from '../http/exchange';
import type { Keyring, SessionKeys } from './keyring';
import type { SealedSessionStore } from './sealedStore';
import type { GatehouseSession } from './sessionData';
import type { Tokens, Vault, VaultEntry } from '../tokens/vault';
import type { SessionIndex } from './sessionIndex';
import type { ExpiryLedger } from './expiryLedger';
import type { Metrics } from '../health/metrics';
import { clearSessionCookie, type CookiePolicy } from '../http/cookies';
import { sendError, type ErrorCode } from '../http/errors';
import { StoreUnavailableError } from '../store/kv';
import type { RevocationOutcome, RevokeLater } from '../idp/revoker';

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

/** Whose session it is: what its index entries and a revocation need (a GatehouseSession or an index entry). */
export type SessionHolder = Pick<GatehouseSession, 'iss' | 'sub' | 'sid'>;

export interface EndOptions {
  /**
   * Leave the token record: after invalid_grant it stays as the short-lived "dead" marker, so requests
   * waiting on other replicas learn the outcome.
   */
  keepTokenRecord: boolean;
  /** Take the token record and revoke its refresh token at the IdP (RFC 7009), in the background. */
  revoke?: boolean;
  /** Storage hashes of the sessions ending together with this one: none of them keeps its grant in use. */
  endingTogether?: ReadonlySet<string>;
}

export interface Retired {
  /** The token record as taken (with `revoke`), or null. */
  taken: VaultEntry | null;
  /** The tokens it held, unless the grant was already dead. */
  tokens?: Tokens;
  /** The revocation started (it runs in the background and never rejects; await it to learn its outcome). */
  revocation?: Promise<RevocationOutcome>;
}

/**
 * Ends the request's session: its records go (never just the cookie, which a copy of it would outlive),
 * then express-session's session. Returns the tokens when `revoke` took them.
 */
export async function endSession(req: HttpRequest, lifecycle: Lifecycle, opts: EndOptions): Promise<Tokens | undefined> {
  const { tokens } = await retire(lifecycle, sessionKeys(req, lifecycle), req.session.gatehouse, opts);
  await new Promise<void>((resolve, reject) =>
    req.session.destroy((err: unknown) => (err ? reject(err instanceof Error ? err : new StoreUnavailableError(err)) : resolve())),
  );
  return tokens;
}

/**
 * Everything that ends a session but deleting its own record, which the caller does: express-session for
 * a request (endSession), the store for the others (Terminator, the WebSocket lane), or a login that
 * replaced it. Every way a session ends comes here. The token record is taken (GETDEL) when its refresh
 * token is to be revoked, and deleted unless kept; the index and expiry-ledger entries are removed; the
 * revocation runs in the background, and is skipped when another session of the user may share the grant
 * (idp/revoker.ts).
 */
export async function retire(
  lifecycle: Lifecycle,
  keys: SessionKeys,
  holder: SessionHolder | undefined,
  opts: EndOptions,
): Promise<Retired> {
  const taken = opts.revoke && !opts.keepTokenRecord ? await lifecycle.vault.take(keys) : null;
  const tokens = taken && !taken.dead ? taken.tokens : undefined;
  if (!opts.keepTokenRecord) await lifecycle.vault.remove(keys);
  if (holder) await lifecycle.index.remove(keys, holder);
  await lifecycle.ledger.remove(keys);
  const revocation =
    tokens?.refreshToken && holder
      ? lifecycle.revokeLater(tokens.refreshToken, { iss: holder.iss, sub: holder.sub, session: keys.hash }, opts.endingTogether)
      : undefined;
  return { taken, tokens, revocation };
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
