/**
 * The fault schedule: one cycle of every fault, in an order that alternates the parts that fail (a replica,
 * the IdP, Redis, the upstream), repeated for as long as the soak runs, with a quiet gap after each fault in
 * which recovery is measured. Each fault records when it began and ended.
 */

export type FaultKind =
  | 'kill-after'
  | 'kill-before'
  | 'redis-pause'
  | 'redis-restart'
  | 'redis-wipe'
  | 'idp-503'
  | 'idp-slow'
  | 'idp-reset'
  | 'idp-down'
  | 'upstream-down'
  | 'upstream-slow';

/**
 * `seconds`: how long the fault lasts, about; `quiet`: the quiet after it, in which recovery is measured (longer
 * after the faults that send every browser to its longest backoff or to a new login).
 */
export const FAULTS: Record<FaultKind, { label: string; short: string; seconds: number; quiet?: number }> = {
  'kill-after': { label: 'replica SIGKILL after the IdP rotated its refresh token, then restart', short: 'kill, rotated', seconds: 7 },
  'idp-503': { label: 'IdP: 503 to every request for 5 s', short: 'IdP 503', seconds: 5 },
  'redis-pause': { label: 'Redis: SIGSTOP for 2 s', short: 'Redis stop', seconds: 2 },
  'upstream-down': { label: 'upstream down for 5 s', short: 'API down', seconds: 5 },
  'idp-slow': { label: 'IdP: 5 s latency on every request for 15 s', short: 'IdP slow', seconds: 15 },
  'kill-before': { label: 'replica SIGKILL while its refresh waits in front of the IdP, then restart', short: 'kill', seconds: 7 },
  'redis-restart': { label: 'Redis: SIGKILL and restart, data kept (AOF, appendfsync always)', short: 'Redis restart', seconds: 1 },
  'idp-reset': { label: 'IdP: every connection reset for 10 s', short: 'IdP reset', seconds: 10 },
  'upstream-slow': { label: 'upstream slow for 10 s (3 s per answer, past the 2 s upstream timeout)', short: 'API slow', seconds: 10 },
  'idp-down': { label: 'IdP down (connections refused) for 20 s', short: 'IdP down', seconds: 20, quiet: 20 },
  'redis-wipe': { label: 'Redis: SIGKILL and restart with its data lost', short: 'Redis wipe', seconds: 1, quiet: 20 },
};

export const CYCLE = Object.keys(FAULTS) as FaultKind[];

export interface FaultEvent {
  kind: FaultKind;
  /** 1 for the first of its kind */
  n: number;
  /** ms since the load began */
  start: number;
  end: number;
  detail?: Record<string, unknown>;
}
