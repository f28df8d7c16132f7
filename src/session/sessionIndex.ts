/**
 * Which live sessions belong to an IdP subject and to an IdP session (`sid`), for back-channel logout
 * (BCL 1.0 §2.7, R59) and the operators' kill switch.
 *
 * Each index is a Redis hash: field = the session's storage hash, value = an entry sealed with a key derived
 * from the server secret (a Redis dump alone still reveals nothing). The entry holds the session id, because
 * ending a session for good means opening its token record to revoke the refresh token (RFC 7009), and the
 * id is the only way to it. Entries are removed when their session ends and pruned when they outlive it.
 */
import type { Kv } from '../store/kv';
import type { Keyring, SessionKeys } from './keyring';
import type { GatehouseSession } from './sessionData';

export interface IndexEntry {
  /** The session id (the cookie's), to derive the session's keys. */
  id: string;
  /** Which secret keys the session (GatehouseSession.k). */
  k?: number;
  iss: string;
  sub: string;
  sid?: string;
  createdAt: number;
  absoluteExpiresAt: number;
}

export class SessionIndex {
  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    private readonly now: () => number,
  ) {}

  private keysOf(e: { iss: string; sub: string; sid?: string }): string[] {
    const keys = [this.keyring.indexKey('sub', e.iss, e.sub)];
    if (e.sid) keys.push(this.keyring.indexKey('sid', e.iss, e.sid));
    return keys;
  }

  /** Records a new session under its subject and IdP session; drops entries whose sessions have ended. */
  async add(id: string, keys: SessionKeys, gh: GatehouseSession): Promise<void> {
    const entry: IndexEntry = { id, iss: gh.iss, sub: gh.sub, createdAt: gh.createdAt, absoluteExpiresAt: gh.absoluteExpiresAt };
    if (gh.sid) entry.sid = gh.sid;
    if (gh.k) entry.k = gh.k;
    for (const key of this.keysOf(gh)) {
      await this.kv.hashPut(
        key,
        keys.hash,
        this.keyring.sealIndexEntry(JSON.stringify(entry), `${key}|${keys.hash}`),
        gh.absoluteExpiresAt - this.now(),
      );
      await this.prune(key);
    }
  }

  async remove(keys: SessionKeys, gh: { iss: string; sub: string; sid?: string }): Promise<void> {
    for (const key of this.keysOf(gh)) await this.kv.hashDelete(key, keys.hash);
  }

  /** The entries of every session of a subject, or of an IdP session (past their absolute end excluded). */
  async list(kind: 'sub' | 'sid', iss: string, value: string): Promise<IndexEntry[]> {
    const key = this.keyring.indexKey(kind, iss, value);
    const out: IndexEntry[] = [];
    for (const [hash, sealed] of Object.entries(await this.kv.hashGetAll(key))) {
      const json = this.keyring.openIndexEntry(sealed, `${key}|${hash}`);
      if (json === undefined) continue;
      const e = JSON.parse(json) as IndexEntry;
      if (e.absoluteExpiresAt > this.now()) out.push(e);
    }
    return out;
  }

  private async prune(key: string): Promise<void> {
    const stale: string[] = [];
    for (const [hash, sealed] of Object.entries(await this.kv.hashGetAll(key))) {
      const json = this.keyring.openIndexEntry(sealed, `${key}|${hash}`);
      if (json === undefined || (JSON.parse(json) as IndexEntry).absoluteExpiresAt <= this.now()) stale.push(hash);
    }
    if (stale.length) await this.kv.hashDelete(key, ...stale);
  }
}
