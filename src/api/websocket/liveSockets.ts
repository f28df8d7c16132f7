/**
 * The open WebSockets of this replica, each tied to its session for as long as it is open. A socket is
 * checked after the handshake too, which is what a plain proxy never does (a socket outliving its logout):
 *
 * - Every change to a session, made here or announced by another replica (the announcements the session
 *   cache uses), re-reads it; a session that is gone (logout in any tab, the kill switch, back-channel
 *   logout, invalid_grant) closes its sockets with 1008 `session_ended` within moments.
 * - A timer per session, at the earliest of its absolute end, its idle end and its access token's refresh
 *   point: the ends close the sockets on time (not at the next expiry sweep); the refresh point refreshes the
 *   token under the usual exactly-once rules, so a grant revoked at the IdP is noticed without any HTTP call.
 * - What the browser sends is activity: the idle window slides at the usual cadence (one write per tenth of
 *   the window at most); what the upstream sends is not, so a socket nobody uses lets its session end.
 * - While announcements cannot be received, nothing can be checked: every session's sockets are closed
 *   (1011) and new ones refused, until the subscription is back (fail closed).
 */
import type { SessionData } from 'express-session';
import type { Logger } from '../../log/logger';
import { StoreUnavailableError } from '../../store/kv';
import type { SocketCloseReason } from '../../health/metrics';
import type { HttpRequest } from '../../http/exchange';
import type { SessionKeys } from '../../session/keyring';
import { retire, slideIdle, type Lifecycle } from '../../session/lifecycle';
import type { ChangeWatcher } from '../../session/sessionCache';
import type { GatehouseSession } from '../../session/sessionData';
import type { TokenService } from '../../tokens/refresh';
import { CLOSE, type Relay } from './relay';

/** A session's place on this replica, taken before its socket's handshake with the upstream. */
export interface SocketTicket {
  /** The socket is open: it lives with the session from now on (closed at once if the session ended meanwhile). */
  open(relay: Relay): void;
  /** The browser sent something on the socket. */
  activity: () => void;
  /** The socket closed, or its handshake failed: the place is given back. */
  release(): void;
}

export interface LiveSocketsDeps {
  lifecycle: Lifecycle;
  tokens: TokenService;
  log: Logger;
  /** Open sockets per session on this replica. */
  perSession: number;
}

/** Retry a check that could not read the session (Redis down) after this long; the sockets stay meanwhile. */
const RETRY_CHECK_MS = 1000;
/** How long shutdown waits for the sockets it closed (their close deadline, and a little more). */
const SHUTDOWN_WAIT_MS = 1500;
/** A timer never fires sooner than this after the previous check (a refresh the IdP keeps refusing). */
const MIN_CHECK_GAP_MS = 1000;

export class LiveSockets implements ChangeWatcher {
  private readonly watches = new Map<string, SessionWatch>();
  /** Sockets of routes that need no session (`none`, or `optional` without one): they are not checked. */
  private readonly unbound = new Set<Relay>();
  private receiving = false;
  private shuttingDown = false;

  constructor(private readonly d: LiveSocketsDeps) {}

  /** False while announcements cannot be received: sockets of a session cannot be checked, so none opens. */
  get checkable(): boolean {
    return this.receiving && !this.shuttingDown;
  }

  /**
   * A place for one more socket of the `owner` session (undefined when it has its maximum), or, without one, of
   * a socket that is not checked.
   */
  reserve(owner?: { req: HttpRequest; keys: SessionKeys; session: GatehouseSession }): SocketTicket | undefined {
    if (!owner) {
      let socket: Relay | undefined;
      return {
        open: (relay) => {
          socket = relay;
          if (this.shuttingDown) return relay.close(CLOSE.goingAway, 'shutdown', 'shutdown');
          this.unbound.add(relay);
        },
        activity: () => undefined,
        release: () => void (socket && this.unbound.delete(socket)),
      };
    }
    let watch = this.watches.get(owner.keys.hash);
    if (!watch) {
      watch = new SessionWatch(this.d, owner.req, owner.keys, owner.session, () => this.watches.delete(owner.keys.hash));
      this.watches.set(owner.keys.hash, watch);
    }
    return watch.reserve();
  }

  changed(hash: string): void {
    this.watches.get(hash)?.check();
  }

  listening(listening: boolean): void {
    this.receiving = listening;
    if (listening) return;
    for (const watch of this.watches.values()) watch.closeAll(CLOSE.internalError, 'session_unchecked', 'unchecked');
  }

  /**
   * Graceful shutdown, at the end of the drain: every socket gets 1001 going away and no new one opens.
   * Resolves when they have closed (a close takes a second at most).
   */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const relay of this.unbound) relay.close(CLOSE.goingAway, 'shutdown', 'shutdown');
    for (const watch of this.watches.values()) watch.closeAll(CLOSE.goingAway, 'shutdown', 'shutdown');
    const until = performance.now() + SHUTDOWN_WAIT_MS;
    while (this.open > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
  }

  get open(): number {
    let n = this.unbound.size;
    for (const watch of this.watches.values()) n += watch.size;
    return n;
  }
}

/** One session's sockets on this replica. */
class SessionWatch {
  private readonly relays = new Set<Relay>();
  /** Handshakes under way. */
  private pending = 0;
  private ended = false;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private checkAgain = false;
  private sliding = false;
  private lastCheck = -Infinity;
  private readonly step: number;

