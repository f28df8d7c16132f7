/**
 * The operators' view of sessions: list a user's sessions, end them (all, or one by its storage hash as
 * logs and this list show it), and find or end the sessions an IdP reported compromised (refresh-token
 * reuse). Ending is effective on every replica at once and revokes the refresh tokens.
 */
import type { IndexEntry, SessionIndex } from '../session/sessionIndex';
import type { Terminator } from '../session/terminator';
import type { RevocationOutcome } from '../idp/revoker';

export interface SessionSummary {
  /** The session's storage hash (the `session` field of log lines). */
  session: string;
  createdAt: number;
  absoluteExpiresAt: number;
}

/** What ending sessions did: sessions ended, and what became of their refresh tokens at the IdP. */
export interface KillReport {
  /** Sessions that were live and are now ended. */
  ended: number;
  /** Refresh tokens the IdP confirmed revoked. */
  revoked: number;
  /** Refresh tokens left at the IdP because another session of the user may share their grant. */
  kept: number;
  /** Revocations the IdP refused or never answered (logged); those sessions are ended all the same. */
  failed: number;
}

export interface SessionAdmin {
  list(sub: string): Promise<SessionSummary[]>;
  /** Ends every session of `sub`, or only the one named `session`, and waits for the IdP's answers to the revocations. */
  revoke(target: { sub: string; session?: string }): Promise<KillReport>;
  /**
   * The sessions of `sub` that an IdP report names: those of the IdP session `sid` when given, else all of
   * the user's. With `end`, they are ended (reason `anomaly`). Resolves to their storage hashes and how
   * many of them were live and ended.
   */
  compromised(target: { sub: string; sid?: string }, opts: { end: boolean }): Promise<{ sessions: string[]; ended: number }>;
}

export function sessionAdmin(deps: { index: SessionIndex; terminator: Terminator; issuer: () => string }): SessionAdmin {
  const entries = async (sub: string) => (await deps.index.list('sub', deps.issuer(), sub)).map((e) => ({ e, hash: e.h }));
  return {
    async list(sub) {
      return (await entries(sub)).map(({ e, hash }) => ({ session: hash, createdAt: e.createdAt, absoluteExpiresAt: e.absoluteExpiresAt }));
    },
    async revoke({ sub, session }) {
      const chosen = (await entries(sub)).filter(({ hash }) => session === undefined || hash === session).map(({ e }) => e);
      const { count, revocations } = await deps.terminator.end(chosen, 'admin', { revoke: true });
      const outcomes = await revocations;
      const tally = (o: RevocationOutcome) => outcomes.filter((x) => x === o).length;
      return { ended: count, revoked: tally('revoked'), kept: tally('kept'), failed: tally('failed') };
    },
    async compromised({ sub, sid }, { end }) {
      // A sid names one IdP session; only that user's sessions in it are taken (a report never reaches
      // another user's sessions, whatever sid it carries).
      const chosen: IndexEntry[] =
        sid === undefined
          ? await deps.index.list('sub', deps.issuer(), sub)
          : (await deps.index.list('sid', deps.issuer(), sid)).filter((e) => e.sub === sub);
      // The IdP revoked the reused grant already; revoking every chosen session's refresh token also covers
      // the user's other grants when no sid narrowed the report.
      const ended = end ? (await deps.terminator.end(chosen, 'anomaly', { revoke: true })).count : 0;
      return { sessions: chosen.map((e) => e.h), ended };
    },
  };
}
