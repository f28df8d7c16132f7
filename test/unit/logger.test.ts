import { createLogger } from '../../src/log/logger';

function capture() {
  const lines: string[] = [];
  return { log: createLogger('debug', (l) => lines.push(l)), lines };
}

describe('logger (STYLE §14: secrets never reach logs)', () => {
  it('redacts fields named like tokens, cookies, secrets and authorization, at any depth', () => {
    const { log, lines } = capture();
    log.info(
      {
        refresh_token: 'RT-SECRET',
        nested: { accessToken: 'AT-SECRET', headers: { cookie: 'gatehouse=s:x', authorization: 'Bearer AT' } },
        code: 'CODE-X',
      },
      'x',
    );
    expect(lines[0]).not.toMatch(/RT-SECRET|AT-SECRET|gatehouse=s:x|Bearer AT|CODE-X/);
    expect((JSON.parse(lines[0]!) as { nested: { accessToken: string } }).nested.accessToken).toBe('[redacted]');
  });

  it('logs an error cause that is a plain object only by its protocol fields, never its payload (a rejected ID token)', () => {
    const { log, lines } = capture();
    const err = new Error('unexpected JWT claim value', {
      cause: { claim: 'iss', claims: { sub: 'alice', email: 'alice@example.test', nonce: 'N' }, data: 'eyJhbGciOi' },
    });
    log.warn({ err }, 'login failed');
    expect(lines[0]).toContain('"claim":"iss"');
    expect(lines[0]).not.toMatch(/alice|nonce|eyJhbGciOi/);
  });

  it('writes nothing below the configured level', () => {
    const lines: string[] = [];
    const log = createLogger('warn', (l) => lines.push(l));
    log.info({}, 'quiet');
    log.warn({}, 'loud');
    expect(lines).toHaveLength(1);
    expect(log.isLevelEnabled('debug')).toBe(false);
  });
});
