/**
 * Which live sessions belong to an IdP subject and to an IdP session (`sid`), for back-channel logout
 * (BCL 1.0 §2.7) and the operators' kill switch.
 *
 * Each index is a Redis hash: field = the session's storage hash, value = an entry sealed with a key derived
 * from the server secret (a Redis dump alone reveals nothing). The entry holds what ending the session takes
 * (its storage hash and seal key, to reach its records and revoke its refresh token) and never the session
 * id: not even the server secret turns an entry into a cookie. Entries are removed when their session ends
 * and pruned when they outlive it. After a secret rotation, lookups cover the indexes of every secret.
 */
import { keyFromBytes } from '../crypto/seal';
import type { Kv } from '../store/kv';
import type { Keyring, SessionKeys } from './keyring';
import type { GatehouseSession } from './sessionData';

export interface IndexEntry {
  /** The session's storage hash and seal key (base64url): Keyring.keysOf(). */
  h: string;
  sk: string;
  iss: string;
  sub: string;
  sid?: string;
  createdAt: number;
  absoluteExpiresAt: number;
  /** GatehouseSession.authAt: which back-channel logouts of its `sid` it predates. */
  authAt?: number;
}

export function indexEntry(keys: SessionKeys, session: GatehouseSession): IndexEntry {
  const e: IndexEntry = {
    h: keys.hash,
    sk: keys.sealKey.export().toString('base64url'),
    iss: session.iss,
    sub: session.sub,
    createdAt: session.createdAt,
    absoluteExpiresAt: session.absoluteExpiresAt,
  };
  if (session.sid) e.sid = session.sid;
  if (session.authAt !== undefined) e.authAt = session.authAt;
  return e;
}

/**
 * The entry of session `hash` in the index stored under `key`, opened under any configured secret (each is
 * sealed with the index key and the session hash as additional data); undefined when none opens it.
 */
export function openIndexEntry(keyring: Keyring, key: string, hash: string, sealed: string): IndexEntry | undefined {
  const json = keyring.openIndexEntry(sealed, `${key}|${hash}`);
  return json === undefined ? undefined : (JSON.parse(json) as IndexEntry);
}

export function keysOfEntry(keyring: Keyring, e: IndexEntry): SessionKeys {
  return keyring.keysOf(e.h, keyFromBytes(Buffer.from(e.sk, 'base64url')));
}

type Who = { iss: string; sub: string; sid?: string };

export class SessionIndex {
  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    private readonly now: () => number,
  ) {}

  /** The index keys of a session under secret `i`. */
  private keysOf(e: Who, i: number): string[] {
    const keys = [this.keyring.indexKey('sub', e.iss, e.sub, i)];
    if (e.sid) keys.push(this.keyring.indexKey('sid', e.iss, e.sid, i));
    return keys;
  }

  /** Records a new session under its subject and IdP session; drops entries whose sessions have ended. */
  async add(keys: SessionKeys, session: GatehouseSession): Promise<void> {
    const sealed = JSON.stringify(indexEntry(keys, session));
    for (const key of this.keysOf(session, 0)) {
      await this.kv.hashPut(
        key,
        keys.hash,
        this.keyring.sealIndexEntry(sealed, `${key}|${keys.hash}`),
        session.absoluteExpiresAt - this.now(),
      );
      await this.prune(key);
    }
  }

  async remove(keys: SessionKeys, who: Who): Promise<void> {
    for (let i = 0; i < this.keyring.secretCount; i++) for (const key of this.keysOf(who, i)) await this.kv.hashDelete(key, keys.hash);
  }

  /** The entries of every session of a subject, or of an IdP session (past their absolute end excluded). */
  async list(kind: 'sub' | 'sid', iss: string, value: string): Promise<IndexEntry[]> {
    const found = new Map<string, IndexEntry>();
    for (let i = 0; i < this.keyring.secretCount; i++) {
      const key = this.keyring.indexKey(kind, iss, value, i);
      for (const [hash, sealed] of Object.entries(await this.kv.hashGetAll(key))) {
        const e = openIndexEntry(this.keyring, key, hash, sealed);
        if (e && e.absoluteExpiresAt > this.now()) found.set(e.h, e);
      }
    }
    return [...found.values()];
  }

  private async prune(key: string): Promise<void> {
    const stale: string[] = [];
    for (const [hash, sealed] of Object.entries(await this.kv.hashGetAll(key))) {
      const e = openIndexEntry(this.keyring, key, hash, sealed);
      if (!e || e.absoluteExpiresAt <= this.now()) stale.push(hash);
    }
    if (stale.length) await this.kv.hashDelete(key, ...stale);
  }
}
