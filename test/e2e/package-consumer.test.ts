/**
 * Gatehouse as a user adopts it, from the README and docs/testing.md alone. The package is packed from a copy of
 * this tree with no dist/ (so npm's `prepare` builds it, as for an install from git or a publish), installed into
 * an empty project together with exactly the packages the docs' install lines name (at this repository's locked
 * versions), and used there with the Node and Jest settings docs/testing.md gives:
 * - the complete test of docs/testing.md, verbatim, and a CommonJS test file, under Jest;
 * - `tsc` with skipLibCheck: false over the public types of the three entry points and the README's embedding
 *   example, with module resolution nodenext and bundler;
 * - the client imported as an ES module and required as CommonJS by plain Node;
 * - Jest without the flag, which must stop with an error that names it.
 *
 * The project is run with a clean environment: nothing of this repository's jest, npm or Redis settings leaks in.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

const root = join(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  private?: boolean;
  license: string;
  engines: { node: string };
  exports: Record<string, unknown>;
};
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const testingDoc = readFileSync(join(root, 'docs', 'testing.md'), 'utf8');
/** The Node the docs ask for (>= 24.9): this repository's devDependency `node`. */
const nodeBin = realpathSync(join(root, 'node_modules', '.bin', 'node'));

/** The text of a markdown section: from its heading to the next heading of the same or a higher level. */
function section(markdown: string, heading: string): string {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => /^#+ /.test(l) && l.replace(/^#+ /, '') === heading);
  if (start < 0) throw new Error(`no section "${heading}"`);
  const level = /^#+/.exec(lines[start]!)![0].length;
  const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && /^#+/.exec(l)![0].length <= level);
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

/** The fenced code blocks of one language in a markdown text, verbatim. */
function blocks(markdown: string, lang: string): string[] {
  return [...markdown.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm'))].map((m) => m[1]!);
}

/** Package names of the `npm i` lines of shell blocks (flags and comments dropped). */
function installedBy(shell: string[]): string[] {
  return shell
    .join('\n')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => /^npm (i|install) /.test(l))
    .flatMap((l) => l.split(/\s+/).slice(2))
    .filter((arg) => !arg.startsWith('-'));
}

const embedding = section(readme, 'Embedding: createGatehouse()');
const testing = section(testingDoc, 'A complete test');
const installLines = blocks(testing, 'sh');
const packagesToInstall = [...new Set(installedBy([...blocks(embedding, 'sh'), ...installLines]))];

/** What a user's shell has: PATH with the Node the docs ask for first (no node_modules/.bin of ours), HOME, npm's cache. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const path = (process.env.PATH ?? '').split(delimiter).filter((p) => p && !p.includes(`node_modules${'/'}.bin`));
  // NODE_EXTRA_CA_CERTS: where the registry is reached through a TLS-inspecting proxy, npm needs its CA.
  const keep = ['HOME', 'TMPDIR', 'LANG', 'CI', 'npm_config_cache', 'npm_config_registry', 'NODE_EXTRA_CA_CERTS'];
  const env: NodeJS.ProcessEnv = { PATH: [dirname(nodeBin), ...path].join(delimiter) };
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k];
  return { ...env, npm_config_fund: 'false', npm_config_audit: 'false', npm_config_update_notifier: 'false', ...extra };
}

interface Run {
  code: number;
  out: string;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env, timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

async function mustRun(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, cwd, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.code}:\n${r.out}`);
  return r.out;
}

/** This tree as git sees it (tracked and new files, not ignored ones, so no dist/ and no node_modules/). */
function copyTree(to: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
    .split('\0')
    .filter(Boolean);
  for (const file of files) {
    try {
      if (statSync(join(root, file)).isDirectory()) continue; // a symlink to a folder, e.g. a linked node_modules
      mkdirSync(dirname(join(to, file)), { recursive: true });
      copyFileSync(join(root, file), join(to, file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // deleted, not yet committed
    }
  }
  // the build's tools (tsc), as after `npm ci`
  symlinkSync(join(root, 'node_modules'), join(to, 'node_modules'), 'dir');
}

/** A CommonJS test file of a CommonJS project: the kit, the main entry point and the client through require(). */
const COMMONJS_TEST = `const request = require('supertest');
const { createTestGatehouse, loginAs } = require('gatehouse-bff/testing');
const { createGatehouse } = require('gatehouse-bff');
const { createGatehouseClient } = require('gatehouse-bff/client');

let gw;
beforeAll(async () => {
  gw = await createTestGatehouse();
});
afterAll(() => gw.close());

test('logs in through the kit and reaches /api with a Bearer token', async () => {
  const agent = request.agent(gw.app);
  await loginAs(agent, 'cjs-user');
  const res = await agent.get('/api/orders').set('X-CSRF', '1').expect(200);
  expect(res.body.url).toBe('/orders');
  expect(res.body.headers.authorization).toMatch(/^Bearer /);
});

test('the client, loaded by require() from its CommonJS build, asks the gateway for the session', async () => {
  expect(require.resolve('gatehouse-bff/client')).toMatch(/dist\\/client-cjs\\/index\\.js$/);
  await expect(createGatehouseClient({ basePath: gw.url }).getSession()).resolves.toBeNull();
});

test('createGatehouse() names a missing option by its option name', async () => {
  await expect(createGatehouse({ clientId: 'gatehouse' })).rejects.toThrow(/\\nissuer: is required/);
});
`;

/** The public types of the three entry points, used as a TypeScript user would. */
const TYPES = `import http from 'node:http';
import { ConfigError, createGatehouse, createLogger, guardServer, type Gatehouse, type GatehouseOptions } from 'gatehouse-bff';
import { createTestGatehouse, loginAs, type EchoResponse, type TestGatehouse, type TestIdp } from 'gatehouse-bff/testing';
import { createGatehouseClient, gatehouseFetch, GatehouseError, type GatehouseSession } from 'gatehouse-bff/client';
import request from 'supertest';

type IsAny<T> = 0 extends 1 & T ? true : false;
// None of these may have become \`any\` for want of a type package.
export const appIsTyped: IsAny<Gatehouse['app']> = false;
export const frontDoorIsTyped: IsAny<Gatehouse['frontDoor']> = false;
export const kitAppIsTyped: IsAny<TestGatehouse['app']> = false;
export const grantsAreTyped: IsAny<TestIdp['grants']> = false;
export const userIsTyped: IsAny<GatehouseSession['user']> = false;

// @ts-expect-error the type says which options createGatehouse() requires
export const incomplete: GatehouseOptions = { clientId: 'gatehouse' };

export async function embed(options: GatehouseOptions): Promise<Gatehouse> {
  const gatehouse = await createGatehouse(options, { logger: createLogger('silent') });
  gatehouse.app.use((req, res, next) => {
    res.setHeader('x-path', req.path);
    next();
  });
  guardServer(http.createServer(gatehouse.frontDoor));
  return gatehouse;
}

export async function kit(): Promise<EchoResponse> {
  const gw = await createTestGatehouse({ gateway: { sessionIdleSeconds: 900 }, idp: { accessTokenTtl: 5 } });
  const agent = request.agent(gw.app);
  await loginAs(agent, 'alice');
  const res = await agent.get('/api/orders').set('X-CSRF', '1');
  await gw.close();
  return res.body as EchoResponse;
}

export async function browser(): Promise<GatehouseSession | null> {
  const client = createGatehouseClient({ basePath: '/bff', retry: { maxAttempts: 2 } });
  const res: Response = await gatehouseFetch('/api/orders');
  if (!res.ok) throw new GatehouseError(res.status, 'demo');
  return client.getSession();
}

export const errors = [ConfigError, GatehouseError];
`;

const TSCONFIG = (module: string, resolution: string, files: string[]) =>
  JSON.stringify({
    compilerOptions: {
      target: 'es2023',
      module,
      moduleResolution: resolution,
      strict: true,
      skipLibCheck: false,
      noEmit: true,
      types: ['jest'],
    },
    files,
  });

/** Plain Node, no flags: the client as an ES module and as CommonJS, side by side. */
const ESM_CLIENT = `import { createRequire } from 'node:module';
import { createGatehouseClient, GatehouseError } from 'gatehouse-bff/client';

const require = createRequire(import.meta.url);
const cjs = require('gatehouse-bff/client');
console.log(JSON.stringify({
  esm: import.meta.resolve('gatehouse-bff/client'),
  cjs: require.resolve('gatehouse-bff/client'),
  exports: [typeof createGatehouseClient, typeof GatehouseError, typeof cjs.createGatehouseClient],
  loginUrl: createGatehouseClient({ basePath: '/bff' }).loginUrl('/orders'),
}));
`;

/** The production dependencies installed with the package, with their engines.node ranges. */
const ENGINES_LIST = `const fs = require('node:fs');
const path = require('node:path');
const find = (from, name) => {
  for (let d = from; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name, 'package.json');
    if (fs.existsSync(p)) return p;
    if (d === path.dirname(d)) return null;
  }
};
const top = path.join(process.cwd(), 'node_modules', process.argv[2]);
const seen = new Map();
const walk = (dir, deps) => {
  for (const name of Object.keys(deps || {})) {
    const p = find(dir, name);
    if (!p || seen.has(p)) continue;
    const dep = JSON.parse(fs.readFileSync(p, 'utf8'));
    seen.set(p, { name: dep.name + '@' + dep.version, node: (dep.engines && dep.engines.node) || '*' });
    walk(path.dirname(p), dep.dependencies);
  }
};
walk(top, require(path.join(top, 'package.json')).dependencies);
console.log(JSON.stringify([...seen.values()]));
`;

type Version = [number, number, number];
const compare = (a: Version, b: Version) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

/** Whether `v` is in an npm engines range (comparators, ^, ~, partial versions, ||); throws on other syntax. */
function inRange(v: Version, range: string): boolean {
  return range.split('||').some((alternative) =>
    alternative
      .trim()
      .replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1')
      .split(/\s+/)
      .filter((c) => c !== '' && c !== '*' && c !== 'x')
      .every((comparator) => {
        // x and * in a version (10.x) mean the part is not given
        const m = /^(>=|<=|>|<|=|\^|~)?v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(comparator.replace(/\.[xX*]/g, ''));
        if (!m) throw new Error(`engines range not understood: ${range}`);
        const w: Version = [Number(m[2]), Number(m[3] ?? 0), Number(m[4] ?? 0)];
        const given = m[4] !== undefined ? 3 : m[3] !== undefined ? 2 : 1;
        const next: Version = given === 1 ? [w[0] + 1, 0, 0] : given === 2 ? [w[0], w[1] + 1, 0] : [w[0], w[1], w[2] + 1];
        switch (m[1] ?? '=') {
          case '>=':
            return compare(v, w) >= 0;
          case '>':
            return compare(v, next) >= 0;
          case '<':
            return compare(v, w) < 0;
          case '<=':
            return compare(v, next) < 0;
          case '^':
            return compare(v, w) >= 0 && compare(v, w[0] > 0 || given === 1 ? [w[0] + 1, 0, 0] : [0, w[1] + 1, 0]) < 0;
          case '~':
            return compare(v, w) >= 0 && compare(v, given === 1 ? [w[0] + 1, 0, 0] : [w[0], w[1] + 1, 0]) < 0;
          default:
            return compare(v, w) >= 0 && compare(v, next) < 0;
        }
      }),
  );
}

describe('the package, packed and installed into a fresh project as the README says', () => {
  let work: string;
  let tarballFiles: string[] = [];
  let results: { jest: Run; jestWithoutFlag: Run; tscNodeNext: Run; tscBundler: Run; esmClient: Run; engines: Run };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'gatehouse-consumer-'));
    const source = join(work, 'source');
    const app = join(work, 'app');
    mkdirSync(source);
    mkdirSync(join(app, 'test'), { recursive: true });

    copyTree(source);
    await mustRun('npm', ['pack', '--pack-destination', work], source, cleanEnv());
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
    if (!tarball) throw new Error('npm pack wrote no tarball');
    tarballFiles = execFileSync('tar', ['-tzf', join(work, tarball)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);

    // The project the docs describe: their test script and jest.config.cjs, and what the README installs.
    const [scripts] = blocks(section(testingDoc, 'What Jest needs: Node >= 24.9 and `--experimental-vm-modules`'), 'json');
    const [jestConfig] = blocks(testingDoc, 'js');
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, ...JSON.parse(scripts!) }),
    );
    writeFileSync(join(app, 'jest.config.cjs'), jestConfig!);
    const specs = packagesToInstall.map((name) => {
      if (name === pkg.name) return join(work, tarball);
      const version = lock.packages[`node_modules/${name}`]?.version;
      if (!version) throw new Error(`the README installs ${name}, which this repository does not use (not in package-lock.json)`);
      return `${name}@${version}`;
    });
    await mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...specs], app, cleanEnv());

    writeFileSync(join(app, 'test', 'readme.test.ts'), blocks(testing, 'ts')[0]!);
    writeFileSync(join(app, 'test', 'kit.test.cjs'), COMMONJS_TEST);
    writeFileSync(join(app, 'embed.mts'), blocks(embedding, 'ts')[0]!);
    writeFileSync(join(app, 'types.ts'), TYPES);
    writeFileSync(join(app, 'types.mts'), TYPES);
    writeFileSync(join(app, 'esm-client.mjs'), ESM_CLIENT);
    writeFileSync(join(app, 'engines.cjs'), ENGINES_LIST);
    writeFileSync(
      join(app, 'tsconfig.json'),
      TSCONFIG('nodenext', 'nodenext', ['types.ts', 'types.mts', 'embed.mts', 'test/readme.test.ts']),
    );
    writeFileSync(join(app, 'tsconfig.bundler.json'), TSCONFIG('esnext', 'bundler', ['types.mts']));

    const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
    const jest = join(app, 'node_modules', 'jest', 'bin', 'jest.js');
    const [jestRun, jestWithoutFlag, tscNodeNext, tscBundler, esmClient, engines] = await Promise.all([
      run('npm', ['test'], app, cleanEnv()),
      run(nodeBin, [jest, 'test/readme.test.ts'], app, cleanEnv()),
      run(nodeBin, [tsc, '-p', 'tsconfig.json'], app, cleanEnv()),
      run(nodeBin, [tsc, '-p', 'tsconfig.bundler.json'], app, cleanEnv()),
      run(nodeBin, ['esm-client.mjs'], app, cleanEnv()),
      run(nodeBin, ['engines.cjs', pkg.name], app, cleanEnv()),
    ]);
    results = { jest: jestRun, jestWithoutFlag, tscNodeNext, tscBundler, esmClient, engines };
  }, 240_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('is named gatehouse-bff (npm’s "gatehouse" is another project), and the README installs and imports that name', () => {
    expect(pkg.name).toBe('gatehouse-bff');
    expect(packagesToInstall).toContain(pkg.name);
    const imported = [...readme.matchAll(/from '(gatehouse[^']*)'/g)].map((m) => m[1]);
    expect(imported.length).toBeGreaterThan(0);
    for (const name of imported) expect(name).toMatch(/^gatehouse-bff(\/client|\/testing)?$/);
  });

  it('installs every package the complete test of docs/testing.md imports', () => {
    const imported = [...blocks(testing, 'ts')[0]!.matchAll(/from '([^']+)'/g)].map((m) => m[1]!);
    const packages = imported.filter((name) => !name.startsWith('node:')).map((name) => name.split('/')[0]!);
    expect(packages.length).toBeGreaterThan(0);
    for (const name of packages) expect(packagesToInstall).toContain(name);
  });

  it('is publishable and ships the built code, its types, README, LICENSE and the config examples, nothing else', () => {
    expect(pkg.private).toBeUndefined();
    expect(pkg.license).toBe('Apache-2.0');
    const files = tarballFiles.map((f) => f.replace(/^package\//, ''));
    for (const f of ['LICENSE', 'README.md', 'package.json', 'config/example.env', 'config/gatehouse.example.json'])
      expect(files).toContain(f);
    const targets = JSON.stringify(pkg.exports).match(/\.\/dist\/[^"]+/g) ?? [];
    expect(targets.length).toBeGreaterThanOrEqual(8);
    for (const t of targets) expect(files).toContain(t.slice(2));
    expect(files.filter((f) => !/^(LICENSE|README\.md|package\.json|config\/[^/]+|dist\/(src|client|client-cjs)\/.+)$/.test(f))).toEqual(
      [],
    );
    expect(files.filter((f) => /(^|\/)(test|bench|demo|screenshots)\/|\.test\.|\.build-stamp/.test(f))).toEqual([]);
    const license = execFileSync(
      'tar',
      [
        '-xzOf',
        join(
          work,
          readdirSync(work).find((f) => f.endsWith('.tgz'))!,
        ),
        'package/LICENSE',
      ],
      {
        encoding: 'utf8',
      },
    );
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
  });

  it('runs the complete test of docs/testing.md verbatim, and a CommonJS test, under Jest with the docs’ settings', () => {
    if (results.jest.code !== 0) throw new Error(`npm test in the fresh project failed:\n${results.jest.out}`);
    expect(results.jest.out).toMatch(/PASS test\/readme\.test\.ts/);
    expect(results.jest.out).toMatch(/PASS test\/kit\.test\.cjs/);
    expect(results.jest.out).toMatch(/Tests:\s+7 passed, 7 total/);
  });

  it('compiles the public types of all three entry points and the README’s embedding example with skipLibCheck false', () => {
    expect(results.tscNodeNext).toEqual({ code: 0, out: '' });
    expect(results.tscBundler).toEqual({ code: 0, out: '' });
  });

  it('loads the client as an ES module and as CommonJS, from their own builds', () => {
    if (results.esmClient.code !== 0) throw new Error(results.esmClient.out);
    const seen = JSON.parse(results.esmClient.out) as { esm: string; cjs: string; exports: string[]; loginUrl: string };
    expect(seen.esm).toMatch(/\/node_modules\/gatehouse-bff\/dist\/client\/index\.js$/);
    expect(seen.cjs).toMatch(/\/node_modules\/gatehouse-bff\/dist\/client-cjs\/index\.js$/);
    expect(seen.exports).toEqual(['function', 'function', 'function']);
    expect(seen.loginUrl).toBe('/bff/auth/login?returnTo=%2Forders');
  });

  it('stops Jest without --experimental-vm-modules with an error that names the flag', () => {
    expect(results.jestWithoutFlag.code).not.toBe(0);
    expect(results.jestWithoutFlag.out).toContain('needs NODE_OPTIONS=--experimental-vm-modules');
  });

  it('declares engines that every production dependency allows', () => {
    if (results.engines.code !== 0) throw new Error(results.engines.out);
    const deps = JSON.parse(results.engines.out) as { name: string; node: string }[];
    expect(deps.length).toBeGreaterThan(10);
    const probes: Version[] = [];
    for (let major = 0; major <= 30; major++) for (let minor = 0; minor <= 30; minor++) probes.push([major, minor, 0]);
    const allowed = probes.filter((v) => inRange(v, pkg.engines.node));
    expect(allowed.length).toBeGreaterThan(0);
    const narrower = deps.flatMap((d) =>
      allowed.filter((v) => !inRange(v, d.node)).map((v) => `${d.name} (node ${d.node}) refuses ${v.join('.')}`),
    );
    expect(narrower).toEqual([]);
  });
});
