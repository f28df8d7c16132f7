/**
 * The token vault: one sealed, versioned record per session, apart from the express-session blob.
 *
 * Why apart: express-session writes a whole session back at the end of a request, so a slow request
 * would put an old refresh token over a new one (express-openid-connect #408). Here tokens are written
 * only by compare-and-set on the record's version, so an older token set can never replace a newer one.
 *
 * A record is "<version>|<sealed tokens>", or "<version>|dead" for a short while after the grant was
 * found dead, so requests waiting on other replicas learn the outcome (401 session_expired) too.
 */
import type { Kv } from '../store/kv';
import { versionOf } from '../store/kv';
import { open, seal } from '../crypto/seal';
import type { SessionKeys } from '../session/keyring';
import type { TokenSet } from '../idp/idp';
import { SessionCache } from '../session/sessionCache';
import type { DpopJwk } from './dpop';

/** One access token and its times. */
export interface AccessToken {
  accessToken: string;
  /**
   * Epoch ms: the access token's end (its own `exp` when it is a JWT, else expires_in counted from the time
   * the request was sent: RFC 6749 §5.1), when to refresh it, and the last moment it is sent upstream.
   */
  expiresAt: number;
  refreshAt: number;
  /** Absent in records written before it existed: expiresAt then. */
  usableUntil?: number;
  /** A DPoP-bound token (RFC 9449): sent as `Authorization: DPoP` with a proof of the session's key. */
  dpop?: true;
}

/** A session's tokens: the login's access token, and one per API audience (routes with resource or scope). */
export interface Tokens extends AccessToken {
  refreshToken: string | undefined;
  idToken: string | undefined;
  /** By Audience.key: access tokens obtained for one API with the same refresh token. */
  audiences?: Record<string, AccessToken>;
  /** The session's DPoP key pair (private JWK), sealed with the record like the tokens. */
  dpopKey?: DpopJwk;
}

/** How far ahead of the access token's end Gatehouse acts. */
export interface TokenTiming {
  /** Refresh when the token has less than this left. */
  skewSeconds: number;
  /** Never send a token with less than this left: the API's clock may run ahead of ours. */
  marginSeconds: number;
}

/** The access token may still be sent upstream: outside the margin before its end. */
export function usable(tokens: AccessToken, now: number): boolean {
  return now < (tokens.usableUntil ?? tokens.expiresAt);
}

export type VaultEntry = { version: number; dead: false; tokens: Tokens } | { version: number; dead: true };

const DEAD = 'dead';
const TOMBSTONE_MS = 60_000;
/** How much earlier than expires_in says a JWT's own `exp` may end a token (clocks differ a little). */
const EXP_TRUSTED_MS = 5000;
/** An IdP that sends no expires_in: assume five minutes and refresh ahead of that. */
const DEFAULT_LIFETIME_S = 300;

/**
 * Builds the record from a token response to a request sent at `sentAt`.
 * RFC 6749 §6: when the IdP returns no new refresh token, the old one stays valid and is kept.
 * The refresh point is `skew` before expiry, but at most half the token's life, so an IdP whose tokens
 * live shorter than the skew does not cause a refresh on every request; the margin is at most a quarter of
 * its life, and the refresh point is never later than the margin.
 */
export function tokensFrom(ts: TokenSet, sentAt: number, timing: TokenTiming, previous?: Tokens): Tokens {
  return {
    ...accessTokenFrom(ts, sentAt, timing),
    refreshToken: ts.refreshToken ?? previous?.refreshToken,
    idToken: ts.idToken ?? previous?.idToken,
    ...(previous?.audiences && { audiences: previous.audiences }),
    ...(previous?.dpopKey && { dpopKey: previous.dpopKey }),
  };
}

/** The access token of a token response, with its times (see tokensFrom). */
export function accessTokenFrom(ts: TokenSet, sentAt: number, timing: TokenTiming): AccessToken {
  const lifetime = ts.expiresIn !== undefined && ts.expiresIn > 0 ? ts.expiresIn : DEFAULT_LIFETIME_S;
  const stated = sentAt + lifetime * 1000;
  const exp = jwtExpiry(ts.accessToken);
  // A JWT access token's `exp` is what the API checks: whole seconds, set when the IdP issued it, which may
  // be up to a second before expires_in counted from our clock says. `exp` is on the IdP's clock, though:
  // one far behind ours would make every token look nearly spent, so it may shorten the token's life by a
  // few seconds (a quarter of it at most), never more.
  const expiresAt = exp !== undefined && exp < stated ? Math.max(exp, stated - Math.min(EXP_TRUSTED_MS, lifetime * 250)) : stated;
  const life = (expiresAt - sentAt) / 1000;
  const skew = Math.min(timing.skewSeconds, life / 2);
  const margin = Math.min(timing.marginSeconds, life / 4);
  return {
    accessToken: ts.accessToken,
    ...(ts.tokenType?.toLowerCase() === 'dpop' && { dpop: true as const }),
    expiresAt,
    refreshAt: expiresAt - Math.max(skew, margin) * 1000,
    usableUntil: expiresAt - margin * 1000,
  };
}

