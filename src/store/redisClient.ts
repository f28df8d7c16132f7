/**
 * Redis faults must never hang a request or end a session (a failed read is not a missing session):
 * no offline queue (a command while disconnected fails at once), a bounded command timeout, and
 * reconnection forever in the background with a capped backoff. The same holds for each topology:
 * one server, a Sentinel-managed master (found again after a failover), or a Cluster.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { ConnectionOptions } from 'node:tls';
import type { Logger } from '../log/logger';
import { describeTopology, type RedisTls, type RedisTopology } from '../config/redisTopology';

export const REDIS_COMMAND_TIMEOUT_MS = 1000;

/** A connection to any supported topology; both speak the same commands and scripts. */
export type RedisClient = Redis | Cluster;

const backoff = (attempt: number) => Math.min(50 * 2 ** attempt, 1000);

const COMMON = {
  maxRetriesPerRequest: 1,
  commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
  connectTimeout: 1500,
} satisfies RedisOptions;

function tlsOptions(tls: RedisTls | undefined): ConnectionOptions | undefined {
  return tls && { ...(tls.ca !== undefined && { ca: tls.ca }), ...(tls.servername !== undefined && { servername: tls.servername }) };
}

/**
 * After a failover the old master answers writes with READONLY until the client finds the new one:
 * reconnect (through Sentinel) at once instead of failing writes until the next connection error.
 */
const reconnectOnReadonly = (err: Error) => (err.message.startsWith('READONLY') ? 2 : false);

export function createRedis(topology: RedisTopology | string, log: Logger): RedisClient {
  const t: RedisTopology = typeof topology === 'string' ? { mode: 'standalone', url: topology } : topology;
  let client: RedisClient;
  switch (t.mode) {
    case 'standalone':
      client = new Redis(t.url, { ...COMMON, enableOfflineQueue: false, retryStrategy: backoff, reconnectOnError: reconnectOnReadonly });
      break;
    case 'sentinel': {
      const tls = tlsOptions(t.tls);
      client = new Redis({
        ...COMMON,
        enableOfflineQueue: false,
        retryStrategy: backoff,
        reconnectOnError: reconnectOnReadonly,
        sentinels: t.sentinels.map((n) => ({ host: n.host, port: n.port })),
        name: t.name,
        role: 'master',
        db: t.db,
        ...t.auth,
        sentinelUsername: t.sentinelAuth.username,
        sentinelPassword: t.sentinelAuth.password,
        sentinelRetryStrategy: backoff,
        sentinelCommandTimeout: REDIS_COMMAND_TIMEOUT_MS,
        // Subscribe to Sentinel's +switch-master: move to the new master as soon as it is elected.
        failoverDetector: true,
        ...(tls && { tls, enableTLSForSentinelMode: true, sentinelTLS: tls }),
      });
      break;
    }
    case 'cluster': {
      const tls = tlsOptions(t.tls);
      client = new Cluster(
        t.nodes.map((n) => ({ host: n.host, port: n.port })),
        {
          enableOfflineQueue: false,
          clusterRetryStrategy: backoff,
          scaleReads: 'master',
          slotsRefreshTimeout: REDIS_COMMAND_TIMEOUT_MS,
          retryDelayOnFailover: 100,
          redisOptions: { ...COMMON, ...t.auth, reconnectOnError: reconnectOnReadonly, ...(tls && { tls }) },
        },
      );
      break;
    }
  }
  let lastReport = 0;
  client.on('error', (err: Error) => {
    if (Date.now() - lastReport < 5000) return;
    lastReport = Date.now();
    log.warn({ err }, 'redis connection error; reconnecting');
  });
  client.on('ready', () => log.info({ redis: describeTopology(t) }, 'redis connected'));
  return client;
}

/** Waits up to `ms` for the first connection; start-up goes on either way (/readyz tells). */
export function waitForRedis(redis: RedisClient, ms: number): Promise<boolean> {
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
