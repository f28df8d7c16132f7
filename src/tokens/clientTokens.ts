/**
 * The gateway's own access tokens, for routes with `"token": "client"`: the client credentials grant
 * (RFC 6749 §4.4) with the route's resource and scope, shared by every browser and every replica. A token
 * is kept sealed in the store (one record per audience), remembered here until its refresh point, and
 * obtained once per expiry across replicas: one replica takes the audience's lock and asks the IdP; the
 * others wait for the record it writes. While it is still good to send, a token due for refresh is sent and
 * refreshed in the background; no call waits for the IdP then.
 */
import type { Kv } from '../store/kv';
import type { Logger } from '../log/logger';
import type { Idp } from '../idp/idp';
import type { Keyring } from '../session/keyring';
import type { Audience } from '../api/routes';
import { open, randomId, seal } from '../crypto/seal';
import { classifyRefreshError } from '../idp/classify';
import { accessTokenFrom, type AccessToken, type TokenTiming } from './vault';
import { bearer, type AccessResult } from './refresh';
import { fallback, plan } from './refreshRules';
import { newDpopKey, type DpopJwk } from './dpop';

/** A stored client token, with the private key it is bound to when it is a DPoP token. */
type ClientToken = AccessToken & { dpopKey?: DpopJwk };

export interface ClientTokensOptions {
  kv: Kv;
  keyring: Keyring;
  idp: Idp;
  log: Logger;
  now: () => number;
  timing: TokenTiming;
  /** How long a call waits for another replica's grant before answering 503. */
  lockWaitMs: number;
  /** RFC 9449: each grant gets a new key pair, stored sealed with the token it is bound to. */
  dpop: boolean;
  onGrant?: (outcome: 'ok' | 'failed') => void;
}

const LOCK_LEASE_MS = 10_000;
/** A failed grant is not tried again sooner than this (an IdP that is failing is not hammered). */
const COOLDOWN_MS = 1000;
const RETRY_AFTER_SECONDS = 1;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class ClientTokens {
  /** By audience key: the token read or obtained last. */
  private readonly known = new Map<string, ClientToken>();
  private readonly inflight = new Map<string, Promise<AccessResult>>();
  private readonly failedAt = new Map<string, number>();

  private readonly kv: Kv;
  private readonly keyring: Keyring;
  private readonly idp: Idp;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly timing: TokenTiming;
  private readonly lockWaitMs: number;
  private readonly dpop: boolean;
  private readonly onGrant: ClientTokensOptions['onGrant'];

  constructor(o: ClientTokensOptions) {
    this.kv = o.kv;
    this.keyring = o.keyring;
    this.idp = o.idp;
    this.log = o.log;
    this.now = o.now;
    this.timing = o.timing;
    this.lockWaitMs = o.lockWaitMs;
    this.dpop = o.dpop;
    this.onGrant = o.onGrant;
  }

  async accessToken(audience: Audience): Promise<AccessResult> {
    const now = this.now();
    let token = this.known.get(audience.key);
    if (!token || now >= token.refreshAt) {
      token = (await this.read(audience)) ?? token;
      if (token) this.known.set(audience.key, token);
    }
    const next = token ? plan(token, now) : 'refresh';
    if (next === 'refresh' || !token) return this.flight(audience);
    // Still good to send: no call waits for the IdP; the grant runs behind it.
    if (next === 'send-and-refresh') void this.flight(audience).catch(() => undefined);
    return bearer(token, token.dpopKey);
  }

  private flight(audience: Audience): Promise<AccessResult> {
    let flight = this.inflight.get(audience.key);
    if (!flight) {
      flight = this.obtain(audience).finally(() => this.inflight.delete(audience.key));
      this.inflight.set(audience.key, flight);
    }
    return flight;
  }

  private keys(audience: Audience): { record: string; lock: string; sealKey: ReturnType<Keyring['forRandom']>['sealKey'] } {
    const { key, sealKey } = this.keyring.forRandom('client-token', audience.key);
    return { record: key, lock: `${key}:lock`, sealKey };
  }

  private async read(audience: Audience): Promise<ClientToken | undefined> {
    const { record, sealKey } = this.keys(audience);
    const sealed = await this.kv.get(record);
    const json = sealed === null ? undefined : open(sealKey, sealed, record);
    return json === undefined ? undefined : (JSON.parse(json) as ClientToken);
  }

  /** One grant across replicas: under the audience's lock, or the result of the replica holding it. */
  private async obtain(audience: Audience): Promise<AccessResult> {
    const { kv, now } = this;
    const { record, lock, sealKey } = this.keys(audience);
    const unavailable: AccessResult = { kind: 'unavailable', retryAfterSeconds: RETRY_AFTER_SECONDS };
    const deadline = now() + this.lockWaitMs;
    const owner = randomId();
    for (let pause = 20; ; pause = Math.min(pause * 2, 200)) {
      const current = await this.read(audience);
      if (current && now() < current.refreshAt) {
        this.known.set(audience.key, current);
        return bearer(current, current.dpopKey);
      }
      if (now() - (this.failedAt.get(audience.key) ?? -Infinity) < COOLDOWN_MS) return this.fallback(current) ?? unavailable;
      if (await kv.setIfAbsent(lock, owner, LOCK_LEASE_MS)) {
        try {
          // Another replica may have stored a token and let go of the lock between our read and our lock:
          // read again under the lock, so one expiry costs one grant.
          const latest = (await this.read(audience)) ?? current;
          if (latest && now() < latest.refreshAt) {
            this.known.set(audience.key, latest);
            return bearer(latest, latest.dpopKey);
          }
          return await this.grant(audience, record, sealKey, latest);
        } finally {
          void kv.releaseLock(lock, owner).catch(() => undefined);
        }
      }
      if (now() > deadline) return this.fallback(current) ?? unavailable;
      await sleep(pause);
    }
  }

  private async grant(audience: Audience, record: string, sealKey: Parameters<typeof seal>[0], current: ClientToken | undefined) {
    const { idp, log, now, kv } = this;
    const sentAt = now();
    try {
      const dpop = this.dpop ? await newDpopKey() : undefined;
      const token: ClientToken = {
        ...accessTokenFrom(await idp.clientCredentials(audience, dpop?.key), sentAt, this.timing),
        ...(dpop && { dpopKey: dpop.jwk }),
      };
      // Kept until the token ends: a replica reading it later decides by its times.
      await kv.set(record, seal(sealKey, JSON.stringify(token), record), Math.max(1000, token.expiresAt - now()));
      this.known.set(audience.key, token);
      this.failedAt.delete(audience.key);
      this.onGrant?.('ok');
      return bearer(token, token.dpopKey);
    } catch (err) {
      this.failedAt.set(audience.key, now());
      this.onGrant?.('failed');
      log.warn(
        { err, route: audience.route, resource: audience.resource, scope: audience.scope, failure: classifyRefreshError(err) },
        'client credentials grant failed',
      );
      return this.fallback(current) ?? ({ kind: 'unavailable', retryAfterSeconds: RETRY_AFTER_SECONDS } satisfies AccessResult);
    }
  }

  /** The current token while it may still be sent. */
  private fallback(current: ClientToken | undefined): AccessResult | undefined {
    return current && fallback(current, this.now()) === 'send' ? bearer(current, current.dpopKey) : undefined;
  }
}
