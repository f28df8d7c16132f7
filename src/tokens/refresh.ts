/**
 * Refresh, exactly once: however many requests of one session arrive together, on however many
 * replicas sharing one Redis, one expiring access token causes exactly one refresh grant.
 *
 *  1. In a process, requests of one session share one promise (single flight).
 *  2. Across replicas, a Redis lock `SET NX PX` with an owner token and a lease renewed while the IdP
 *     answers, so a slow IdP never lets a second refresher in (oauth2-proxy PR #3456).
 *  3. After taking the lock, re-read the record: another replica may have refreshed already
 *     (Duende Support #1286). Waiters poll the record and reuse the winner's result.
 *  4. RFC 6749 §6: the rotated refresh token is stored by compare-and-set before the new access
 *     token is used, and the old one is never sent again.
 *  5. Only `invalid_grant` ends the session, and only after re-reading shows nobody rotated the token
 *     meanwhile. Every other failure keeps it: the still-valid access token is used, else 503.
 *
 * Expected outcomes are values, not exceptions: callers switch on AccessResult.kind.
 */
import { StoreUnavailableError, type Kv } from '../store/kv';
import type { Logger } from '../log/logger';
import type { Idp, TokenSet } from '../idp/idp';
import { classifyRefreshError } from '../idp/classify';
import { RefreshResponseRejected } from '../idp/idp';
import { randomId } from '../crypto/seal';
import type { SessionKeys } from '../session/keyring';
import type { GatehouseSession } from '../session/sessionData';
import type { RevokeLater } from '../idp/revoker';
import { accessTokenFrom, tokensFrom, usable, type AccessToken, type TokenTiming, type Tokens, type Vault, type VaultEntry } from './vault';
import type { Audience } from '../api/routes';
import { dpopKey, type DpopJwk } from './dpop';
import { afterFailure, fallback, namesAnotherUser, plan, settles } from './refreshRules';

export type AccessResult =
  /** `dpop`: the token is DPoP-bound (RFC 9449): sent with a proof of this key. */
  | { kind: 'bearer'; accessToken: string; dpop?: DpopJwk }
  /**
   * The grant is dead (invalid_grant, or a refreshed ID token for someone else), or the session was ended as
   * an anomaly (`reason`): the session is over.
   */
  | { kind: 'session-expired'; reason?: 'anomaly' }
  /** No token record: the session ended elsewhere (logout on another tab or replica). */
  | { kind: 'gone' }
  /** The IdP could not refresh an already expired token; the session is kept. */
  | { kind: 'unavailable'; retryAfterSeconds: number };

/** foreground: a call waits for the refresh (its token is inside the margin); background: none does. */
export type RefreshMode = 'foreground' | 'background';

export interface RefreshEvents {
  /**
   * Called once per refresh grant sent, with its outcome, how long the IdP took, and whether a call waited
   * for it (foreground) or went on with the current token (background).
   */
  onRefresh?(outcome: 'ok' | 'invalid_grant' | 'transient' | 'race_recovered', seconds: number, mode: RefreshMode): void;
  /** A request found another replica refreshing and waited for it; or gave up waiting. */
  onLockWait?(): void;
  onLockTimeout?(): void;
  /** A refresh grant failed for another reason than invalid_grant (the kind from classifyRefreshError). */
  onIdpError?(kind: string): void;
  /** A session refreshed more often than the anomaly bound allows (a sign of a stolen refresh token). */
  onAnomaly?(): void;
}

export interface TokenServiceOptions {
  kv: Kv;
  vault: Vault;
  idp: Idp;
  log: Logger;
  now: () => number;
  timing: TokenTiming;
  /** How long one refresh may hold the lock before renewing it. */
  lockLeaseMs: number;
  /** How long a request waits for another replica's refresh before giving up (then the current token while it is valid, else 503). */
  lockWaitMs: number;
  events?: RefreshEvents;
  /**
   * RFC 7009: revokes, in the background, a refresh token the IdP issued for a session that ended while the
   * grant was under way (logout racing a refresh, or a refresh whose answer ended the session).
   */
  revokeLater?: RevokeLater;
  /** More refreshes than `perHour` by one session in an hour is a security event; `endSession` also ends it. */
  anomaly?: { perHour: number; endSession: boolean };
}

const RETRY_AFTER_SECONDS = 1;
/**
 * After a transient failure the lock slot holds this marker for the Retry-After period: every request of
 * the session, on every replica, degrades at once (the current token while it is valid, or 503) instead of sending the IdP another
 * grant: an IdP that is failing is not hammered. The next request after it retries.
 */
