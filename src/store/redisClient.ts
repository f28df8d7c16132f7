/**
 * Redis faults must never hang a request or delete a session (oauth2-proxy #1630, connect-redis #373):
 * no offline queue (a command while disconnected fails at once), a bounded command timeout, and
 * reconnection forever in the background with a capped backoff.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../log/logger';

export const REDIS_COMMAND_TIMEOUT_MS = 1000;

export function createRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 1500,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
  });
  let lastReport = 0;
  redis.on('error', (err: Error) => {
    if (Date.now() - lastReport < 5000) return;
    lastReport = Date.now();
    log.warn({ err }, 'redis connection error; reconnecting');
  });
  redis.on('ready', () => log.info({}, 'redis connected'));
  return redis;
}

/** Waits up to `ms` for the first connection; start-up goes on either way (/readyz tells). */
export function waitForRedis(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    redis.on('ready', onReady);
  });
}
