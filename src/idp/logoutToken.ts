/**
 * OIDC Back-Channel Logout 1.0 (+ errata 1) §2.4 / §2.6: validates a `logout_token`.
 * openid-client v6 has no logout-token validator, so this uses `jose` directly.
 * Every failure is a value `{ ok: false, reason }` (not an exception), the reason short and fit for the log;
 * the caller answers 400 whatever the reason (§2.8). Replay (the `jti` cache, §2.6 step 8) and the
 * session lookups are the caller's job: this checks only what the token itself proves.
 */
import { decodeProtectedHeader, errors, jwtVerify } from 'jose';
import type { JWTVerifyGetKey, JWTVerifyOptions, JWTVerifyResult, ProtectedHeaderParameters } from 'jose';

export interface LogoutTokenContext {
  /** Exact expected `iss`. */
  issuer: string;
  /** Must be in `aud`; no other audience is accepted (§2.6 step 4). */
  clientId: string;
  /** The IdP's JWKS only (createRemoteJWKSet(jwks_uri)); never keys from `jku`/`x5u`/`jwk` headers (§2.6 step 2). */
  keys: JWTVerifyGetKey;
  /** Allow-list (the IdP's id_token_signing_alg_values_supported, default ['RS256'], applied by the caller). `none` and HS* never pass. */
  algorithms: string[];
  nowSeconds: number;
  /** Our own rule (§2.6 step 4 leaves the bound to us): refuse `iat` older than this (plus the clock tolerance). Default 300. */
  maxAgeSeconds?: number;
  /** Default 30. */
  clockToleranceSeconds?: number;
}

export interface LogoutClaims {
  iss: string;
  sub?: string;
  sid?: string;
  iat: number;
  exp: number;
  jti: string;
}

export type LogoutTokenResult = { ok: true; claims: LogoutClaims } | { ok: false; reason: string };

const MAX_TOKEN_CHARS = 16 * 1024;
const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
// BCL §2.4 / §4.1 explicit typing: `logout+jwt`, or absent/`JWT` for compatibility; `application/` may prefix it (RFC 7515 §4.1.9).
const ACCEPTED_TYP = new Set(['jwt', 'logout+jwt']);

const refuse = (reason: string): LogoutTokenResult => ({ ok: false, reason });

export async function validateLogoutToken(token: unknown, ctx: LogoutTokenContext): Promise<LogoutTokenResult> {
  try {
    return await validate(token, ctx);
  } catch (err) {
    return refuse(classify(err));
  }
}