const COOLDOWN = 'cooldown';
const COOLDOWN_MS = RETRY_AFTER_SECONDS * 1000;
/** How long storing rotated tokens may be retried on the request's path (Redis commands time out by themselves). */
const STORE_RETRY_MS = 500;
/** Background attempts (one a second) after that, while Redis is unreachable. */
const STORE_BACKGROUND_ATTEMPTS = 30;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** The token to send; a DPoP-bound one with the session's key. */
export const bearer = (t: AccessToken, key: DpopJwk | undefined): AccessResult =>
  t.dpop && key ? { kind: 'bearer', accessToken: t.accessToken, dpop: key } : { kind: 'bearer', accessToken: t.accessToken };
/** An audience's access token before the first was obtained: due, and not usable. */
const NONE_YET: AccessToken = { accessToken: '', expiresAt: 0, refreshAt: 0, usableUntil: 0 };
/** The access token `audience` names in a record (without one, the login's); NONE_YET before its first grant. */
const tokenFor = (tokens: Tokens, audience: Audience | undefined): AccessToken =>
  audience ? (tokens.audiences?.[audience.key] ?? NONE_YET) : tokens;
const holderOf = (keys: SessionKeys, session: GatehouseSession) => ({ iss: session.iss, sub: session.sub, session: keys.hash });

export class TokenService {
  private readonly inflight = new Map<string, Promise<AccessResult>>();

  private readonly kv: Kv;
  private readonly vault: Vault;
  private readonly idp: Idp;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly timing: TokenTiming;
  private readonly lockLeaseMs: number;
  private readonly lockWaitMs: number;
  private readonly events: RefreshEvents | undefined;
  private readonly revokeLater: RevokeLater | undefined;
  private readonly anomaly: TokenServiceOptions['anomaly'];

  constructor(o: TokenServiceOptions) {
    this.kv = o.kv;
    this.vault = o.vault;
    this.idp = o.idp;
    this.log = o.log;
    this.now = o.now;
    this.timing = o.timing;
    this.lockLeaseMs = o.lockLeaseMs;
    this.lockWaitMs = o.lockWaitMs;
    this.events = o.events;
    this.revokeLater = o.revokeLater;
    this.anomaly = o.anomaly;
  }

  /**
   * The access token to send upstream. Within the skew of its end it is refreshed: in the background while
   * it is still outside the margin (this call goes on with it at once), else first, this call waiting.
   */
  async accessToken(keys: SessionKeys, session: GatehouseSession, audience?: Audience): Promise<AccessResult> {
    const entry = await this.vault.readFor(session, keys);
    if (!entry) return { kind: 'gone' };
    if (entry.dead) return { kind: 'session-expired' };
    const token = tokenFor(entry.tokens, audience);
    const next = plan(token, this.now());
    if (next === 'send') return bearer(token, entry.tokens.dpopKey);
    // Still good to send: no call waits for the IdP. The refresh is the same single flight (and the same
    // lock across replicas) that a call inside the margin joins and waits for; a failure keeps the session
    // and the current token, and the next call inside the window tries again (after the cooldown).
    if (next === 'send-and-refresh') {
      this.flight(keys, session, entry, 'background', undefined, audience).catch((err: unknown) =>
        this.log.warn({ err, session: keys.hash }, 'background refresh failed; the next call tries again'),
      );
      return bearer(token, entry.tokens.dpopKey);
    }
    return this.flight(keys, session, entry, 'foreground', undefined, audience);
  }

  /**
   * A replacement for an access token the upstream rejected (401 invalid_token: revoked early, or replaced
   * at the IdP): the stored token when another request already replaced it, else one refresh under the same
   * exactly-once rules (many requests rejected with one token cause one grant, on however many replicas).
   * Never the rejected token again: a refresh that cannot happen is `unavailable`.
   */
  async replacement(keys: SessionKeys, session: GatehouseSession, rejected: string, audience?: Audience): Promise<AccessResult> {
    const entry = await this.vault.read(keys);
    if (!entry) return { kind: 'gone' };
    if (entry.dead) return { kind: 'session-expired' };
    const token = tokenFor(entry.tokens, audience);
    if (token !== NONE_YET && token.accessToken !== rejected) return bearer(token, entry.tokens.dpopKey);
    const result = await this.flight(keys, session, entry, 'foreground', rejected, audience);
    return result.kind === 'bearer' && result.accessToken === rejected
      ? { kind: 'unavailable', retryAfterSeconds: RETRY_AFTER_SECONDS }
      : result;
  }

