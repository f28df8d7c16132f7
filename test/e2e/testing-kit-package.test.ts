/**
 * `gatehouse-bff/testing` as a user gets it: built to dist/, resolved through package.json "exports" from a project
 * that has gatehouse-bff (and supertest) in its node_modules, run by the project's Node outside jest. Also keeps the
 * complete test of docs/testing.md and test/e2e/testing-kit.test.ts (which runs it) identical.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildOnce } from '../support/build';

const root = join(__dirname, '..', '..');
const node = join(root, 'node_modules', '.bin', 'node');

/** A user's project: node_modules/gatehouse-bff is this repository, as `npm link` or a file: dependency makes it. */
function userProject(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-kit-user-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'gatehouse-bff'), 'dir');
  symlinkSync(join(root, 'node_modules', 'supertest'), join(dir, 'node_modules', 'supertest'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'kit-user', private: true, type: 'commonjs' }));
  return dir;
}

/** Runs `script` (CommonJS) in the user's project with the project's Node, without jest's NODE_OPTIONS. */
function run(dir: string, script: string): string {
  writeFileSync(join(dir, 'check.cjs'), script);
  const { NODE_OPTIONS: _jestFlags, ...env } = process.env;
  return execFileSync(node, ['check.cjs'], { cwd: dir, env, encoding: 'utf8', timeout: 60_000 });
}

describe('gatehouse-bff/testing, built and installed', () => {
  let dir: string;
  beforeAll(() => {
    buildOnce();
    dir = userProject();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('resolves through package exports to dist and has startTestIdp, createTestGatehouse and loginAs', () => {
    const out = run(
      dir,
      `const kit = require('gatehouse-bff/testing');
       console.log(JSON.stringify({
         path: require.resolve('gatehouse-bff/testing'),
         types: ['startTestIdp', 'createTestGatehouse', 'loginAs'].map((name) => typeof kit[name]),
       }));`,
    );
    const { path, types } = JSON.parse(out) as { path: string; types: string[] };
    expect(path).toBe(join(root, 'dist', 'src', 'testing', 'index.js'));
    expect(types).toEqual(['function', 'function', 'function']);
  });

  it('is not loaded by the production entry point', () => {
    const out = run(
      dir,
      `require('gatehouse-bff');
       console.log(JSON.stringify(Object.keys(require.cache).filter((f) => f.includes('/testing/'))));`,
    );
    expect(JSON.parse(out)).toEqual([]);
  });

  it('logs a user in and proxies /api, outside jest', () => {
    const out = run(
      dir,
      `const request = require('supertest');
       const { createTestGatehouse, loginAs } = require('gatehouse-bff/testing');
       (async () => {
         const gw = await createTestGatehouse();
         try {
           const agent = request.agent(gw.app);
           await loginAs(agent, 'erin');
           const res = await agent.get('/api/hello').set('X-CSRF', '1');
           console.log(JSON.stringify({ status: res.status, url: res.body.url, bearer: /^Bearer /.test(res.body.headers.authorization) }));
         } finally {
           await gw.close();
         }
       })().catch((err) => { console.error(err); process.exitCode = 1; });`,
    );
    expect(JSON.parse(out)).toEqual({ status: 200, url: '/hello', bearer: true });
  });
});

describe('docs/testing.md "A complete test"', () => {
  it('shows exactly the example test/e2e/testing-kit.test.ts runs', () => {
    const doc = readFileSync(join(root, 'docs', 'testing.md'), 'utf8');
    const section = doc.split(/^#{2,3} /m).find((s) => s.startsWith('A complete test')) ?? '';
    const example = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example).toBe(readFileSync(join(__dirname, 'testing-kit.test.ts'), 'utf8'));
  });
});