/**
 * The `exp` (epoch ms) of a JWT access token (RFC 9068 §2.2), or undefined for an opaque one. Read, not
 * verified: the token is the API's to verify, and `exp` only ever makes Gatehouse use it for less time.
 */
export function jwtExpiry(accessToken: string): number | undefined {
  const parts = accessToken.split('.');
  if (parts.length !== 3 || parts[1]!.length > 8192) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) && exp > 0 ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class Vault {
  /** Token records read together with their session (SealedSessionStore.find), by the session's data. */
  private readonly primed = new WeakMap<object, VaultEntry | null>();

  /** `cache` is told of every write, so no replica goes on using a record this one replaced. */
  constructor(
    private readonly kv: Kv,
    private readonly cache: SessionCache = SessionCache.none(),
  ) {}

  async read(keys: SessionKeys): Promise<VaultEntry | null> {
    return this.parse(keys, await this.kv.get(keys.tokensKey));
  }

  /** Keeps the token record read in the same round trip as the session `owner` (one request's session data). */
  prime(owner: object, entry: VaultEntry | null): void {
    this.primed.set(owner, entry);
  }

  /**
   * The record primed for `owner` when this request loaded its session, once; later reads (after a lock,
   * while waiting for another replica) go to the store.
   */
  async readFor(owner: object, keys: SessionKeys): Promise<VaultEntry | null> {
    if (!this.primed.has(owner)) return this.read(keys);
    const entry = this.primed.get(owner)!;
    this.primed.delete(owner);
    return entry;
  }

  /**
   * Reads and deletes the record in one step (ending a session): a refresh completing on another replica
   * then finds it gone, and revokes the refresh token it just received instead of storing it.
   */
  async take(keys: SessionKeys): Promise<VaultEntry | null> {
    const raw = await this.kv.getDel(keys.tokensKey);
    await this.cache.changed(keys.hash);
    return this.parse(keys, raw);
  }

  /** A token record as stored (null: none) → its entry; also for records read with their session. */
  parse(keys: SessionKeys, raw: string | null): VaultEntry | null {
    if (raw === null) return null;
    const version = versionOf(raw);
    const body = raw.slice(raw.indexOf('|') + 1);
    if (body === DEAD) return { version, dead: true };
    const json = open(keys.sealKey, body, keys.tokensKey);
    // A record that does not open for this session is treated as absent: it can never grant access.
    return json === undefined ? null : { version, dead: false, tokens: JSON.parse(json) as Tokens };
  }

  /**
   * Writes `tokens` as version expected+1 only if the record is still at `expected` (0 = absent).
   * A login gives the record its TTL; a refresh keeps it ('keep'), so only the idle slide moves it.
   */
  async write(keys: SessionKeys, expected: number, tokens: Tokens, ttlMs: number | 'keep'): Promise<boolean> {
    const value = `${expected + 1}|${seal(keys.sealKey, JSON.stringify(tokens), keys.tokensKey)}`;
    return this.settled(keys, await this.kv.compareAndSet(keys.tokensKey, expected, value, ttlMs));
  }

  /**
   * Marks the grant dead if the record is still at `version` (a holder whose lock lapsed must not kill a
   * newer token set); the marker expires by itself. False when the record moved.
   */
  async kill(keys: SessionKeys, version: number): Promise<boolean> {
    const written = await this.kv.compareAndSet(keys.tokensKey, version, `${version + 1}|${DEAD}`, TOMBSTONE_MS);
    // The session is over: its refresh count serves nothing more (it would otherwise hold its key for an hour).
    if (written) await this.kv.del(keys.rateKey).catch(() => undefined);
    return this.settled(keys, written);
  }

  async remove(keys: SessionKeys): Promise<void> {
    await this.kv.del(keys.tokensKey, keys.lockKey, keys.rateKey);
    await this.cache.changed(keys.hash);
  }

  /**
   * After a compare-and-set: written, every replica drops what it read before (not awaited: their copy still
   * holds a valid access token, and their next refresh reads the record again under the lock); refused,
   * the record moved under a read of this replica, which is dropped here (the writer announced its change).
   */
  private settled(keys: SessionKeys, written: boolean): boolean {
    if (written) void this.cache.changed(keys.hash);
    else this.cache.drop(keys.hash);
    return written;
  }
}
