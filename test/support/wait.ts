/**
 * The one polling helper of the tests. A fixed pause is `setTimeout` from node:timers/promises, imported as
 * `sleep`; waitFor is for "until this holds", which a fixed pause only guesses at.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `condition` every `intervalMs` until it holds. Fails with "timed out waiting for <what>" after
 * `timeoutMs`, so a test that waits in vain says what for. A condition that throws fails the wait at once; one
 * that may throw while the thing it watches comes up should catch and answer false.
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}
