import { createLogger } from '../../src/log/logger';
import { AUTH_FAILURE_LOG_WINDOW_MS, throttledWarning } from '../../src/admin/adminApp';

describe('the refused-admin-call warning', () => {
  it('is written at most once per window, each line saying how many were left out since the one before', () => {
    const lines: string[] = [];
    let now = 1_000_000;
    const warn = throttledWarning(
      createLogger('info', (l) => lines.push(l)),
      AUTH_FAILURE_LOG_WINDOW_MS,
      () => now,
    );
    const refuse = (n: number) => {
      for (let i = 0; i < n; i++) warn({ event: 'admin_auth_failed' }, 'refused');
    };
    const suppressed = () => lines.map((l) => (JSON.parse(l) as { suppressed: number }).suppressed);

    refuse(5);
    expect(suppressed()).toEqual([0]);
    now += AUTH_FAILURE_LOG_WINDOW_MS - 1;
    refuse(2);
    expect(suppressed()).toEqual([0]);
    now += 1; // a full window after the first line
    refuse(3);
    expect(suppressed()).toEqual([0, 6]);
    now += 10 * AUTH_FAILURE_LOG_WINDOW_MS;
    refuse(1);
    expect(suppressed()).toEqual([0, 6, 2]);
  });
});
