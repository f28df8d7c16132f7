/**
 * The container image, without a Docker engine: scripts/docker-smoke.sh parses the Dockerfile and replays its
 * stages in temporary folders (npm ci + npm run build; then npm ci --omit=dev --ignore-scripts with dist/ only),
 * starts its CMD (`node dist/src/main.js`) with production dependencies only, as a non-root user, runs the
 * Dockerfile's HEALTHCHECK against it and stops it with SIGTERM. See the script for every check.
 *
 * A file of its own: two `npm ci` take 30-60 s, and jest runs this in one worker while the other runs the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const script = join(__dirname, '..', '..', 'scripts', 'docker-smoke.sh');

describe('Dockerfile (scripts/docker-smoke.sh)', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); // the script cleans up on SIGTERM
  });

  it('builds like the Dockerfile; the image starts with production dependencies only, passes its HEALTHCHECK and exits 0 on SIGTERM', async () => {
    // process.env carries REDIS_URL (globalSetup): the "ready" container uses the suite's Redis.
    child = spawn('bash', [script], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child!.on('close', (c) => resolve(c)));
    if (code !== 0) throw new Error(`scripts/docker-smoke.sh exited ${code}:\n${out}`);

    expect(out).toMatch(/ok: \d+ production packages present, none of the \d+ dev-only packages/);
    expect(out).toContain('ok: runtime folder holds only: dist node_modules package-lock.json package.json');
    expect(out).toContain('ok: /readyz 503 (IdP down), /healthz 200');
    expect(out).toMatch(/ok: \/readyz 200 \(IdP metadata loaded, Redis from REDIS_URL answers\)/);
    expect(out.match(/ok: HEALTHCHECK (\(verbatim from the Dockerfile\) )?exit 0/g)).toHaveLength(2);
    expect(out.match(/ok: SIGTERM -> drained and exited 0/g)).toHaveLength(2);
    expect(out).toContain('docker-smoke: PASSED');
  }, 180_000);
});
