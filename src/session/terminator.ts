/**
 * Ends sessions without their cookie: back-channel logout (BCL 1.0 §2.7), the operators' kill switch, and the
 * expiry sweeper (sessions that timed out).
 * Deleting a session's records ends it on every replica at once (each request reads Redis, or a copy that
 * the deletion's announcement drops: sessionCache.ts). When the IdP does not already know (kill switch),
 * the refresh token is revoked too (RFC 7009), in the background.
 */
import type { Kv } from '../store/kv';
import type { Logger } from '../log/logger';
import type { Metrics } from '../health/metrics';
import type { Vault } from '../tokens/vault';
import type { Keyring } from './keyring';
import { keysOfEntry, type IndexEntry, type SessionIndex } from './sessionIndex';
import type { ExpiryLedger } from './expiryLedger';
import type { SessionCache } from './sessionCache';
import type { RevocationOutcome, RevokeLater } from '../idp/revoker';

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
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    private readonly vault: Vault,
    private readonly index: SessionIndex,
    private readonly ledger: ExpiryLedger,
    private readonly revokeLater: RevokeLater,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly cache: SessionCache,
  ) {}

  /**
   * Ends the listed sessions. Their refresh tokens are revoked (with `revoke`) unless another session of
   * the user, not ended here, may share the grant (idp/revoker.ts).
   */
  async end(entries: readonly IndexEntry[], reason: EndReason, opts: { revoke: boolean }): Promise<Ended> {
    let ended = 0;
    const revocations: Promise<RevocationOutcome>[] = [];
    const endingTogether = new Set(entries.map((e) => e.h));
    for (const e of entries) {
      const keys = keysOfEntry(this.keyring, e);
      const tokens = opts.revoke ? await this.vault.take(keys) : null;
      if (reason === 'expired' && !tokens)
        this.log.warn({ session: keys.hash }, 'timed-out session has no token record left; nothing to revoke');
      const live = (await this.kv.get(keys.sessionKey)) !== null;
      await this.kv.del(keys.sessionKey, keys.tokensKey, keys.lockKey, keys.rateKey);
      await this.cache.changed(keys.hash);
      await this.index.remove(keys, e);
      await this.ledger.remove(keys);
      if (tokens && !tokens.dead && tokens.tokens.refreshToken)
        revocations.push(this.revokeLater(tokens.tokens.refreshToken, { iss: e.iss, sub: e.sub, session: e.h }, endingTogether));
      if (reason !== 'expired') {
        if (live) this.metrics.sessionEnded(reason);
      } else this.metrics.sessionEnded(e.absoluteExpiresAt <= Date.now() ? 'absolute' : 'idle');
      if (live) {
        ended++;
        this.log.info({ session: keys.hash, reason }, 'session ended');
      }
    }
    return { count: ended, revocations: Promise.all(revocations) };
  }
}
