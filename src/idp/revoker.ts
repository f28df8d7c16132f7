/**
 * RFC 7009 refresh-token revocation, off the request path: logout never waits for the IdP.
 * A failure is retried a bounded number of times with backoff (RFC 7009 §2.2.1: on 503 the client must
 * assume the token still exists and may retry), then logged.
 *
 * A refresh token is revoked only when no other live session of the same user is left here. Many IdPs
 * issue every login of one browser under one grant (oidc-provider and Keycloak tie it to the SSO session;
 * some IdPs keep one grant per user and client), and revoking a refresh token revokes its grant: revoking
 * the token of a session that shares it would log the user's other session out at once. Gatehouse cannot
 * see grants, so "provably not shared" means "this user has no other session here". The ended session's
 * token is deleted from the store either way; only the IdP-side revocation is skipped.
 */
import type { Logger } from '../log/logger';
import type { SessionIndex } from '../session/sessionIndex';
import type { Idp } from './idp';
import { classifyRefreshError, revocationRetryable } from './classify';

const DELAYS_MS = [1000, 3000, 9000];
const NONE: ReadonlySet<string> = new Set();

/** Whose refresh token it is: the user, and the session (storage hash) that held it. */
export interface GrantHolder {
  iss: string;
  sub: string;
  session: string;
}

/** `kept`: not revoked, because another session of the user may share its grant. */
export type RevocationOutcome = 'revoked' | 'kept' | 'failed';

/**
 * Starts a revocation in the background; the promise (never rejected) tells how it ended, for whoever asks.
 * `holder` undefined: revoke without looking for sessions that may share the grant (a token the IdP issued
 * for another user than the session's is no grant of this user's).
 */
export type RevokeLater = (
  refreshToken: string,
  holder: GrantHolder | undefined,
  endingTogether?: ReadonlySet<string>,
) => Promise<RevocationOutcome>;

export class Revoker {
  private readonly pending = new Set<Promise<RevocationOutcome>>();
  private closing = false;

  constructor(
    private readonly idp: Idp,
    private readonly index: Pick<SessionIndex, 'list'>,
    private readonly log: Logger,
    private readonly onFailure: (kind: string) => void = () => undefined,
  ) {}

  /**
   * `endingTogether`: storage hashes of sessions ended in the same step (a kill switch for all of a user's
   * sessions): they do not count as sessions that may share the grant.
   */
  readonly revokeLater: RevokeLater = (refreshToken, holder, endingTogether = NONE) => {
    const p = this.run(refreshToken, holder, endingTogether).finally(() => this.pending.delete(p));
    this.pending.add(p);
    return p;
  };

  private async run(token: string, holder: GrantHolder | undefined, endingTogether: ReadonlySet<string>): Promise<RevocationOutcome> {
    if (holder && (await this.mayBeShared(holder, endingTogether))) {
      this.log.info(
        { session: holder.session },
        'refresh token not revoked at the IdP: the user has other sessions here that may share its grant',
      );
      return 'kept';
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.idp.revoke(token);
        return 'revoked';
      } catch (err) {
        this.onFailure(classifyRefreshError(err));
        const delay = DELAYS_MS[attempt];
        if (delay === undefined || this.closing || !revocationRetryable(err)) {
          this.log.warn({ err, attempts: attempt + 1, session: holder?.session }, 'refresh token revocation failed; giving up');
          return 'failed';
        }
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** True when another live session of the same user exists, or when that cannot be told (the store failed). */
  private async mayBeShared(holder: GrantHolder, endingTogether: ReadonlySet<string>): Promise<boolean> {
    try {
      const sessions = await this.index.list('sub', holder.iss, holder.sub);
      return sessions.some((e) => e.h !== holder.session && !endingTogether.has(e.h));
    } catch (err) {
      // Keeping a token that should have gone costs nothing a user sees; revoking a shared one logs them out.
      this.log.warn({ err, session: holder.session }, "could not look up the user's other sessions; refresh token not revoked");
      return true;
    }
  }

  /** Waits for revocations in flight (no new retries start once closing). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.pending]);
  }
}