  constructor(
    private readonly d: LiveSocketsDeps,
    /** The upgrade request: its session (id, cookie) is what the idle slide writes. */
    private readonly req: HttpRequest,
    private readonly keys: SessionKeys,
    private session: GatehouseSession,
    private readonly onEmpty: () => void,
  ) {
    this.step = d.lifecycle.idleMs / 10;
  }

  get size(): number {
    return this.relays.size;
  }

  reserve(): SocketTicket | undefined {
    if (this.relays.size + this.pending >= this.d.perSession) return undefined;
    this.pending++;
    let socket: Relay | undefined;
    let released = false;
    return {
      open: (relay) => {
        if (socket || released) return;
        socket = relay;
        this.pending--;
        this.relays.add(relay);
        if (this.ended) return relay.close(CLOSE.policyViolation, 'session_ended', 'session_ended');
        // The first socket learns when the token is due; the others share its timer.
        if (this.relays.size === 1) this.check();
      },
      activity: () => this.activity(),
      release: () => {
        if (released) return;
        released = true;
        if (socket) this.relays.delete(socket);
        else this.pending--;
        this.leaveIfEmpty();
      },
    };
  }

  /** The browser sent something: the idle window slides, at most once per step. */
  activity(): void {
    if (this.sliding || this.ended || this.d.lifecycle.now() - this.session.activeAt < this.step) return;
    this.sliding = true;
    slideIdle(this.req, this.d.lifecycle, this.session)
      .then((slid) => {
        this.session = slid;
        this.schedule();
      })
      .catch((err: unknown) =>
        this.d.log.warn({ err, session: this.keys.hash }, 'could not record WebSocket activity; the next message tries again'),
      )
      .finally(() => (this.sliding = false));
  }

  /** Re-reads the session (one check at a time; a change during one causes another). */
  check(): void {
    if (this.checking) {
      this.checkAgain = true;
      return;
    }
    this.checking = this.verify()
      .catch((err: unknown) => {
        this.d.log.warn({ err, session: this.keys.hash }, 'could not check a WebSocket’s session; trying again');
        this.schedule(RETRY_CHECK_MS);
      })
      .finally(() => {
        this.checking = undefined;
        if (this.checkAgain && !this.ended) {
          this.checkAgain = false;
          this.check();
        }
      });
  }

  closeAll(code: number, reason: string, why: SocketCloseReason): void {
    for (const relay of this.relays) relay.close(code, reason, why);
  }

  private async verify(): Promise<void> {
    const { lifecycle } = this.d;
    this.lastCheck = lifecycle.now();
    const sess = await new Promise<SessionData | null | undefined>((resolve, reject) =>
      lifecycle.store.get(this.req.sessionID, (err, s) =>
        err ? reject(err instanceof Error ? err : new StoreUnavailableError(err)) : resolve(s),
      ),
    );
    const stored = sess?.gatehouse;
    const now = lifecycle.now();
    if (!stored || now >= stored.absoluteExpiresAt || now >= Math.max(stored.activeAt, this.session.activeAt) + lifecycle.idleMs)
      return this.end();
    this.session = { ...stored, activeAt: Math.max(stored.activeAt, this.session.activeAt) };
    const entry = await lifecycle.vault.readFor(stored, this.keys);
    if (!entry) return this.end();
    if (entry.dead) return this.endSession('invalid_grant');
    if (now >= entry.tokens.refreshAt) {
      // Due: refreshed as for any call (a background refresh while the token is still good). Its outcome is
      // a change to the session, which brings the next check.
      const result = await this.d.tokens.accessToken(this.keys, stored);
      if (result.kind === 'gone') return this.end();
      if (result.kind === 'session-expired') return this.endSession(result.reason ?? 'invalid_grant');
    }
    this.schedule(undefined, entry.tokens.refreshAt);
  }

  /** Sets the timer to the earliest end or refresh point (or `inMs`), never closer than the minimum gap. */
  private schedule(inMs?: number, refreshAt?: number): void {
    if (this.ended) return;
    clearTimeout(this.timer);
    const now = this.d.lifecycle.now();
    const at = Math.min(this.session.absoluteExpiresAt, this.session.activeAt + this.d.lifecycle.idleMs, refreshAt ?? Infinity);
    const wait = inMs ?? Math.max(at - now, this.lastCheck + MIN_CHECK_GAP_MS - now, 0);
    this.timer = setTimeout(() => this.check(), Math.min(wait, 2 ** 31 - 1)).unref();
  }

  /** The grant is dead: the session ends here as a call's would (records gone), then its sockets. */
  private async endSession(reason: 'invalid_grant' | 'anomaly'): Promise<void> {
    const { lifecycle } = this.d;
    await retire(lifecycle, this.keys, this.session, { keepTokenRecord: true });
    await new Promise<void>((resolve) => lifecycle.store.destroy(this.req.sessionID, () => resolve()));
    lifecycle.metrics.sessionEnded(reason);
    this.end();
  }

  private end(): void {
    this.ended = true;
    clearTimeout(this.timer);
    this.closeAll(CLOSE.policyViolation, 'session_ended', 'session_ended');
    this.leaveIfEmpty();
  }

  private leaveIfEmpty(): void {
    if (this.relays.size > 0 || this.pending > 0) return;
    clearTimeout(this.timer);
    this.onEmpty();
  }
}
