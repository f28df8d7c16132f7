/**
 * Sessions that end by timing out (idle or absolute) must still have their refresh token revoked
 * (RFC 7009; the IdP does not know the session ended), even when the browser never comes back.
 *
 * The ledger is a sorted set of session ends plus the sealed entries needed to reach each session (as in
 * the sub/sid index). Every replica sweeps it every few seconds; removing a due member (ZREM) is the claim,
 * so exactly one replica handles each session. The token record outlives its session by TOKEN_GRACE_MS so
 * the sweeper can still read the refresh token; the session record itself ends exactly on time.
 */
import type { Kv } from '../store/kv';
import type { Keyring, SessionKeys } from './keyring';
import { indexEntry, keysOfEntry, type IndexEntry } from './sessionIndex';
import type { GatehouseSession } from './sessionData';

/** How long a token record outlives its session, for the sweeper to revoke its refresh token. */
export const TOKEN_GRACE_MS = 300_000;
/** A session whose handling failed is tried again this much later. */
const RETRY_MS = 5000;
const BATCH = 100;

export class ExpiryLedger {
  private readonly dueKey: string;
  private readonly entriesKey: string;

  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    prefix: string,
    private readonly now: () => number,
  ) {
    this.dueKey = `${prefix}e:due`;
    this.entriesKey = `${prefix}e:entries`;
  }

  async add(keys: SessionKeys, session: GatehouseSession, endMs: number): Promise<void> {
    await this.put(indexEntry(keys, session), keys, endMs);
  }

  /** Schedules (again) the entry of a session that ends at `endMs`. */
  async put(entry: IndexEntry, keys: SessionKeys, endMs: number): Promise<void> {
    const keepMs = entry.absoluteExpiresAt + TOKEN_GRACE_MS - this.now();
    await this.kv.hashPut(
      this.entriesKey,
      keys.hash,
      this.keyring.sealIndexEntry(JSON.stringify(entry), `${this.entriesKey}|${keys.hash}`),
      keepMs,
    );
    await this.kv.schedule(this.dueKey, keys.hash, endMs, keepMs);
  }

  /**
   * One sweep: ends the sessions that timed out. A session whose record still lives was slid after its due
   * time was written (the slide and the ledger are two steps, so a fault between them leaves the old time):
   * it is scheduled again at its real end, never ended early.
   */
  async sweep(end: (entries: IndexEntry[]) => Promise<unknown>): Promise<void> {
    for (const hash of await this.kv.due(this.dueKey, this.now(), BATCH)) {
      const e = await this.claim(hash);
      if (!e) continue;
      const keys = keysOfEntry(this.keyring, e);
      try {
        // The session envelope carries its exact end in clear (sealedStore.ts Envelope.exp).
        const raw = await this.kv.get(keys.sessionKey);
        const endsAt = raw === null ? 0 : Number((JSON.parse(raw) as { exp?: unknown }).exp) || 0;
        if (endsAt > this.now()) await this.put(e, keys, endsAt);
        else await end([e]);
      } catch (err) {
        // Claimed but not handled: put it back, so a fault never loses a revocation.
        await this.put(e, keys, this.now() + RETRY_MS).catch(() => undefined);
        throw err;
      }
    }
  }

  /** The idle window slid: the session now ends at `endMs`. */
  async move(keys: SessionKeys, endMs: number): Promise<void> {
    await this.kv.reschedule(this.dueKey, keys.hash, endMs);
  }

  /** The session ended some other way (logout, back-channel, kill, invalid_grant). */
  async remove(keys: SessionKeys): Promise<void> {
    await this.kv.unschedule(this.dueKey, keys.hash);
    await this.kv.hashDelete(this.entriesKey, keys.hash);
  }

  /** Claims one due session (for exactly one caller) and returns its entry. */
  private async claim(hash: string): Promise<IndexEntry | undefined> {
    if (!(await this.kv.claim(this.dueKey, hash))) return undefined;
    const sealed = await this.kv.hashTake(this.entriesKey, hash);
    const json = sealed === null ? undefined : this.keyring.openIndexEntry(sealed, `${this.entriesKey}|${hash}`);
    return json === undefined ? undefined : (JSON.parse(json) as IndexEntry);
  }
}
