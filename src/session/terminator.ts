/**
 * Ends sessions without their cookie: back-channel logout (BCL 1.0 §2.7), the operators' kill switch, and the
 * expiry sweeper (sessions that timed out).
 * Deleting a session's records ends it on every replica at once (each request reads Redis, or a copy that
 * the deletion's announcement drops: sessionCache.ts). When the IdP does not already know (kill switch),
 * the refresh token is revoked too (RFC 7009), in the background.
 */
import type { Kv } from '../store/kv';
import type { Logger } from '../log/logger';
import { keysOfEntry, type IndexEntry } from './sessionIndex';
import { retire, type Lifecycle } from './lifecycle';
import type { RevocationOutcome } from '../idp/revoker';

/** `anomaly`: an IdP reported the refresh token reused (admin/adminApp.ts) and GATEHOUSE_ANOMALY_END_SESSION is on. */
export type EndReason = 'backchannel' | 'admin' | 'anomaly' | 'expired';

export interface Ended {
  /** How many of the sessions were still live. */
  count: number;
  /** How each refresh-token revocation started here ended (they run in the background; await to report them). */
  revocations: Promise<RevocationOutcome[]>;
}

export class Terminator {
  constructor(
    private readonly lifecycle: Lifecycle,
    private readonly kv: Kv,
    private readonly log: Logger,
  ) {}

  /**
   * Ends the listed sessions. Their refresh tokens are revoked (with `revoke`) unless another session of
   * the user, not ended here, may share the grant (idp/revoker.ts).
   */
  async end(entries: readonly IndexEntry[], reason: EndReason, opts: { revoke: boolean }): Promise<Ended> {
    const { keyring, store, metrics, now } = this.lifecycle;
    let ended = 0;
    const revocations: Promise<RevocationOutcome>[] = [];
    const endingTogether = new Set(entries.map((e) => e.h));
    for (const entry of entries) {
      const keys = keysOfEntry(keyring, entry);
      const live = (await this.kv.get(keys.sessionKey)) !== null;
      // The session record first: from here on no replica serves the session, whatever follows.
      await store.remove(keys);
      const { taken, revocation } = await retire(this.lifecycle, keys, entry, {
        keepTokenRecord: false,
        revoke: opts.revoke,
        endingTogether,
      });
      if (revocation) revocations.push(revocation);
      if (reason === 'expired' && !taken)
        this.log.warn({ session: keys.hash }, 'timed-out session has no token record left; nothing to revoke');
      if (reason !== 'expired') {
        if (live) metrics.sessionEnded(reason);
      } else metrics.sessionEnded(entry.absoluteExpiresAt <= now() ? 'absolute' : 'idle');
      if (live) {
        ended++;
        this.log.info({ session: keys.hash, reason }, 'session ended');
      }
    }
    return { count: ended, revocations: Promise.all(revocations) };
  }
}
