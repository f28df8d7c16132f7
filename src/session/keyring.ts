/**
 * Turns a session id into everything stored about it, without Redis ever seeing the id.
 *
 * Keys are HMAC-SHA-256(session id) under a key derived from the server secret, and
 * values are sealed with a key derived from the id AND the secret: a Redis dump alone opens nothing,
 * and the id alone (a stolen cookie) does not find its record without the secret.
 *
 * Every record of one session carries the same hash tag `{h}`, so they share one Redis Cluster slot.
 * With several secrets (rotation) the first one keys new sessions; lookups fall back to older secrets, and
 * a session found under an older one carries that index with it (GatehouseSession.secretIndex).
 */
import { deriveKey, deriveRecordKey, keyedHash, open, seal, type Key } from '../crypto/seal';

export interface SessionKeys {
  /** Base64url keyed hash of the id: the only form of the id that storage sees. */
  readonly hash: string;
  readonly sessionKey: string;
  readonly tokensKey: string;
  readonly lockKey: string;
  /** Refreshes of this session in the current hour (anomaly signal). */
  readonly rateKey: string;
  readonly sealKey: Key;
}

interface SecretKeys {
  index: Key;
  seal: Key;
  /** Seals index entries, which must be opened without the session's cookie (back-channel logout, kill switch). */
  indexSeal: Key;
}

/** Sessions whose derived keys are kept (a request derives them several times; a user sends many requests). */
const CACHED_SESSIONS = 10_000;

export class Keyring {
  private readonly secrets: SecretKeys[];
  /**
   * Derived keys by sid, one slot per secret, oldest first (two HMACs saved per lookup; a request looks its
   * session up several times). The oldest entry goes first when full: a hit costs one Map read.
   */
  private readonly cache = new Map<string, Array<SessionKeys | undefined>>();

  constructor(
    secrets: readonly string[],
    private readonly prefix: string,
  ) {
    this.secrets = secrets.map((s) => ({
      index: deriveKey(s, 'storage-index'),
      seal: deriveKey(s, 'record-seal'),
      indexSeal: deriveKey(s, 'index-seal'),
    }));
  }

  get secretCount(): number {
    return this.secrets.length;
  }

  /** The keys of `sid` under secret `i` (0 = the current one). */
  forSession(sid: string, i = 0): SessionKeys {
    const slot = this.secrets[i] ? i : 0;
    let slots = this.cache.get(sid);
    const cached = slots?.[slot];
    if (cached) return cached;
    const s = this.secrets[slot]!;
    const keys = this.keysOf(keyedHash(s.index, sid).toString('base64url').slice(0, 32), deriveRecordKey(s.seal, sid));
    if (!slots) {
      if (this.cache.size >= CACHED_SESSIONS) this.cache.delete(this.cache.keys().next().value!);
      slots = [];
      this.cache.set(sid, slots);
    }
    slots[slot] = keys;
    return keys;
  }

  /** Keys for one-time records named by a random value (login transactions). */
  forRandom(kind: string, value: string, i = 0): { key: string; sealKey: Key } {
    const s = this.secrets[i] ?? this.secrets[0]!;
    return {
      key: `${this.prefix}${kind}:${keyedHash(s.index, `${kind}:${value}`).toString('base64url').slice(0, 32)}`,
      sealKey: deriveRecordKey(s.seal, `${kind}:${value}`),
    };
  }

  /** Hash of a value for comparisons and logs (never the value itself). */
  fingerprint(value: string, i = 0): string {
    return keyedHash((this.secrets[i] ?? this.secrets[0]!).index, `fp:${value}`)
      .toString('base64url')
      .slice(0, 16);
  }

  /**
   * The keys of a session known only by its storage hash and seal key (index and ledger entries): enough to
   * end it and revoke its refresh token, never enough to make its cookie.
   */
  keysOf(hash: string, sealKey: Key): SessionKeys {
    const tag = `{${hash}}`;
    return {
      hash,
      sessionKey: `${this.prefix}s:${tag}`,
      tokensKey: `${this.prefix}t:${tag}`,
      lockKey: `${this.prefix}l:${tag}`,
      rateKey: `${this.prefix}r:${tag}`,
      sealKey,
    };
  }

  /**
   * Key of an index (by IdP subject or IdP session id) under secret `i`: in a hash slot of its own, never with
   * a session's records. New entries go under the current secret; lookups cover every configured one.
   */
  indexKey(kind: 'sub' | 'sid', iss: string, value: string, i = 0): string {
    const s = this.secrets[i] ?? this.secrets[0]!;
    return `${this.prefix}${kind === 'sub' ? 'u' : 'p'}:{${keyedHash(s.index, `${kind}:${iss}|${value}`).toString('base64url').slice(0, 32)}}`;
  }

  /** The SCAN pattern matching every index of one kind, under any secret. */
  indexKeyPattern(kind: 'sub' | 'sid'): string {
    return `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}${kind === 'sub' ? 'u' : 'p'}:*`;
  }

  sealIndexEntry(plaintext: string, aad: string): string {
    return seal(this.secrets[0]!.indexSeal, plaintext, aad);
  }

  /** Opens an index entry sealed under any configured secret (entries written before a rotation). */
  openIndexEntry(sealed: string, aad: string): string | undefined {
    for (const s of this.secrets) {
      const plain = open(s.indexSeal, sealed, aad);
      if (plain !== undefined) return plain;
    }
    return undefined;
  }
}
