/**
 * A whole Gatehouse deployment for end-to-end tests, built from the test kit (src/testing, `gatehouse-bff/testing`):
 * the real in-process IdP, a recording upstream, real Redis (REDIS_URL from globalSetup, under a key prefix
 * of its own) and one or more gateway instances on real ports sharing it.
 */
import request from 'supertest';
import { Redis } from 'ioredis';
import type { Gatehouse, GatehouseOptions } from '../../src';
import { createLogger, type Logger } from '../../src/log/logger';
import { createTestGatehouse, type TestGatehouse } from '../../src/testing/createTestGatehouse';
import type { TestIdp, TestIdpOptions } from './idp';
import { startUpstream, type TestUpstream } from './upstream';
import { uniquePrefix, type Agent, type ReservedServer } from './login';

export const SESSION_SECRET = 'e2e-session-secret-0123456789abcdef0123456789';

export interface Instance {
  server: ReservedServer;
  gatehouse: Gatehouse;
  url: string;
  /** A cookie-keeping client, like one browser. */
  agent(): Agent;
}

export interface Stack {
  idp: TestIdp;
  upstream: TestUpstream;
  /** The first gateway instance. */
  gw: Instance;
  instances: Instance[];
  /** A Redis client for inspecting what the gateway stored (null with the memory store). */
  redis: Redis | null;
  prefix: string;
  /** Every log line the gateways wrote. */
  logs: string[];
  /** Another gateway instance sharing the same IdP client, Redis and prefix (a replica); `overrides` change its options. */
  addInstance(overrides?: Partial<GatehouseOptions>): Promise<Instance>;
  close(): Promise<void>;
}

export interface StackOptions {
  idp?: Partial<TestIdpOptions>;
  gateway?: Partial<GatehouseOptions>;
  /** 'redis' (default) or 'memory'. */
  store?: 'redis' | 'memory';
  instances?: number;
  /** Register the first instance's /auth/backchannel-logout with the IdP (BCL 1.0; `sid` in ID tokens). */
  backchannel?: boolean;
}

export function redisUrl(): string {
  const url = process.env.REDIS_URL ?? process.env.GATEHOUSE_REDIS_URL;
  if (!url) throw new Error('REDIS_URL is not set: run the tests through jest (globalSetup starts a redis-server)');
  return url;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const prefix = uniquePrefix();
  const logs: string[] = [];
  const logger: Logger = createLogger('debug', (line) => logs.push(line));
  const useRedis = (opts.store ?? 'redis') === 'redis';
  const upstream = await startUpstream();
  const redis = useRedis ? new Redis(redisUrl()) : null;
  const kits: TestGatehouse[] = [];
  const instances: Instance[] = [];

  // Every instance is a kit gateway on its own port, sharing the first one's IdP, the upstream and the prefix.
  const addInstance = async (overrides: Partial<GatehouseOptions> = {}): Promise<Instance> => {
    const kit = await createTestGatehouse({
      idp: kits[0]?.idp ?? opts.idp ?? {},
      backchannel: kits.length === 0 && opts.backchannel === true,
      upstream: upstream.url,
      ...(useRedis && { redisUrl: redisUrl() }),
      gateway: { sessionSecret: SESSION_SECRET, keyPrefix: prefix, logLevel: 'debug', ...opts.gateway, ...overrides },
      deps: { logger },
    });
    kits.push(kit);
    const inst: Instance = { server: kit.app, gatehouse: kit.gatehouse, url: kit.url, agent: () => request.agent(kit.app) };
    instances.push(inst);
    return inst;
  };

  try {
    for (let i = 0; i < (opts.instances ?? 1); i++) await addInstance();
  } catch (err) {
    for (const k of kits.reverse()) await k.close();
    await upstream.close();
    await redis?.quit();
    throw err;
  }

  return {
    idp: kits[0]!.idp,
    upstream,
    gw: instances[0]!,
    instances,
    redis,
    prefix,
    logs,
    addInstance,
    async close() {
      // the first kit owns the IdP: it closes last
      for (const k of [...kits].reverse()) await k.close();
      if (redis) {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length) await redis.del(...keys);
        await redis.quit();
      }
      await upstream.close();
    },
  };
}

/** Every key (and its value and TTL) the gateway wrote under this stack's prefix. */
export async function dumpRedis(stack: Stack): Promise<Array<{ key: string; value: string; ttl: number }>> {
  const r = stack.redis!;
  const keys = await r.keys(`${stack.prefix}*`);
  const entries = await Promise.all(
    keys.map(async (key) => {
      // Strings (sessions, token records, locks, transactions), hashes (the sub/sid indexes, the expiry
      // ledger's entries) and the expiry ledger's sorted set. A key listed a moment ago may be gone now.
      const type = await r.type(key);
      if (type === 'none') return undefined;
      const value =
        type === 'hash'
          ? JSON.stringify(await r.hgetall(key))
          : type === 'zset'
            ? JSON.stringify(await r.zrangebyscore(key, '-inf', '+inf', 'WITHSCORES'))
            : ((await r.get(key)) ?? '');
      const ttl = await r.pttl(key);
      return ttl === -2 ? undefined : { key, value, ttl };
    }),
  );
  return entries.filter((e) => e !== undefined);
}

/** The headers an SPA sends on every same-origin call. */
export const SPA = { 'X-CSRF': '1' } as const;
