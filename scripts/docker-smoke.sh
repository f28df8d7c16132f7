#!/usr/bin/env bash
# `npm run docker:smoke`: checks the Dockerfile without a container engine (none runs on the CI machines), for
# the mistakes that break an image most often:
#   - every COPY source exists in the build context and .dockerignore does not exclude it; a COPY --from names
#     an earlier stage;
#   - .dockerignore keeps node_modules/, dist/ and .env files out of the context;
#   - the runtime (last) stage runs as a user other than root;
#   - its CMD is exec form (so SIGTERM reaches node) and starts a file the build emits (dist/src/main.js from
#     src/main.ts);
#   - its HEALTHCHECK is exec form, probes /healthz on an exposed port, and works: run verbatim against a stub
#     answering 200 it exits 0, and with nothing listening it exits 1.
# Building and running the real image: docs/operations.md. Exit 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec node - <<'JS'
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const problems = [];
const ok = (msg) => console.log(`ok: ${msg}`);
const check = (cond, good, bad) => (cond ? ok(good) : problems.push(bad));

// The Dockerfile as instructions: continuation lines joined, comments dropped.
const instructions = [];
let current = '';
for (const line of fs.readFileSync('Dockerfile', 'utf8').split('\n')) {
  if (/^\s*#/.test(line) || (!current && !line.trim())) continue;
  current += line.replace(/\\\s*$/, ' ');
  if (/\\\s*$/.test(line)) continue;
  const [, op, rest] = /^(\w+)\s*(.*)$/s.exec(current.trim());
  instructions.push({ op: op.toUpperCase(), rest: rest.trim() });
  current = '';
}
const stages = [];
for (const ins of instructions) {
  if (ins.op === 'FROM') stages.push({ name: /\sAS\s+(\S+)$/i.exec(ins.rest)?.[1], instructions: [] });
  else stages.at(-1)?.instructions.push(ins);
}
const runtime = stages.at(-1);
if (!runtime) {
  console.error('docker-smoke: FAIL: the Dockerfile has no FROM');
  process.exit(1);
}
const execForm = (s) => {
  try {
    const v = JSON.parse(s);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
};

// .dockerignore, read as Docker does for plain patterns: the last matching line wins, a parent's match counts.
const rules = (fs.existsSync('.dockerignore') ? fs.readFileSync('.dockerignore', 'utf8') : '')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const negate = l.startsWith('!');
    const glob = path.posix.normalize(l.replace(/^!/, '')).replace(/^\/+|\/+$/g, '');
    const re = glob
      .split(/(\*\*\/|\*\*|\*|\?)/)
      .map((p) => ({ '**/': '(.*/)?', '**': '.*', '*': '[^/]*', '?': '[^/]' })[p] ?? p.replace(/[.+^${}()|[\]\\]/g, '\\$&'))
      .join('');
    return { negate, re: new RegExp(`^${re}$`) };
  });
const excluded = (rel) => {
  const parents = rel.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  return rules.reduce((out, r) => (parents.some((p) => r.re.test(p)) ? !r.negate : out), false);
};
for (const entry of ['node_modules', 'dist', '.env', 'config/.env.production'])
  check(excluded(entry), `.dockerignore excludes ${entry}`, `.dockerignore must exclude ${entry}`);

// COPY sources.
stages.forEach((stage, index) => {
  for (const { op, rest } of stage.instructions.filter((i) => i.op === 'COPY')) {
    const words = rest.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const args = words.filter((w) => !w.startsWith('--'));
    const sources = (execForm(args.join(' ')) ?? args).slice(0, -1);
    if (from !== undefined) {
      const known = stages.slice(0, index).some((s) => s.name === from);
      check(known, `${op} --from=${from} names an earlier stage`, `${op} --from=${from}: no earlier stage is named ${from}`);
      continue;
    }
    for (const src of sources) {
      const rel = path.posix.normalize(src).replace(/^\.?\/+|\/+$/g, '') || '.';
      const present = fs.existsSync(rel) && (rel === '.' || !excluded(rel));
      check(present, `COPY ${src} is in the build context`, `COPY ${src}: missing from the build context or excluded by .dockerignore`);
    }
  }
});

// The runtime stage: user, entry point, health check.
const last = (op) => runtime.instructions.filter((i) => i.op === op).at(-1);
const user = last('USER')?.rest;
check(user && !/^(root|0)(:|$)/.test(user), `runtime stage runs as user ${user}`, 'runtime stage: USER must name a user other than root');

const cmd = execForm(last('ENTRYPOINT')?.rest ?? last('CMD')?.rest ?? '');
const entry = cmd?.[0] === 'node' ? cmd[1] : undefined;
const source = entry && /^dist\/(.+)\.js$/.exec(entry)?.[1];
check(
  source && fs.existsSync(`${source}.ts`) && runtime.instructions.some((i) => i.op === 'COPY' && /\s\.?\/?dist\/?$/.test(i.rest)),
  `CMD starts ${entry} (built from ${source}.ts, copied into the runtime stage)`,
  `runtime stage: CMD must be exec form ["node", "dist/<file>.js"] of a source file that exists, with dist/ copied in (found ${JSON.stringify(cmd)})`,
);

const healthcheck = last('HEALTHCHECK')?.rest ?? '';
const probe = execForm(healthcheck.replace(/^(--\S+\s+)*CMD\s+/, ''));
const exposed = runtime.instructions.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.rest.split(/\s+/));
const probePort = /\|\|\s*(\d+)\)/.exec(probe?.join(' ') ?? '')?.[1];
check(
  probe && probe.join(' ').includes('/healthz') && exposed.includes(probePort),
  `HEALTHCHECK probes /healthz on exposed port ${probePort}`,
  'runtime stage: HEALTHCHECK must be exec form, probe /healthz, and default to an EXPOSEd port',
);
/** Runs the HEALTHCHECK's command verbatim (node = this Node), with GATEHOUSE_PORT set; resolves to its exit code. */
const runProbe = (port) =>
  new Promise((resolve) => {
    const [bin, ...args] = probe;
    const env = { ...process.env, GATEHOUSE_PORT: String(port) };
    const child = spawn(bin === 'node' ? process.execPath : bin, args, { env, stdio: 'ignore', timeout: 10_000 });
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code ?? 1));
  });

(async () => {
  if (probe) {
    const stub = http.createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 404).end());
    await new Promise((resolve) => stub.listen(0, '127.0.0.1', resolve));
    const { port } = stub.address();
    const up = await runProbe(port);
    await new Promise((resolve) => stub.close(resolve));
    const down = await runProbe(port);
    check(up === 0, 'HEALTHCHECK exits 0 when /healthz answers 200', `HEALTHCHECK exited ${up} against a /healthz answering 200`);
    check(down !== 0, `HEALTHCHECK exits ${down} when nothing listens`, 'HEALTHCHECK exited 0 with nothing listening');
  }
  for (const p of problems) console.error(`docker-smoke: FAIL: ${p}`);
  console.log(problems.length ? 'docker-smoke: FAILED' : 'docker-smoke: PASSED');
  process.exitCode = problems.length ? 1 : 0;
})();
JS
