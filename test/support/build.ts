/**
 * dist/ for the tests that spawn the built gateway (`node dist/src/main.js`). Jest runs test files in parallel
 * workers, and two `tsc` runs writing dist/ at once can hand one of them a half-written file: buildOnce() builds
 * under a lock shared by every worker, and not at all when dist/ is newer than every source file.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(__dirname, '..', '..');
/** Holds the newest source mtime the last build saw (a file edited during a build is newer: the next call rebuilds). */
const stamp = join(root, 'dist', '.build-stamp');
/** One lock per checkout, so two clones testing on one machine don't wait for each other. */
const lock = join(tmpdir(), `gatehouse-build-${createHash('sha256').update(root).digest('hex').slice(0, 12)}.lock`);
/** A lock older than this was left by a worker that died mid-build. */
const STALE_LOCK_MS = 120_000;

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((name) => newestMtime(join(path, name))));
}

function mtimeOr0(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

function stampedMtime(): number {
  try {
    return Number(readFileSync(stamp, 'utf8'));
  } catch {
    return -1;
  }
}

const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Builds dist/ with `tsc -p tsconfig.build.json` unless it is up to date; safe to call from every test file. */
export function buildOnce(): void {
  for (;;) {
    try {
      mkdirSync(lock); // atomic: exactly one worker gets it
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() - mtimeOr0(lock) > STALE_LOCK_MS) rmSync(lock, { recursive: true, force: true });
      else pause(200);
    }
  }
  try {
    const sources = Math.max(...['src', 'scripts', 'tsconfig.json', 'tsconfig.build.json'].map((p) => newestMtime(join(root, p))));
    if (stampedMtime() === sources) return;
    rmSync(stamp, { force: true });
    execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
    writeFileSync(stamp, String(sources));
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
