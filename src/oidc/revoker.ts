/**
 * RFC 7009 refresh-token revocation, off the request path: logout never waits for the IdP (R52, R53).
 * A failure is retried a bounded number of times with backoff (§2.2.1: on 503 the client must assume
 * the token still exists and may retry), then logged.
 */
import type { Logger } from '../log/logger';
import type { Idp } from './idp';
import { classifyRefreshError, revocationRetryable } from './classify';

const DELAYS_MS = [1000, 3000, 9000];

export class Revoker {
  private readonly pending = new Set<Promise<void>>();
  private closing = false;

  constructor(
    private readonly idp: Idp,
    private readonly log: Logger,
    private readonly onFailure: (kind: string) => void = () => undefined,
  ) {}

  revokeLater(refreshToken: string): void {
    const p = this.run(refreshToken).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  private async run(token: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.idp.revoke(token);
        return;
      } catch (err) {
        this.onFailure(classifyRefreshError(err));
        const delay = DELAYS_MS[attempt];
        if (delay === undefined || this.closing || !revocationRetryable(err)) {
          this.log.warn({ err, attempts: attempt + 1 }, 'refresh token revocation failed; giving up');
          return;
        }
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** Waits for revocations in flight (no new retries start once closing). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.pending]);
  }
}
