/**
 * Sessions this replica read from Redis in the last moment, reused so a burst of /api calls (a page load)
 * costs one Redis read instead of one per call. What is kept is what a read returns: the
 * session, opened and parsed, and its parsed token record.
 *
 * A cached session must never outlive its end anywhere (a kill, logout or back-channel logout on any
 * replica takes effect everywhere within one second). Three rules make sure of it:
 * - Every write to a session's records (SealedSessionStore, Vault) calls changed(): the entry is
 *   dropped here at once and the change is announced on a Redis channel every replica listens to
 *   (store/invalidations.ts), where it is dropped too, within milliseconds. Ending a session waits for
 *   the announcement to be sent before it answers.
 * - An entry is reused for at most GATEHOUSE_SESSION_CACHE_MS (≤ 1000 ms), so even an announcement that
 *   never arrived cannot keep an ended session alive longer.
 * - Nothing is kept while this replica is not subscribed (its channel connection is down, so it could miss
 *   announcements), and everything is dropped when the subscription is lost or comes back.
 * A read that overlaps any change (here or announced) is not kept: it may predate the change.
 */
import type { SessionData } from 'express-session';
import type { VaultEntry } from '../tokens/vault';

export interface CachedSession {
  /** The opened session record, frozen: each request works on its own copy (SealedSessionStore.find). */
  readonly session: Readonly<SessionData>;
  /** Its token record as read in the same round trip; shared and never modified. */
  readonly tokens: VaultEntry | null;
}

interface Entry extends CachedSession {
  readonly until: number;
}

/** Told of every change to a session, here or announced, and of the subscription's state (the WebSocket lane). */
export interface ChangeWatcher {
  changed(hash: string): void;
  listening(listening: boolean): void;
}

/** Beyond this many sessions read within one cache period, the oldest entries go first. */
const MAX_ENTRIES = 10_000;

export class SessionCache {
  /** By the session's storage hash (the same on every replica), oldest first. */
  private readonly entries = new Map<string, Entry>();
  /** Counts changes: a read that started at another value may predate one, and is not kept. */
  private changes = 0;
  private listening = false;
  private readonly watchers: ChangeWatcher[] = [];

  /**
   * @param maxAgeMs how long an entry is reused (0 = no cache)
   * @param announce tells the other replicas that `hash` changed; resolves when sent, never rejects
   * @param clock monotonic milliseconds (the cache measures real time, whatever clock sessions use)
   */
  constructor(
    private readonly maxAgeMs: number,
    private readonly announce: (hash: string) => Promise<void>,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** A cache that keeps nothing (stores built without one). */
  static none(): SessionCache {
    return new SessionCache(0, () => Promise.resolve());
  }

  get enabled(): boolean {
    return this.maxAgeMs > 0;
  }

  /** The session read under `hash` less than maxAgeMs ago, if nothing changed it since. */
  get(hash: string): CachedSession | undefined {
    const e = this.entries.get(hash);
    if (!e) return undefined;
    if (e.until > this.clock()) return e;
    this.entries.delete(hash);
    return undefined;
  }

  /** Call before reading a session from the store; hand the result to keep(). */
  mark(): number {
    return this.changes;
  }

  /** Keeps what a read started at `mark` returned, unless a change may have overtaken it. */
  keep(hash: string, value: CachedSession, mark: number): void {
    if (!this.enabled || !this.listening || mark !== this.changes) return;
    const now = this.clock();
    // Entries are kept in insertion order with one lifetime, so the expired ones are at the front.
    for (const [h, e] of this.entries) {
      if (e.until > now && this.entries.size < MAX_ENTRIES) break;
      this.entries.delete(h);
    }
    this.entries.delete(hash);
    this.entries.set(hash, { ...value, until: now + this.maxAgeMs });
  }

  /**
   * A session's records were written or deleted here: drop it, and tell every other replica. Resolves once
   * Redis has passed the announcement on (never rejects): ending a session awaits it, so when a logout or a
   * kill answers, every connected replica has been told.
   */
  changed(hash: string): Promise<void> {
    this.drop(hash);
    // Watchers on other replicas need the announcement even when no replica caches sessions.
    return this.enabled || this.watchers.length > 0 ? this.announce(hash) : Promise.resolve();
  }

  /** Another replica changed `hash` (an announcement). */
  drop(hash: string): void {
    this.changes++;
    this.entries.delete(hash);
    for (const w of this.watchers) w.changed(hash);
  }

  /** The subscription to announcements started (true) or was lost (false): start over either way. */
  setListening(listening: boolean): void {
    this.changes++;
    this.entries.clear();
    this.listening = listening;
    for (const w of this.watchers) w.listening(listening);
  }

  /** True while announcements from other replicas can be received. */
  get receiving(): boolean {
    return this.listening;
  }

  /** Calls `watcher` on every change and subscription change from now on, starting with the subscription's state. */
  watch(watcher: ChangeWatcher): void {
    this.watchers.push(watcher);
    watcher.listening(this.listening);
  }

  get size(): number {
    return this.entries.size;
  }
}
