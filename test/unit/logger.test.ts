import { createLogger } from '../../src/log/logger';

function capture() {
  const lines: string[] = [];
  return { log: createLogger('debug', (l) => lines.push(l)), lines };
}

/** The one line written, parsed. */
function only(lines: string[]): Record<string, unknown> {
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

/** An authorization code as oidc-provider issues them: 43 random base64url characters. */
const AUTH_CODE = 'Qm7xK2pZr9T_vW4nB8sLd1Yc6Hf0Ju3Ae5Gi-oXtNqR';

describe('logger (secrets never reach logs)', () => {
  it('redacts fields named like tokens, cookies, secrets and authorization, at any depth', () => {
    const { log, lines } = capture();
    log.info(
      {
        refresh_token: 'RT-SECRET',
        nested: { accessToken: 'AT-SECRET', headers: { cookie: 'gatehouse=s:x', authorization: 'Bearer AT' } },
        code: AUTH_CODE,
      },
      'x',
    );
    expect(lines[0]).not.toMatch(/RT-SECRET|AT-SECRET|gatehouse=s:x|Bearer AT/);
    expect(lines[0]).not.toContain(AUTH_CODE);
    expect((JSON.parse(lines[0]!) as { nested: { accessToken: string } }).nested.accessToken).toBe('[redacted]');
  });

  it('keeps error codes readable: ECONNREFUSED, identity_provider_unavailable, invalid_grant, numbers', () => {
    const { log, lines } = capture();
    log.warn(
      {
        err: { message: 'connect ECONNREFUSED 127.0.0.1:1', code: 'ECONNREFUSED' },
        code: 'identity_provider_unavailable',
        upstream: { code: 'ERR_HTTP2_STREAM_ERROR' },
        idp: { code: 'invalid_grant', status: 400 },
        redis: { code: 500 },
      },
      'failed',
    );
    expect(only(lines)).toMatchObject({
      err: { message: 'connect ECONNREFUSED 127.0.0.1:1', code: 'ECONNREFUSED' },
      code: 'identity_provider_unavailable',
      upstream: { code: 'ERR_HTTP2_STREAM_ERROR' },
      idp: { code: 'invalid_grant', status: 400 },
      redis: { code: 500 },
    });
  });

  it('redacts an authorization code in a `code` field, whatever its shape (hex, UUID, base64url), and a code or token in a URL', () => {
    const { log, lines } = capture();
    const hex = 'a3f9c2e8b7d14f6a9c0e2b5d8f1a4c7e';
    const uuid = '3f2b8c1e-9d4a-4b7e-8f1c-2a6d9e0b5c3f';
    log.warn(
      {
        query: { code: hex, state: 'S' },
        other: { code: uuid },
        url: `https://app.example/auth/callback?code=${AUTH_CODE}&state=S&iss=https%3A%2F%2Fidp`,
        err: new Error(`request to https://idp.example/token failed: grant_type=refresh_token&refresh_token=RT-SECRET`),
      },
      'x',
    );
    expect(lines[0]).not.toMatch(new RegExp(`${hex}|${uuid}|${AUTH_CODE}|RT-SECRET`));
    expect(only(lines)).toMatchObject({ url: 'https://app.example/auth/callback?code=[redacted]&state=S&iss=https%3A%2F%2Fidp' });
  });

  it('redacts the first parameter of a form body and a bearer credential quoted in a string', () => {
    const { log, lines } = capture();
    log.warn(
      {
        body: 'refresh_token=RT-FIRST&grant_type=refresh_token',
        said: 'sent body: code=CODE-FIRST&state=S',
        hint: 'id_token_hint=eyJ.HINT.sig',
        header: 'Authorization: Bearer eyJhbGciOi.BEARER-SECRET.sig',
      },
      'x',
    );
    expect(lines[0]).not.toMatch(/RT-FIRST|CODE-FIRST|HINT|BEARER-SECRET/);
    expect(only(lines)).toMatchObject({
      body: 'refresh_token=[redacted]&grant_type=refresh_token',
      header: 'Authorization: Bearer [redacted]',
    });
  });

  it('redacts a DPoP credential quoted in a string and a DPoP private key wherever it sits', () => {
    const { log, lines } = capture();
    log.warn(
      {
        header: 'Authorization: DPoP eyJhbGciOi.DPOP-SECRET.sig',
        record: { dpopKey: { kty: 'EC', d: 'PRIVATE-D' } },
        jwk: { kty: 'EC', crv: 'P-256', x: 'X', y: 'Y', d: 'LOOSE-D' },
      },
      'x',
    );
    expect(lines[0]).not.toMatch(/DPOP-SECRET|PRIVATE-D|LOOSE-D/);
    expect(only(lines)).toMatchObject({ header: 'Authorization: DPoP [redacted]', jwk: { x: 'X', d: '[redacted]' } });
  });

  it('logs errors by type, message and code along their cause chain, plain objects and aggregates included', () => {
    const { log, lines } = capture();
    // What fetch() throws when nothing listens (the connection refused on every address).
    const refused = Object.assign(
      new AggregateError([new Error('connect ECONNREFUSED ::1:1'), new Error('connect ECONNREFUSED 127.0.0.1:1')], ''),
      {
        code: 'ECONNREFUSED',
      },
    );
    log.warn({ err: new TypeError('fetch failed', { cause: refused }) }, 'idp unreachable');
    expect(only(lines).err).toEqual({
      type: 'TypeError',
      message: 'fetch failed',
      cause: {
        type: 'AggregateError',
        message: '',
        code: 'ECONNREFUSED',
        errors: [
          { type: 'Error', message: 'connect ECONNREFUSED ::1:1' },
          { type: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:1' },
        ],
      },
    });

    lines.length = 0;
    log.warn({ err: { message: 'temporarily unavailable', code: 'ETIMEDOUT', cause: { error: 'server_error', status: 503 } } }, 'plain');
    expect(only(lines).err).toEqual({
      message: 'temporarily unavailable',
      code: 'ETIMEDOUT',
      cause: { error: 'server_error', status: 503 },
    });

    lines.length = 0;
    log.warn({ err: 'socket hang up' }, 'thrown string');
    expect(only(lines).err).toEqual({ message: 'socket hang up' });
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

  it('prints nothing nested deeper than it inspects', () => {
    const { log, lines } = capture();
    log.info({ a: { b: { c: { d: { e: { f: { g: { accessToken: 'AT-SECRET' } } } } } } } }, 'deep');
    expect(lines[0]).not.toContain('AT-SECRET');
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
