/**
 * Classify token-endpoint failures by error class and protocol code,
 * never by message text. Only `invalid_grant` proves the grant is dead; everything else (invalid_client
 * during secret rotation, 5xx, 429, timeouts, network errors, non-JSON bodies) is the IdP's availability
 * or our configuration, and must never end a user's session.
 */
import * as oidc from 'openid-client';
import { RefreshResponseRejected } from './idp';

export type RefreshFailure =
  | 'invalid_grant' // RFC 6749 §5.2: the refresh token is invalid, expired, revoked or reused
  | 'invalid_client' // our client authentication failed: configuration, page an operator
  | 'foreign_issuer' // OIDC Core §12.2: the refreshed ID token names another issuer (openid-client's own iss check)
  | 'invalid_target' // RFC 8707 §2: the IdP does not know the resource asked for, or will not issue a token for it
  | 'invalid_scope' // RFC 6749 §5.2: a scope the grant does not cover
  | 'idp_error' // another OAuth error code, or a non-conforming response
  | 'timeout'
  | 'network';

export function classifyRefreshError(err: unknown): RefreshFailure {
  if (err instanceof RefreshResponseRejected) return classifyRefreshError(err.cause);
  if (err instanceof oidc.ResponseBodyError)
    return err.error === 'invalid_grant' ||
      err.error === 'invalid_client' ||
      err.error === 'invalid_target' ||
      err.error === 'invalid_scope'
      ? err.error
      : 'idp_error';
  if (err instanceof oidc.WWWAuthenticateChallengeError) return 'invalid_client';
  if (err instanceof oidc.ClientError) {
    if (err.code === 'OAUTH_TIMEOUT') return 'timeout';
    // openid-client compares a refreshed ID token's iss with the issuer before we see it; the claim it
    // failed on is named in the cause (oauth4webapi OperationProcessingError { cause: { claim } }).
    if (err.code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED' && failedClaim(err) === 'iss') return 'foreign_issuer';
    // A network failure is fetch's TypeError, which openid-client rethrows as is. A TypeError
    // from another realm (fetch is the host's in a jest/vm context, where an embedder drives Gatehouse
    // with supertest) fails openid-client's instanceof check and arrives wrapped, without a code.
    if (err.code === undefined && isError(err.cause, 'TypeError')) return 'network';
    return 'idp_error';
  }
  if (err instanceof DOMException && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timeout';
  return 'network';
}

function failedClaim(err: oidc.ClientError): unknown {
  const inner = (err.cause as { cause?: unknown } | undefined)?.cause;
  return typeof inner === 'object' && inner !== null ? (inner as { claim?: unknown }).claim : undefined;
}

/** An Error of that name, whatever realm created it (instanceof fails across realms). */
function isError(value: unknown, name: string): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { name?: unknown }).name === name &&
    typeof (value as { message?: unknown }).message === 'string'
  );
}

/**
 * RFC 7009 §2.2.1: `unsupported_token_type` (and other 4xx OAuth errors) will not change on retry, nor will
 * a client-authentication challenge (RFC 6749 §5.2 `invalid_client` answered 401 with WWW-Authenticate).
 */
export function revocationRetryable(err: unknown): boolean {
  return !(err instanceof oidc.ResponseBodyError || err instanceof oidc.WWWAuthenticateChallengeError);
}
