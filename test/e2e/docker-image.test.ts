/**
 * The container image, without a container engine: scripts/docker-smoke.sh checks the Dockerfile for the usual
 * breakage (COPY sources, .dockerignore, the runtime stage's user, entry point and HEALTHCHECK, the probe run
 * against a stub). See the script for every check; docs/operations.md says how to build and run the real image.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';

const script = join(__dirname, '..', '..', 'scripts', 'docker-smoke.sh');

describe('Dockerfile (scripts/docker-smoke.sh)', () => {
  it('copies only what exists, runs as a non-root user, starts the built entry point and probes /healthz', async () => {
    const { code, out } = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile('bash', [script], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` }),
      );
    });
    if (code !== 0) throw new Error(`scripts/docker-smoke.sh exited ${code}:\n${out}`);
    expect(out).toContain('ok: runtime stage runs as user node');
    expect(out).toContain('ok: CMD starts dist/src/main.js (built from src/main.ts, copied into the runtime stage)');
    expect(out).toContain('ok: HEALTHCHECK exits 0 when /healthz answers 200');
    expect(out).toContain('docker-smoke: PASSED');
  });
});
