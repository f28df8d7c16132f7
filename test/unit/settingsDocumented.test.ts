/**
 * Every setting the schema reads is documented where users look for it: the configuration reference and
 * the commented example environment file. A setting added without its documentation fails here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SETTINGS } from '../../src/config/schema';

const root = join(__dirname, '../..');
const read = (file: string) => readFileSync(join(root, file), 'utf8');

describe('the settings are documented', () => {
  const reference = read('docs/configuration.md');
  const exampleEnv = read('config/example.env');

  it.each(SETTINGS.map((s) => [s.env, s] as const))('%s is in docs/configuration.md with its default', (env, setting) => {
    const row = reference.split('\n').find((line) => line.startsWith(`| \`${env}\``));
    expect(row).toBeDefined();
    if (setting.default !== undefined) expect(row).toContain(`\`${setting.default}\``);
  });

  it.each(SETTINGS.map((s) => s.env))('%s is in config/example.env', (env) => {
    expect(exampleEnv).toMatch(new RegExp(`^#? ?${env}=`, 'm'));
  });
});
