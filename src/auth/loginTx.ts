/**
 * The login transaction lives server-side (sealed, TTL 10 minutes), keyed by its `state`,
 * and is consumed on first use (GETDEL), success or failure. It is bound to the browser by a cookie of its
 * own (http/cookies.ts txCookieName) holding a random binding issued with it: two tabs logging in at once
 * each have their own transaction and cookie, and both callbacks succeed.
 *
 * Anyone can start a login, so what it stores is bounded: the record is small (returnTo.ts caps its only
 * free-form field), and at most `maxInFlight` records exist at once across replicas. That count is a sorted
 * set of the records' expiry times (Kv.admit): a record leaves it when its callback consumes it, or by
 * itself when its time has passed, so the count heals on its own and can never lock logins out for good
 * (a plain counter would: records that expire unconsumed never decrement it).
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
  /** Fingerprint of the browser binding (the value of the transaction's cookie). */
  binding: string;
  /** A silent login (`prompt=none`): the IdP's "needs the user" answers end it without an error page. */
  silent: boolean;
}

export interface InFlightLimit {
  /** The sorted set counting the records in flight (one key for every replica). */
  key: string;
  max: number;
  now: () => number;
}

const TX_MS = TX_MAX_AGE_SECONDS * 1000;

/**
 * Positional, not JSON: field names would be a tenth of the record. Verifier, nonce and binding are
 * base64url (no space); returnTo comes last and may hold anything.
 */
const encode = (tx: LoginTx): string => `${tx.codeVerifier} ${tx.nonce} ${tx.binding} ${tx.silent ? 'n' : '-'} ${tx.returnTo}`;
/** The flag (`n`: a silent login) is optional: records stored before it existed have none, and returnTo starts with `/`. */
const RECORD = /^(\S+) (\S+) (\S+) (?:([-n]) )?(.*)$/s;
function decode(raw: string): LoginTx | undefined {
  const m = RECORD.exec(raw);
  return m ? { codeVerifier: m[1]!, nonce: m[2]!, binding: m[3]!, silent: m[4] === 'n', returnTo: m[5]! as ReturnTo } : undefined;
}

export class LoginTransactions {
  constructor(
    private readonly kv: Kv,
    private readonly keyring: Keyring,
    private readonly limit: InFlightLimit,
  ) {}

  /** Stores the transaction; false (nothing stored) when `max` are already in flight. */
  async save(state: string, tx: LoginTx): Promise<boolean> {
    const now = this.limit.now();
    const member = this.keyring.fingerprint(`tx:${state}`);
    if (!(await this.kv.admit(this.limit.key, member, now + TX_MS, now, this.limit.max))) return false;
    const { key, sealKey } = this.keyring.forRandom('x', state);
    await this.kv.set(key, seal(sealKey, encode(tx), key), TX_MS);
    return true;
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
      const tx = raw === null ? undefined : decode(open(sealKey, raw, key) ?? '');
      if (tx === undefined) continue;
      // Its place in the count is free now; were this lost, the place would free itself at the record's expiry.
      await this.kv.unschedule(this.limit.key, this.keyring.fingerprint(`tx:${state}`, i)).catch(() => undefined);
      return { tx, bound: tx.binding === this.keyring.fingerprint(binding, i) };
    }
    return undefined;
  }
}
