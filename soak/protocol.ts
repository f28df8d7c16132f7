/**
 * What the soak's processes tell each other over their IPC channels: calls from the orchestrator to a child
 * (`{id, call, args}` answered by `{id, result}` or `{id, error}`), and events a child sends by itself.
 */
import type { ChildProcess } from 'node:child_process';

/** A fault of the IdP, applied in front of it (the fault proxy). */
export type IdpFault =
  | { kind: 'none' }
  /** every request answered 503 temporarily_unavailable */
  | { kind: '503' }
  /** every request waits `ms` before it reaches the IdP */
  | { kind: 'slow'; ms: number }
  /** every request's connection is reset (TCP RST) */
  | { kind: 'reset' }
  /** nothing listens: connections are refused, open ones cut */
  | { kind: 'down' };

/** A fault of the upstream API. */
export type UpstreamFault = { kind: 'none' } | { kind: 'down' } | { kind: 'slow'; ms: number };

/** Where to hold a refresh grant of the replica about to be killed: before the IdP sees it, or after it answered. */
export type HoldPhase = 'before' | 'after';

export interface KillReport {
  pid: number;
  /** refresh grants of the replica under way at the kill (held, at the IdP, or answered in the last second) */
  inFlight: number;
  /** held before the IdP and dropped: the IdP never saw them (no rotation, nothing lost) */
  droppedBeforeIdp: number;
  /** rotated by the IdP, the answer never delivered: the replica died with the only copy of the new token */
  lostRotations: number;
  /** answered in the second before the kill: stored, or lost with the replica */
  answeredJustBefore: number;
  /** sent by the replica before it died, read by the proxy after: in flight too */
  arrivedAfterTheKill: number;
}

export interface IdpStats {
  tokenRequests: Record<string, number>;
  logins: number;
  refresh: {
    /** refresh grants that arrived at the fault proxy */
    attempts: number;
    /** of those, forwarded to the IdP */
    forwarded: number;
    ok: number;
    /** the first token for the API after a login (one per session) */
    initial: number;
    /** a token refreshed in its own right: its predecessor's expiry (however early, listed in `early`) */
    due: number;
    /** a grant right after another of the same session (under a second): a second grant for one expiry */
    atOnce: number;
    /** never reached the IdP, by why: 503 burst, reset, down, client gone while waiting, dropped at a kill */
    failedBeforeIdp: Record<string, number>;
    /** answered by the IdP with an error, by error and cause */
    idpErrors: Record<string, number>;
    invalidGrant: {
      revokedOnPurpose: number;
      afterGatewayRevoked: number;
      afterReuse: number;
      killPhysics: number;
      unexplained: number;
    };
    /** refresh tokens the IdP received more than once: after a kill lost their rotation, and otherwise */
    sentTwice: { killPhysics: number; other: number };
    /** rotations whose answer could not be delivered (the replica was gone) */
    lostRotations: number;
    /** most grants one session got for one access-token expiry */
    maxGrantsPerExpiry: number;
    /** grants that came before their nominal refresh point, by how much */
    early: Record<string, number>;
    /** when the grants more than 1.5 s early came (epoch ms) */
    earlyAt: number[];
  };
  /** the proxy's event-loop delay: its timestamps are this exact */
  lagMs?: { p99: number; max: number };
  revocationRequests: number;
  kills: KillReport[];
  /**
   * accounts whose rotated refresh token never reached the replica that asked, and when (epoch ms): it was
   * killed, or (a finding) went away otherwise
   */
  exposures: Array<{ sub: string; at: number; cause: 'kill' | 'answer lost' }>;
  /** refresh tokens the IdP saw reused (and revoked the grant for): whose, when, from which pid, why */
  reuses: Array<{ sub: string; at: number; pid: number | undefined; cause: string }>;
  /** details of anything unexplained (reuse, invalid_grant), for the report */
  anomalies: string[];
  faultAnswers: Record<string, number>;
}

/** One call over IPC; resolves with the child's answer. */
export function rpcClient(proc: ChildProcess): {
  call<T>(call: string, args?: unknown): Promise<T>;
  onEvent(f: (e: IpcEvent) => void): void;
} {
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const listeners: Array<(e: IpcEvent) => void> = [];
  proc.on('message', (m: { id?: number; result?: unknown; error?: string; event?: string }) => {
    if (m.event !== undefined) {
      for (const f of listeners) f(m as IpcEvent);
      return;
    }
    if (m.id === undefined) return;
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error !== undefined) p.reject(new Error(m.error));
    else p.resolve(m.result);
  });
  proc.once('exit', () => {
    for (const p of pending.values()) p.reject(new Error('the child process exited'));
    pending.clear();
  });
  return {
    call<T>(call: string, args?: unknown): Promise<T> {
      const id = ++next;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        proc.send({ id, call, args });
      });
    },
    onEvent(f) {
      listeners.push(f);
    },
  };
}

export interface IpcEvent {
  event: string;
  [k: string]: unknown;
}

/** The child's side: answers calls with `handlers`. */
export function rpcServer(handlers: Record<string, (args: never) => unknown>): void {
  process.on('message', (m: { id?: number; call?: string; args?: unknown }) => {
    if (m.id === undefined || m.call === undefined) return;
    const h = handlers[m.call];
    const reply = (x: object) => process.send?.({ id: m.id, ...x });
    if (!h) {
      reply({ error: `unknown call ${m.call}` });
      return;
    }
    Promise.resolve()
      .then(() => h(m.args as never))
      .then(
        (result) => reply({ result: result ?? null }),
        (err: unknown) => reply({ error: err instanceof Error ? err.message : String(err) }),
      );
  });
}

export function emit(event: string, data: object = {}): void {
  process.send?.({ event, ...data });
}
