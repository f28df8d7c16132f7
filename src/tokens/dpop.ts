/**
 * DPoP (RFC 9449): access tokens bound to a key pair, so a token that leaks (from an upstream's logs, a
 * proxy) is useless without the private key. Each session has its own ES256 key pair, made at login; the
 * private key lives only inside the session's sealed token record and in this process's memory, never in
 * clear in Redis and never outside the server. Every request that carries the token carries a fresh proof
 * (a JWT signed with the key) naming the request's method and URL and the token's hash.
 *
 * Keys are imported once per process (a WebCrypto CryptoKey), not per request: a proof costs one signature.
 */
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, importJWK, type JWK } from 'jose';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** The key pair as stored (inside the sealed token record): a private JWK, which holds the public part too. */
export type DpopJwk = JWK & { d: string };

export interface DpopKey {
  readonly pair: CryptoKeyPair;
  /** The public key as proofs carry it (RFC 9449 §4.2 `jwk` header). */
  readonly publicJwk: JWK;
  /** Its RFC 7638 thumbprint: what a bound token's `cnf.jkt` names. */
  readonly thumbprint: string;
}

const ALG = 'ES256';

/** A new key pair for one session (or for the gateway's own tokens). */
export async function newDpopKey(): Promise<{ jwk: DpopJwk; key: DpopKey }> {
  const pair = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const jwk = (await exportJWK(pair.privateKey)) as DpopJwk;
  return { jwk, key: await toKey(jwk, pair) };
}

/** Imported keys by thumbprint, the oldest going first past this many. */
const REMEMBERED = 10_000;
const imported = new Map<string, Promise<DpopKey>>();

/** The usable key of a stored JWK, imported once per process. */
export function dpopKey(jwk: DpopJwk): Promise<DpopKey> {
  const id = `${jwk.x}.${jwk.y}`;
  let key = imported.get(id);
  if (!key) {
    key = (async () => {
      const privateKey = (await importJWK(jwk, ALG, { extractable: false })) as CryptoKey;
      const { d: _private, ...pub } = jwk;
      const publicKey = (await importJWK({ ...pub, key_ops: undefined, ext: undefined }, ALG)) as CryptoKey;
      return toKey(jwk, { privateKey, publicKey });
    })();
    if (imported.size >= REMEMBERED) imported.delete(imported.keys().next().value!);
    imported.set(id, key);
    key.catch(() => imported.delete(id));
  }
  return key;
}

async function toKey(jwk: DpopJwk, pair: CryptoKeyPair): Promise<DpopKey> {
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
  return { pair, publicJwk, thumbprint: await calculateJwkThumbprint(publicJwk) };
}

/**
 * A proof for one request (RFC 9449 §4.2): `htm` and `htu` (the target URI without query and fragment),
 * `ath` the hash of the access token it accompanies, `nonce` when the server asked for one.
 */
export function dpopProof(key: DpopKey, p: { method: string; url: string; accessToken?: string; nonce?: string }): Promise<string> {
  const htu = p.url.replace(/[?#].*$/s, '');
  return new SignJWT({
    jti: randomBytes(16).toString('base64url'),
    htm: p.method,
    htu,
    ...(p.accessToken !== undefined && { ath: createHash('sha256').update(p.accessToken).digest('base64url') }),
    ...(p.nonce !== undefined && { nonce: p.nonce }),
  })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: ALG, jwk: key.publicJwk })
    .setIssuedAt()
    .sign(key.pair.privateKey);
}

/** An access token as sent upstream: with `dpop`, bound to that key (RFC 9449), else a Bearer token. */
export interface UpstreamToken {
  accessToken: string;
  dpop?: DpopKey;
}

/** The Authorization value for a token: `DPoP <token>` for a bound one (RFC 9449 §7.1), else `Bearer <token>`. */
export function authorization(t: UpstreamToken): string {
  return `${t.dpop ? 'DPoP' : 'Bearer'} ${t.accessToken}`;
}

/** The token to send upstream for a token result: a bound one with its key, imported once per process. */
export async function upstreamToken(accessToken: string, jwk: DpopJwk | undefined): Promise<UpstreamToken> {
  return jwk ? { accessToken, dpop: await dpopKey(jwk) } : { accessToken };
}
