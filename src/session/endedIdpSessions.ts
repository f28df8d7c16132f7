/**
 * IdP sessions that a back-channel logout ended, remembered for as long as a login transaction can live.
 *
 * A code the IdP issued before it ended its session, redeemed after the logout reached us, would make a
 * live session for an IdP session that no longer exists: the logout found nothing to end at that moment,
 * and none will come later. The callback refuses an ID token whose `sid` is remembered here and whose
 * authentication (`auth_time`) is not later than the logout (OIDC Back-Channel Logout 1.0 §2.7:
 * the RP ends the sessions of that `sid`, which includes one still being made).
 *
 * Only a `sid` is remembered: a logout naming the user alone (`sub`) says nothing of logins that follow, and
 * remembering it would lock the user out until the record expired.
 *
 * Keyed by a keyed hash of issuer and sid, the time sealed, every record with a TTL: a Redis dump reveals
 * neither the sid nor when it ended.
 */
import type { Kv } from '../store/kv';
import type { Keyring } from './keyring';
import { open, seal } from '../crypto/seal';
import { TX_MAX_AGE_SECONDS } from '../http/cookies';

const KIND = 'e';

export class EndedIdpSessions {
  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
  ) {}

  /** Remembers that the IdP session `sid` ended at `endedAt` (unix seconds, the IdP's clock: the logout token's `iat`). */
  async remember(iss: string, sid: string, endedAt: number): Promise<void> {
    const { key, sealKey } = this.keyring.forRandom(KIND, `${iss}|${sid}`);
    // A later logout of the same sid (the IdP's retry, or a second logout) keeps the later time.
    const known = await this.endedAt(iss, sid);
    const at = known === undefined ? endedAt : Math.max(known, endedAt);
    await this.kv.set(key, seal(sealKey, String(at), key), TX_MAX_AGE_SECONDS * 1000);
  }

  /** When the IdP session `sid` ended (unix seconds), if a logout of it arrived within a login's lifetime. */
  async endedAt(iss: string, sid: string): Promise<number | undefined> {
    for (let i = 0; i < this.keyring.secretCount; i++) {
      const { key, sealKey } = this.keyring.forRandom(KIND, `${iss}|${sid}`, i);
      const raw = await this.kv.get(key);
      const at = raw === null ? undefined : open(sealKey, raw, key);
      if (at !== undefined) return Number(at);
    }
    return undefined;
  }

  /**
   * True when an ID token of IdP session `sid` authenticated at `authenticatedAt` (its `auth_time`, unix
   * seconds) predates a logout of that session. Equal seconds count as before: both clocks are the IdP's,
   * in whole seconds. Without `auth_time` nothing tells a login made before the logout from one made after
   * in the same IdP session, so the `sid` alone decides; a login after a logout normally gets a new `sid`.
   */
  async predatesLogout(iss: string, sid: string, authenticatedAt: number | undefined): Promise<boolean> {
    const ended = await this.endedAt(iss, sid);
    return ended !== undefined && (authenticatedAt === undefined || authenticatedAt <= ended);
  }
}