  /**
   * This process's one refresh of the session, started by the first call that needs it. `rejected`: the
   * upstream refused this access token, so only a different one settles the refresh.
   */
  private flight(
    keys: SessionKeys,
    session: GatehouseSession,
    entry: VaultEntry & { dead: false },
    mode: RefreshMode,
    rejected?: string,
    audience?: Audience,
  ): Promise<AccessResult> {
    // One flight per token in this process; the lock below is per session, so the refreshes of one session's
    // audiences run one after another across replicas (they share one refresh token).
    const id = audience ? `${keys.tokensKey} ${audience.key}` : keys.tokensKey;
    let flight = this.inflight.get(id);
    if (!flight) {
      flight = this.refreshAcrossReplicas(keys, session, entry.version, mode, rejected, audience)
        .catch((err: unknown) => {
          // A store that cannot coordinate a refresh (a Sentinel failover, Redis away) keeps the session,
          // and the current access token is used while it is still valid.
          const token = tokenFor(entry.tokens, audience);
          if (err instanceof StoreUnavailableError && usable(token, this.now())) return bearer(token, entry.tokens.dpopKey);
          throw err;
        })
        .finally(() => this.inflight.delete(id));
      this.inflight.set(id, flight);
    }
    return flight;
  }

  /** Number of refreshes this process is running or waiting on (for graceful shutdown). */
  get pending(): number {
    return this.inflight.size;
  }

  /** `due` is the version of the record found due for refresh: any newer record is another request's result. */
  private async refreshAcrossReplicas(
    keys: SessionKeys,
    session: GatehouseSession,
    due: number,
    mode: RefreshMode,
    rejected: string | undefined,
    audience: Audience | undefined,
  ): Promise<AccessResult> {
    const { kv, vault, now } = this;
    const owner = randomId();
    const deadline = now() + this.lockWaitMs;
    let pause = 20;
    for (;;) {
      if (await kv.setIfAbsent(keys.lockKey, owner, this.lockLeaseMs)) {
        try {
          return await this.refreshHoldingLock(keys, session, owner, due, mode, rejected, audience);
        } finally {
          // Not awaited: a stalled store must not hold the answer (the lock expires by itself), and the
          // release is queued behind the token write on the same connection, so it never overtakes it.
          void kv
            .releaseLock(keys.lockKey, owner)
            .catch((err: unknown) => this.log.warn({ err }, 'could not release refresh lock; it expires by itself'));
        }
      }
      // Another replica is refreshing this session: wait for its result and reuse it.
      if (pause === 20) this.events?.onLockWait?.();
      await sleep(pause);
      pause = Math.min(pause * 2, 200);
      const cur = await vault.read(keys);
      const settled = this.settled(cur, due, rejected, audience);
      if (settled) return settled;
      if ((await kv.get(keys.lockKey)) === COOLDOWN) return this.degrade((cur as VaultEntry & { dead: false }).tokens, rejected, audience);
      if (now() > deadline) {
        this.log.warn({ session: keys.hash }, 'gave up waiting for another replica to refresh');
        this.events?.onLockTimeout?.();
        return this.degrade((cur as VaultEntry & { dead: false }).tokens, rejected, audience);
      }
    }
  }

  /**
   * The outcome visible in a record without refreshing: gone, dead, a token that is still fresh, or
   * the result of a refresh that another request or replica completed after we found version `due` due.
   */
  private settled(entry: VaultEntry | null, due: number, rejected?: string, audience?: Audience): AccessResult | undefined {
    if (!entry) return { kind: 'gone' };
    if (entry.dead) return { kind: 'session-expired' };
    const token = tokenFor(entry.tokens, audience);
    // Waiters reuse the winner's result.
    return token !== NONE_YET && settles(token, entry.version, due, this.now(), rejected) ? bearer(token, entry.tokens.dpopKey) : undefined;
  }

  /** A failed refresh keeps the session; the current token is used while it is still valid (and not refused). */
  private degrade(tokens: Tokens, rejected?: string, audience?: Audience): AccessResult {
    const token = tokenFor(tokens, audience);
    return fallback(token, this.now(), rejected) === 'send'
      ? bearer(token, tokens.dpopKey)
      : { kind: 'unavailable', retryAfterSeconds: RETRY_AFTER_SECONDS };
  }

