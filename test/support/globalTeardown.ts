/** Jest globalTeardown: stops the redis-server that globalSetup spawned (if it spawned one). */
import fs from 'node:fs';
import { PID_FILE_ENV } from './globalSetup';

export default async function globalTeardown(): Promise<void> {
  const handle = globalThis.__GATEHOUSE_TEST_REDIS__;
  const pidFile = process.env[PID_FILE_ENV];
  if (handle) {
    globalThis.__GATEHOUSE_TEST_REDIS__ = undefined;
    await handle.stop();
  } else if (pidFile && fs.existsSync(pidFile)) {
    // fallback: globalThis was not shared with globalSetup (should not happen with Jest 30)
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  }
  if (pidFile) fs.rmSync(pidFile, { force: true });
}
