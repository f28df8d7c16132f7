/**
 * A whole Gatehouse deployment for end-to-end tests: the real in-process IdP, a recording upstream,
 * real Redis (REDIS_URL from globalSetup, under a key prefix of its own) and one or more gateway
 * instances on real ports sharing it.
 */
import request from 'supertest';
import { Redis } from 'ioredis';
import { createGatehouse, guardServer, type Gatehouse, type GatehouseOptions } from '../../src';
import { createLogger, type Logger } from '../../src/log/logger';
import { startTestIdp, type TestIdp, type TestIdpOptions } from './idp';
import { startUpstream, type TestUpstream } from './upstream';
import { closeServer, reserveServer, uniquePrefix, type Agent, type ReservedServer } from './login';

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
  addInstance(overrides?: GatehouseOptions): Promise<Instance>;
  close(): Promise<void>;
}

export interface StackOptions {
  idp?: Partial<TestIdpOptions>;
  gateway?: GatehouseOptions;
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
  const servers: ReservedServer[] = [await reserveServer()];
  for (let i = 1; i < (opts.instances ?? 1); i++) servers.push(await reserveServer());
  const idp = await startTestIdp({
    redirectUri: [],
    postLogoutRedirectUri: [],
    ...(opts.backchannel && { backchannelLogoutUri: `${servers[0]!.url}/auth/backchannel-logout` }),
    ...opts.idp,
  });
  const upstream = await startUpstream();
  const useRedis = (opts.store ?? 'redis') === 'redis';
  const redis = useRedis ? new Redis(redisUrl()) : null;
  const instances: Instance[] = [];

  const registered = new Set<string>();
  // Every instance has its own public URL here (ephemeral ports): register each one's redirect URIs.
  const register = async (server: ReservedServer) => {
    registered.add(server.url);
    await idp.allowGateway(server.url);
  };

  const addInstance = async (server?: ReservedServer, overrides: GatehouseOptions = {}): Promise<Instance> => {
    const s = server ?? (await reserveServer());
    if (!registered.has(s.url)) await register(s);
    const gatehouse = await createGatehouse(
      {
        issuer: idp.issuer,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        publicUrl: s.url,
        upstream: upstream.url,
        sessionSecret: SESSION_SECRET,
        ...(useRedis && { redisUrl: redisUrl() }),
        keyPrefix: prefix,
        refreshSkewSeconds: 1,
        metricsPort: 0,
        logLevel: 'debug',
        ...opts.gateway,
        ...overrides,
      },
      { logger },
    );
    s.on('request', gatehouse.app);
    if (s.listenerCount('connect') === 0) guardServer(s);
    const inst: Instance = { server: s, gatehouse, url: s.url, agent: () => request.agent(s) };
    instances.push(inst);
    return inst;
  };

  for (const s of servers) await register(s);
  for (const s of servers) await addInstance(s);

  return {
    idp,
    upstream,
    gw: instances[0]!,
    instances,
    redis,
    prefix,
    logs,
    addInstance: (overrides) => addInstance(undefined, overrides),
    async close() {
      for (const i of instances) {
        await closeServer(i.server);
        await i.gatehouse.close();
      }
      if (redis) {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length) await redis.del(...keys);
        await redis.quit();
      }
      await upstream.close();
      await idp.close();
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