  private async refreshHoldingLock(
    keys: SessionKeys,
    session: GatehouseSession,
    owner: string,
    due: number,
    mode: RefreshMode,
    rejected: string | undefined,
    audience: Audience | undefined,
  ): Promise<AccessResult> {
    const { vault, idp, log, now } = this;
    // Re-read after taking the lock: the previous holder may have refreshed already (this token, or
    // another audience's: then the refresh token below is the one it rotated to).
    const cur = await vault.read(keys);
    const settled = this.settled(cur, due, rejected, audience);
    if (settled) return settled;
    const entry = cur as VaultEntry & { dead: false };
    const current = tokenFor(entry.tokens, audience);
    const sent = entry.tokens.refreshToken;
    if (!sent) {
      // No refresh token was issued (no offline_access): the session ends with its access token.
      return fallback(current, now(), rejected) === 'send' ? bearer(current, entry.tokens.dpopKey) : this.kill(keys, entry.version);
    }

    // RFC 9449 §5: a DPoP session proves its key on every refresh; the new access token is bound to it.
    const key = entry.tokens.dpopKey ? await dpopKey(entry.tokens.dpopKey) : undefined;
    const renew = setInterval(
      () => {
        this.kv.renewLock(keys.lockKey, owner, this.lockLeaseMs).catch(() => undefined);
      },
      Math.max(100, this.lockLeaseMs / 3),
    );
    let response: TokenSet;
    // Expiry counts from when the request was sent: never later than the IdP's own clock.
    const sentAt = now();
    try {
      response = await idp.refresh(sent, audience, key);
    } catch (err) {
      const failure = classifyRefreshError(err);
      const rotated = err instanceof RefreshResponseRejected ? err.rotatedRefreshToken : undefined;
      const seconds = (now() - sentAt) / 1000;
      const verdict = afterFailure(failure, audience !== undefined);
      if (verdict === 'end') {
        if (failure === 'foreign_issuer') {
          // openid-client caught the ID token of another issuer before we saw it.
          log.warn({ session: keys.hash }, 'refreshed ID token names another issuer or subject: ending the session');
          if (rotated) void this.revokeLater?.(rotated, undefined); // issued for someone else: never this user's shared grant
        } else {
          // The IdP refused this API's resource or scope; the refresh token it may have used up is never sent again.
          log.warn(
            { session: keys.hash, route: audience?.route, resource: audience?.resource, scope: audience?.scope, error: failure },
            'the IdP refused the token for a route: ending the session (check the route’s resource and scope)',
          );
        }
        this.events?.onRefresh?.('invalid_grant', seconds, mode);
        return this.kill(keys, entry.version);
      }
      if (verdict === 'end-unless-rotated') {
        // Before ending the session, check that nobody rotated the token while we asked.
        const again = await vault.read(keys);
        if (again && !again.dead && again.tokens.refreshToken !== sent) {
          this.events?.onRefresh?.('race_recovered', seconds, mode);
          return this.settled(again, entry.version, rejected, audience) ?? this.degrade(again.tokens, rejected, audience);
        }
        this.events?.onRefresh?.('invalid_grant', seconds, mode);
        log.info({ session: keys.hash }, 'refresh token rejected (invalid_grant): ending the session');
        return this.kill(keys, again?.version ?? entry.version);
      }
      this.events?.onRefresh?.('transient', seconds, mode);
      this.events?.onIdpError?.(failure);
      log.warn({ session: keys.hash, failure, err }, 'refresh failed; keeping the session');
      // Replaces our own lock only (owner-checked), so the release that follows leaves the marker in place.
      void this.kv.swapLock(keys.lockKey, owner, COOLDOWN, COOLDOWN_MS).catch(() => undefined);
      if (rotated) {
        // RFC 6749 §6: the IdP rotated the refresh token although the rest of its answer was refused. The old
        // one is superseded: keep the new one, with the access token we still have.
        const kept = await this.store(keys, session, entry.version, { ...entry.tokens, refreshToken: rotated });
        if (kept.kind !== 'bearer') return kept;
      }
      return this.degrade(entry.tokens, rejected, audience);
    } finally {
      clearInterval(renew);
    }

    if (namesAnotherUser(response.claims, session)) {
      log.warn({ session: keys.hash }, 'refreshed ID token names another issuer or subject: ending the session');
      this.events?.onRefresh?.('invalid_grant', (now() - sentAt) / 1000, mode);
      if (response.refreshToken) void this.revokeLater?.(response.refreshToken, undefined); // issued for someone else
      return this.kill(keys, entry.version);
    }
    // An audience's refresh replaces its own access token and the refresh token (rotated for all), nothing else.
    const token = accessTokenFrom(response, sentAt, this.timing);
    const tokens: Tokens = audience
      ? {
          ...entry.tokens,
          refreshToken: response.refreshToken ?? entry.tokens.refreshToken,
          audiences: { ...entry.tokens.audiences, [audience.key]: token },
        }
      : tokensFrom(response, sentAt, this.timing, entry.tokens);
    this.events?.onRefresh?.('ok', (now() - sentAt) / 1000, mode);
    const stored = await this.store(keys, session, entry.version, tokens, token);
    return stored.kind === 'bearer' ? this.checkRate(keys, entry.version + 1, stored) : stored;
  }

