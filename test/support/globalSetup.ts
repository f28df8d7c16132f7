/**
 * Jest globalSetup (runs once, in the parent process, before any worker starts).
 *
 * - REDIS_URL or GATEHOUSE_REDIS_URL set: use that Redis (checked with PING) and export it as REDIS_URL.
 * - Otherwise spawn a private `redis-server` from PATH on a free port and export REDIS_URL=redis://127.0.0.1:<port>.
 *
 * Workers are forked after globalSetup returns, so they inherit process.env.REDIS_URL.
 * The spawned server is stopped by globalTeardown (handle on globalThis; pid file as a fallback).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServerHandle } from './redisServer';

export const PID_FILE_ENV = 'GATEHOUSE_TEST_REDIS_PIDFILE';

declare global {
  var __GATEHOUSE_TEST_REDIS__: RedisServerHandle | undefined;
}

async function checkExternalRedis(url: string): Promise<void> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: 3000,
    retryStrategy: () => null,
  });
  let lastError: Error | undefined;
  client.on('error', (err: Error) => {
    lastError = err;
  });
  try {
    await client.connect();
    const pong: string = await client.ping();
    if (pong !== 'PONG') throw new Error(`PING answered ${JSON.stringify(pong)}`);
  } catch (err) {
    throw new Error(
      `The Redis at ${redact(url)} (from REDIS_URL/GATEHOUSE_REDIS_URL) does not answer: ${(lastError ?? (err as Error)).message.replace(/\.$/, '')}. ` +
        'Unset both variables to let the tests start a private redis-server from PATH.',
    );
  } finally {
    client.disconnect();
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.href;
  } catch {
    return '<unparsable URL>';
  }
}

export default async function globalSetup(): Promise<void> {
  const external = process.env.REDIS_URL || process.env.GATEHOUSE_REDIS_URL;
  if (external) {
    await checkExternalRedis(external);
    process.env.REDIS_URL = external;
    return;
  }

  const redis = await startRedisServer();
  globalThis.__GATEHOUSE_TEST_REDIS__ = redis;
  const pidFile = path.join(os.tmpdir(), `gatehouse-test-redis-${process.pid}.pid`);
  fs.writeFileSync(pidFile, String(redis.pid ?? ''));
  process.env[PID_FILE_ENV] = pidFile;
  process.env.REDIS_URL = redis.url;
}
