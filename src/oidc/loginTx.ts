/**
 * R5, R6, R9: the login transaction lives server-side (sealed, TTL 10 minutes), keyed by its `state`,
 * and is consumed on first use (GETDEL), success or failure. It is bound to the browser by the tx cookie,
 * whose value is a random binding shared by that browser's concurrent logins: two tabs logging in at
 * once each have their own transaction and both callbacks succeed.
 */
import type { Kv } from '../store/kv';
import type { Keyring } from '../session/keyring';
import { open, seal } from '../crypto/seal';
import type { ReturnTo } from './returnTo';
import { TX_MAX_AGE_SECONDS } from '../http/cookies';

export interface LoginTx {
  codeVerifier: string;
  nonce: string;
  returnTo: ReturnTo;
  /** Fingerprint of the browser binding (the tx cookie's value). */
  binding: string;
}

export class LoginTransactions {
  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
  ) {}

  async save(state: string, tx: LoginTx): Promise<void> {
    const { key, sealKey } = this.keyring.forRandom('x', state);
    await this.kv.set(key, seal(sealKey, JSON.stringify(tx), key), TX_MAX_AGE_SECONDS * 1000);
  }

  /**
   * Takes the transaction for `state` (one time), or undefined when there is none (unknown, used, expired).
   * A login started before a secret rotation is found under the older secret; `binding` tells whether the
   * browser's tx cookie is the one it was bound to.
   */
  async take(state: string, binding: string): Promise<{ tx: LoginTx; bound: boolean } | undefined> {
    for (let i = 0; i < this.keyring.secretCount; i++) {
      const { key, sealKey } = this.keyring.forRandom('x', state, i);
      const raw = await this.kv.getDel(key);
      const json = raw === null ? undefined : open(sealKey, raw, key);
      if (json === undefined) continue;
      const tx = JSON.parse(json) as LoginTx;
      return { tx, bound: tx.binding === this.keyring.fingerprint(binding, i) };
    }
    return undefined;
  }
}
