/**
 * The refresh service's decisions, as pure functions of what it read (a token record, the clock, the IdP's
 * answer): when a call refreshes, when a record read while waiting already holds the answer, and what a
 * failed refresh means for the session. refresh.ts does the I/O around them (the lock, Redis, the IdP).
 */
import type { RefreshFailure } from '../idp/classify';
import { usable, type AccessToken } from './vault';

/** What a call does with the access token it found. */
export type Plan =
  /** Before its refresh point: sent as it is. */
  | 'send'
  /** Past its refresh point but still good to send: sent now and refreshed in the background (no call waits). */
  | 'send-and-refresh'
  /** Inside the margin of its end, or none yet: the call waits for the refresh. */
  | 'refresh';

export function plan(token: AccessToken, now: number): Plan {
  if (now < token.refreshAt) return 'send';
  return usable(token, now) ? 'send-and-refresh' : 'refresh';
}

/**
 * Whether a token read while a refresh was due settles it: another request or replica refreshed meanwhile.
 * `version` is the record's, `due` the version of the record that was found due. A token the upstream
 * refused (`rejected`) settles nothing however fresh; only another one does.
 */
export function settles(token: AccessToken, version: number, due: number, now: number, rejected?: string): boolean {
  if (rejected !== undefined) return token.accessToken !== rejected;
  if (now < token.refreshAt) return true;
  // A slow IdP can hand back a token that is already inside its skew window (expiry counts from when the grant
  // was sent). It is the freshest there is: refreshing it again would be a second grant for one expiry. The
  // margin is not applied here, as asking again would bring no fresher token.
  return version > due && now < token.expiresAt;
}

/** When no refresh can happen (the IdP failing, no refresh token): the current token, while it may be sent. */
export function fallback(token: AccessToken, now: number, rejected?: string): 'send' | 'unavailable' {
  return usable(token, now) && token.accessToken !== rejected ? 'send' : 'unavailable';
}

/** What a refused refresh grant means for the session. */
export type FailureVerdict =
  /** The grant is dead, or the answer names someone else: the session ends. */
  | 'end'
  /** invalid_grant: the session ends, unless the record shows another refresher rotated the token meanwhile. */
  | 'end-unless-rotated'
  /** The IdP's availability or our configuration: the session is kept, the current token used while it is good. */
  | 'keep';

/**
 * RFC 6749 §5.2: only `invalid_grant` proves the grant is dead. A refused resource or scope (RFC 8707 §2) for
 * an API's token ends the session too: some IdPs use up the refresh token before they refuse, and sending it
 * again would revoke the whole grant. OIDC Core §12.2: a refreshed ID token of another issuer ends it.
 */
export function afterFailure(failure: RefreshFailure, forAudience: boolean): FailureVerdict {
  if (forAudience && (failure === 'invalid_target' || failure === 'invalid_scope')) return 'end';
  if (failure === 'invalid_grant') return 'end-unless-rotated';
  if (failure === 'foreign_issuer') return 'end';
  return 'keep';
}

/** OIDC Core §12.2: a refreshed ID token must name the session's issuer and subject. */
export function namesAnotherUser(claims: Record<string, unknown> | undefined, user: { iss: string; sub: string }): boolean {
  return claims !== undefined && (claims.iss !== user.iss || claims.sub !== user.sub);
}
