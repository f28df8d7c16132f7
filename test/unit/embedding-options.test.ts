/**
 * createGatehouse(options) names settings the way its caller wrote them: by option name, as in the options
 * object, while loadConfig() (the environment) keeps naming variables. The types say what is required.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, createGatehouse, loadConfig, validate, type GatehouseOptions } from '../../src';
import { SETTINGS } from '../../src/config/schema';

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('options given to createGatehouse()', () => {
  it('reports a missing setting by its option name, with an example in option syntax', () => {
    const problems = problemsOf(() => validate({}));
    expect(problems).toEqual(
      expect.arrayContaining([
        "issuer: is required — set it, e.g. issuer: 'https://login.example.com'",
        expect.stringMatching(/^clientId: is required/),
        expect.stringMatching(/^clientSecret: is required with client_secret_basic — .* clientAuth: 'private_key_jwt'$/),
        expect.stringMatching(/^publicUrl: is required/),
        expect.stringMatching(/^upstream: is required/),
        expect.stringMatching(/^sessionSecret: is required/),
      ]),
    );
    expect(problems.join('\n')).not.toContain('GATEHOUSE_');
  });

  it('names options in problems that refer to another setting', () => {
    const base = { issuer: 'https://login.example.com', clientId: 'c', clientSecret: 's', publicUrl: 'https://app.example.com' };
    const problems = problemsOf(() =>
      validate({
        ...base,
        upstream: 'https://api.example.com',
        sessionSecret: 'x'.repeat(32),
        sessionIdleSeconds: 100,
        sessionAbsoluteSeconds: 50,
        port: 9000,
        metricsPort: 9000,
      }),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^metricsPort: must differ from port \(9000\)/),
      expect.stringMatching(/^sessionIdleSeconds: 100 is longer than sessionAbsoluteSeconds \(50\)/),
    ]);
  });

  it('rejects from createGatehouse() itself, before any network call', async () => {
    const partial = { clientId: 'gatehouse', upstream: 'http://127.0.0.1:3000' };
    // @ts-expect-error issuer, clientSecret, publicUrl and sessionSecret are required by the type as well
    const started = createGatehouse(partial);
    const err: unknown = await started.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toContainEqual(expect.stringMatching(/^issuer: is required/));
  });

  it('is typed: every required setting is required, and the rest optional', () => {
    const minimal = {
      issuer: 'https://login.example.com',
      clientId: 'gatehouse',
      clientSecret: 'secret',
      publicUrl: 'https://app.example.com',
      upstream: 'http://127.0.0.1:3000',
      sessionSecret: 'x'.repeat(32),
    } satisfies GatehouseOptions;
    const withKey: GatehouseOptions = { ...minimal, clientSecret: undefined, clientAuth: 'private_key_jwt', clientPrivateKey: '/k.pem' };
    // @ts-expect-error private_key_jwt needs clientPrivateKey
    const keyless: GatehouseOptions = { ...minimal, clientSecret: undefined, clientAuth: 'private_key_jwt' };
    // @ts-expect-error without routes, upstream is required
    const nowhere: GatehouseOptions = { ...minimal, upstream: undefined };
    const routed: GatehouseOptions = { ...minimal, upstream: undefined, routes: [{ path: '/api', upstream: 'http://127.0.0.1:3000' }] };
    expect([withKey, keyless, nowhere, routed]).toHaveLength(4);
  });
});

describe('the environment, read by loadConfig()', () => {
  it('keeps naming variables', () => {
    const problems = problemsOf(() => loadConfig({}));
    expect(problems).toEqual(
      expect.arrayContaining([
        'GATEHOUSE_ISSUER: is required — set it, e.g. GATEHOUSE_ISSUER=https://login.example.com',
        expect.stringMatching(/^GATEHOUSE_CLIENT_SECRET: is required with client_secret_basic — .* GATEHOUSE_CLIENT_AUTH=private_key_jwt$/),
      ]),
    );
  });
});

describe('docs/configuration.md', () => {
  it('names every setting by its variable and its option, in one row of its table', () => {
    const rows = readFileSync(join(__dirname, '..', '..', 'docs', 'configuration.md'), 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('| `GATEHOUSE_'))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    const undocumented = SETTINGS.filter((s) => !rows.some((cells) => cells[1] === `\`${s.env}\`` && cells[2] === `\`${s.option}\``));
    expect(undocumented.map((s) => `${s.env} (${s.option})`)).toEqual([]);
  });
});