async function validate(token: unknown, ctx: LogoutTokenContext): Promise<LogoutTokenResult> {
  if (typeof token !== 'string' || token === '') return refuse('missing token');
  if (token.length > MAX_TOKEN_CHARS) return refuse('token too large');
  const segments = token.split('.').length;
  // §2.6 step 1: Gatehouse registers no ID-token encryption, so a JWE is nothing it could decrypt.
  if (segments === 5) return refuse('encrypted logout tokens are not supported');
  if (segments !== 3) return refuse('malformed token');

  const header = protectedHeader(token);
  if (!header) return refuse('malformed token');
  // §2.6 step 3: `none` MUST NOT pass, and HS* would mean a token MACed with our client secret, which the IdP never signs logout tokens with.
  const algorithms = ctx.algorithms.filter((alg) => alg !== 'none' && !alg.toUpperCase().startsWith('HS'));
  if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) return refuse('alg not allowed');
  if (header.typ !== undefined && !acceptedTyp(header.typ)) return refuse('typ not accepted');

  const options: JWTVerifyOptions = {
    issuer: ctx.issuer,
    audience: ctx.clientId,
    algorithms,
    currentDate: new Date(ctx.nowSeconds * 1000),
    clockTolerance: ctx.clockToleranceSeconds ?? 30,
    maxTokenAge: ctx.maxAgeSeconds ?? 300, // also makes `iat` required and refuses it in the future (§2.6 step 4)
    requiredClaims: ['exp'], // REQUIRED since errata 1 (BCL §2.4)
  };
  const { payload } = await verify(token, ctx.keys, options);

  // §2.6 step 4 / OIDC Core §3.1.3.7 step 3: we trust no audience but ours.
  const aud = payload.aud;
  if (Array.isArray(aud) && aud.some((a) => a !== ctx.clientId)) return refuse('untrusted extra audience');
  // JSON.parse turns 1e400 into Infinity, which jose's exp check lets through; the jti cache (§2.6 step 8) keeps it until exp.
  if (!Number.isFinite(payload.exp) || !Number.isFinite(payload.iat)) return refuse('iat or exp not finite');

  // §2.6 step 5 (§2.4): at least one of sub and sid, each a string when present.
  const { sub, sid } = payload as { sub?: unknown; sid?: unknown };
  if (sub !== undefined && !nonEmptyString(sub)) return refuse('sub invalid');
  if (sid !== undefined && !nonEmptyString(sid)) return refuse('sid invalid');
  if (sub === undefined && sid === undefined) return refuse('neither sub nor sid');

  // §2.6 step 6 (§2.4): the event member's value MUST be a JSON object (SHOULD be {}).
  const events = (payload as { events?: unknown }).events;
  if (!isJsonObject(events)) return refuse('events missing or not an object');
  if (!isJsonObject(events[BACKCHANNEL_LOGOUT_EVENT])) return refuse('back-channel logout event missing or not an object');

  // §2.6 step 7 (§2.4: PROHIBITED): stops an ID token being replayed as a logout token.
  if (Object.hasOwn(payload, 'nonce')) return refuse('nonce present');

  // §2.6 step 8: REQUIRED (§2.4); the caller refuses a jti it has seen.
  if (!nonEmptyString(payload.jti)) return refuse('jti missing');

  const claims: LogoutClaims = { iss: ctx.issuer, iat: payload.iat!, exp: payload.exp!, jti: payload.jti };
  if (sub !== undefined) claims.sub = sub;
  if (sid !== undefined) claims.sid = sid;
  return { ok: true, claims };
}

/**
 * jose 6 leaves several candidate keys (a token without `kid`, a JWKS mid-rotation) to the caller as an async
 * iterable error: try each. Every candidate still comes from ctx.keys, so no header can bring its own key.
 */
async function verify(token: string, keys: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    return await jwtVerify(token, keys, options);
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    for await (const key of err) {
      try {
        return await jwtVerify(token, key, options);
      } catch (inner) {
        if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}

/** By jose's error class and the claim it names, never by message text. */
function classify(err: unknown): string {
  if (err instanceof errors.JWTExpired) return err.claim === 'iat' ? 'iat too old' : 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return `${err.claim} missing`;
    if (err.reason === 'invalid') return `${err.claim} invalid`;
    if (err.claim === 'iss') return 'iss mismatch';
    if (err.claim === 'aud') return 'aud mismatch';
    if (err.claim === 'iat') return 'iat in the future';
    if (err.claim === 'nbf') return 'not yet valid';
    return 'invalid';
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return 'alg not allowed';
  // an unrecognised `crit` extension (RFC 7515 §4.1.11), or an allow-listed alg jose cannot verify
  if (err instanceof errors.JOSENotSupported) return 'not supported';
  if (err instanceof errors.JWKSNoMatchingKey) return 'unknown kid';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof errors.JWKSTimeout) return 'jwks timeout';
  if (err instanceof errors.JWKSInvalid || err instanceof errors.JWKInvalid) return 'jwks invalid';
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'malformed token';
  return 'invalid';
}

/** jose signals an unparsable header with a plain TypeError, the only error of that kind here. */
function protectedHeader(token: string): ProtectedHeaderParameters | undefined {
  try {
    return decodeProtectedHeader(token);
  } catch {
    return undefined;
  }
}

function acceptedTyp(typ: unknown): boolean {
  if (typeof typ !== 'string') return false;
  const lower = typ.toLowerCase();
  return ACCEPTED_TYP.has(lower.startsWith('application/') ? lower.slice('application/'.length) : lower);
}

function nonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
