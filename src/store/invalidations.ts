/**
 * Announcements that a session's records changed, between the replicas of one deployment (session/sessionCache.ts):
 * Redis pub/sub on one channel, `<prefix>changed`, carrying the session's storage hash (what Redis keys
 * already show, never an id or a token). PUBLISH reaches every subscriber of every node, Cluster included.
 *
 * Pub/sub delivers at most once and only to connected subscribers, so the cache is told whenever the
 * subscription is lost or (re)made, and keeps nothing while it is down.
 */
import { Cluster } from 'ioredis';
import type { Logger } from '../log/logger';
import type { RedisClient } from './redisClient';

export interface Invalidations {
  /**
   * Tells every replica; resolves once Redis has passed it on, and also when that failed (a lost
   * announcement is bounded by the cache's maximum age).
   */
  publish(hash: string): Promise<void>;
  /** `onChange` per announced hash; `onListening(true | false)` when the subscription is made or lost. */
  listen(onChange: (hash: string) => void, onListening: (listening: boolean) => void): void;
  close(): Promise<void>;
}

/** One process (the in-memory store): there is nobody to tell, and nothing can be missed. */
export function localInvalidations(): Invalidations {
  return {
    publish: () => Promise.resolve(),
    listen: (_onChange, onListening) => onListening(true),
    close: async () => undefined,
  };
}

export function redisInvalidations(redis: RedisClient, channel: string, log: Logger): Invalidations {
  // A subscribed connection can run nothing else: a connection of its own, to the same Redis.
  const sub: RedisClient = redis instanceof Cluster ? redis.duplicate() : redis.duplicate();
  let closed = false;
  let lastReport = 0;
  sub.on('error', (err: Error) => {
    if (Date.now() - lastReport < 5000) return;
    lastReport = Date.now();
    log.warn({ err }, 'redis subscription error; reconnecting (sessions are read from redis meanwhile)');
  });
  return {
    async publish(hash) {
      await redis.publish(channel, hash).catch((err: unknown) => log.debug({ err }, 'could not announce a session change'));
    },
    listen(onChange, onListening) {
      sub.on('message', (ch: string, hash: string) => {
        if (ch === channel) onChange(hash);
      });
      const subscribe = () => {
        sub.subscribe(channel).then(
          () => onListening(true),
          () => onListening(false), // the next 'ready' tries again
        );
      };
      sub.on('ready', subscribe);
      sub.on('close', () => onListening(false));
      if (sub.status === 'ready') subscribe();
    },
    async close() {
      if (closed) return;
      closed = true;
      await sub.quit().catch(() => sub.disconnect());
    },
  };
}
