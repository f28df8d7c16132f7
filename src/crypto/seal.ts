/**
 * The only crypto in Gatehouse: sealing records at rest and deriving per-session keys.
 *
 * Sealed format: "v1." + base64url(iv[12] | tag[16] | ciphertext). AES-256-GCM with the record's
 * Redis key as additional authenticated data, so a sealed value moved under another key fails to open.
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';

const VERSION = 'v1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * A 32-byte key, derived once and never leaving the process. A KeyObject, not a Buffer: Node checks a raw
 * key's type on every HMAC or cipher call at a cost several times the operation itself (measured with `npm run bench`).
 */
export type Key = KeyObject;

/** HKDF-SHA-256 (RFC 5869) from a configured secret to a purpose-bound key. */
export function deriveKey(secret: string | Buffer, purpose: string): Key {
  return createSecretKey(Buffer.from(hkdfSync('sha256', secret, 'gatehouse/v1', purpose, 32)));
}

/** A key from its 32 raw bytes (a per-record key carried in a sealed index entry). */
export function keyFromBytes(bytes: Buffer): Key {
  return createSecretKey(bytes);
}

/** HMAC-SHA-256 as a keyed hash and as a cheap per-record KDF (the input is a 256-bit random id). */
export function keyedHash(key: Key, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** A per-record key: HMAC-SHA-256(key, data) as a key. */
export function deriveRecordKey(key: Key, data: string): Key {
  return createSecretKey(keyedHash(key, data));
}

export function seal(key: Key, plaintext: string, aad: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return VERSION + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

/** Opens a sealed value; undefined when it was not sealed with this key and aad (tampered, moved, or foreign). */
export function open(key: Key, sealed: string, aad: string): string | undefined {
  if (!sealed.startsWith(VERSION)) return undefined;
  const raw = Buffer.from(sealed.slice(VERSION.length), 'base64url');
  if (raw.length < IV_BYTES + TAG_BYTES) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/** 256 bits from the CSPRNG, base64url (43 characters): session ids, login bindings, lock owners. */
export function randomId(): string {
  return randomBytes(32).toString('base64url');
}
