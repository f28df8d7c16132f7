/**
 * /auth/session exposes the user's identity claims, never protocol claims or tokens.
 */
const PROTOCOL_CLAIMS = new Set([
  'iss',
  'aud',
  'exp',
  'iat',
  'nbf',
  'jti',
  'nonce',
  'at_hash',
  'c_hash',
  's_hash',
  'azp',
  'sid',
  'auth_time',
  'acr',
  'amr',
  'cnf',
  'sub_jwk',
  'typ',
]);

export function identityClaims(claims: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(claims)) if (!PROTOCOL_CLAIMS.has(k) && !/token/i.test(k)) out[k] = v;
  return out;
}
