/**
 * The operators' view of sessions: list a user's sessions, end them (all, or one by its storage hash as
 * logs and this list show it). Ending is effective on every replica at once and revokes the refresh tokens.
 */
import type { SessionIndex } from '../session/sessionIndex';
import type { Terminator } from '../session/terminator';

export interface SessionSummary {
  /** The session's storage hash (the `session` field of log lines). */
  session: string;
  createdAt: number;
  absoluteExpiresAt: number;
}

export interface SessionAdmin {
  list(sub: string): Promise<SessionSummary[]>;
  /** Ends every session of `sub`, or only the one named `session`; resolves to how many were live. */
  revoke(target: { sub: string; session?: string }): Promise<number>;
}

export function sessionAdmin(deps: { index: SessionIndex; terminator: Terminator; issuer: () => string }): SessionAdmin {
  const entries = async (sub: string) => (await deps.index.list('sub', deps.issuer(), sub)).map((e) => ({ e, hash: e.h }));
  return {
    async list(sub) {
      return (await entries(sub)).map(({ e, hash }) => ({ session: hash, createdAt: e.createdAt, absoluteExpiresAt: e.absoluteExpiresAt }));
    },
    async revoke({ sub, session }) {
      const chosen = (await entries(sub)).filter(({ hash }) => session === undefined || hash === session).map(({ e }) => e);
      return deps.terminator.end(chosen, 'admin', { revoke: true });
    },
  };
}