  /**
   * The anomaly signal: refreshes far more frequent than token lifetimes explain mean someone else holds
   * the session or its refresh token. Logged as a security event and counted; optionally the session ends.
   */
  private async checkRate(keys: SessionKeys, version: number, result: AccessResult): Promise<AccessResult> {
    const bound = this.anomaly?.perHour ?? 0;
    if (bound <= 0) return result;
    const report = async (): Promise<boolean> => {
      const count = await this.kv.countInWindow(keys.rateKey, 3_600_000).catch(() => 0);
      if (count <= bound) return false;
      this.log.warn(
        { event: 'refresh_anomaly', session: keys.hash, refreshesThisHour: count, bound },
        'security event: anomalous refresh rate',
      );
      this.events?.onAnomaly?.();
      return true;
    };
    // Only ending the session (opt-in) waits for the count; a report alone never delays the request.
    if (!this.anomaly?.endSession) {
      void report();
      return result;
    }
    if (!(await report())) return result;
    const ended = await this.kill(keys, version);
    return ended.kind === 'session-expired' ? { kind: 'session-expired', reason: 'anomaly' } : ended;
  }

  /**
   * RFC 6749 §6: the rotated refresh token replaces the old one atomically, keeping the record's TTL (only
   * the idle slide moves it). A store fault here would lose the only valid refresh token, so the write is
   * retried (a repeated compare-and-set is harmless: a timed-out one may still land), for at most
   * STORE_RETRY_MS on the request's path and then in the background.
   */
  private async store(
    keys: SessionKeys,
    session: GatehouseSession,
    version: number,
    tokens: Tokens,
    token: AccessToken = tokens,
  ): Promise<AccessResult> {
    const { log, now } = this;
    const giveUpAt = now() + STORE_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.tryStore(keys, session, version, tokens)) ?? bearer(token, tokens.dpopKey);
      } catch (err) {
        if (attempt >= 4 || now() >= giveUpAt) {
          log.error({ session: keys.hash, err }, 'could not store rotated tokens yet; retrying in the background');
          this.storeLater(keys, session, version, tokens);
          return bearer(token, tokens.dpopKey);
        }
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  /** One attempt; undefined when the tokens are stored (now or by an earlier attempt that landed late). */
  private async tryStore(keys: SessionKeys, session: GatehouseSession, version: number, tokens: Tokens): Promise<AccessResult | undefined> {
    const { vault } = this;
    if (await vault.write(keys, version, tokens, 'keep')) return undefined;
    const cur = await vault.read(keys);
    if (cur && !cur.dead && cur.tokens.refreshToken === tokens.refreshToken) {
      // An earlier attempt landed, but may not have reached the replicas (Sentinel): it must, or retry.
      await this.kv.durable();
      return undefined;
    }
    if (!cur || cur.dead) {
      // The session ended while the grant was under way (logout, kill): the refresh token just issued must
      // not outlive it at the IdP.
      if (tokens.refreshToken) void this.revokeLater?.(tokens.refreshToken, holderOf(keys, session));
      return !cur ? { kind: 'gone' } : { kind: 'session-expired' };
    }
    this.log.warn({ session: keys.hash }, 'token record changed during refresh; keeping the newer record');
    return undefined;
  }

  private storeLater(keys: SessionKeys, session: GatehouseSession, version: number, tokens: Tokens, attempt = 1): void {
    setTimeout(() => {
      this.tryStore(keys, session, version, tokens).catch((err: unknown) => {
        if (attempt < STORE_BACKGROUND_ATTEMPTS) this.storeLater(keys, session, version, tokens, attempt + 1);
        else this.log.error({ session: keys.hash, err }, 'gave up storing rotated tokens; the next refresh will fail');
      });
    }, 1000).unref();
  }

  private async kill(keys: SessionKeys, version: number): Promise<AccessResult> {
    if (await this.vault.kill(keys, version)) return { kind: 'session-expired' };
    // The record moved since we read it (our lock lapsed and another holder wrote): its state decides.
    const cur = await this.vault.read(keys);
    return this.settled(cur, version) ?? { kind: 'session-expired' };
  }
}
