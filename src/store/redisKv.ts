import type { RedisClient } from './redisClient';
import type { Kv } from './kv';
import { StoreUnavailableError } from './kv';

// Scripts touch one key, or two keys of one session, which share a hash tag: cluster-safe.
const CAS = `
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then v = tonumber(string.match(cur, '^(%d+)|')) or -1 end
if v ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] == 'keep' then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1`;
const SWAP = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0`;
const REPLACE_WITH_COMPANION = `
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX') then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1`;
const SCHEDULE = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1`;
const ADMIT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 1`;
const COUNT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;
const HASH_TAKE = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v`;
const HASH_PUT = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1`;
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

type Scripted = RedisClient & {
  gatehouseCas(key: string, expected: number, value: string, ttlMs: number | 'keep'): Promise<number>;
  gatehouseSwap(key: string, owner: string, value: string, ttlMs: number): Promise<number>;
  gatehouseHashPut(key: string, field: string, value: string, ttlMs: number): Promise<number>;
  gatehouseRelease(key: string, owner: string): Promise<number>;
  gatehouseReplacePair(key: string, companion: string, value: string, ttlMs: number, companionTtlMs: number): Promise<number>;
  gatehouseHashTake(key: string, field: string): Promise<string | null>;
  gatehouseCount(key: string, windowMs: number): Promise<number>;
  gatehouseAdmit(key: string, member: string, untilMs: number, nowMs: number, max: number, keyTtlMs: number): Promise<number>;
  gatehouseSchedule(key: string, member: string, atMs: number, keyTtlMs: number): Promise<number>;
  gatehouseRenew(key: string, owner: string, ttlMs: number): Promise<number>;
};

/** Reports each command's latency and whether it failed (metrics). */
export type CommandObserver = (seconds: number, failed: boolean) => void;
const ignore: CommandObserver = () => undefined;

/** Every command error becomes a StoreUnavailableError: callers never mistake a fault for a missing record. */
async function guard<T>(op: () => Promise<T>, report: CommandObserver = ignore): Promise<T> {
  const start = performance.now();
  try {
    const result = await op();
    report((performance.now() - start) / 1000, false);
    return result;
  } catch (err) {
    report((performance.now() - start) / 1000, true);
    throw new StoreUnavailableError(err);
  }
}

export interface RedisKvOptions {
  observer?: CommandObserver;
  /**
   * Sentinel: replicas that must hold a lock or a token write before it counts (Redis WAIT, bounded by
   * REPLICA_WAIT_MS); see durable(). 0 = do not wait.
   */
  waitForReplicas?: number;
}

/** The most a lock or token write waits for replicas before it fails as a store fault. */
export const REPLICA_WAIT_MS = 250;

export class RedisKv implements Kv {
  private readonly redis: Scripted;
  private readonly guard: <T>(op: () => Promise<T>) => Promise<T>;
  private readonly replicas: number;

  constructor(redis: RedisClient, options: RedisKvOptions = {}) {
    this.guard = (op) => guard(op, options.observer);
    this.replicas = options.waitForReplicas ?? 0;
    redis.defineCommand('gatehouseCas', { numberOfKeys: 1, lua: CAS });
    redis.defineCommand('gatehouseRelease', { numberOfKeys: 1, lua: RELEASE });
    redis.defineCommand('gatehouseSwap', { numberOfKeys: 1, lua: SWAP });
    redis.defineCommand('gatehouseHashPut', { numberOfKeys: 1, lua: HASH_PUT });
    redis.defineCommand('gatehouseReplacePair', { numberOfKeys: 2, lua: REPLACE_WITH_COMPANION });
    redis.defineCommand('gatehouseHashTake', { numberOfKeys: 1, lua: HASH_TAKE });
    redis.defineCommand('gatehouseCount', { numberOfKeys: 1, lua: COUNT });
    redis.defineCommand('gatehouseAdmit', { numberOfKeys: 1, lua: ADMIT });
    redis.defineCommand('gatehouseSchedule', { numberOfKeys: 1, lua: SCHEDULE });
    redis.defineCommand('gatehouseRenew', { numberOfKeys: 1, lua: RENEW });
    this.redis = redis as Scripted;
  }

  get(key: string) {
    return this.guard(() => this.redis.get(key));
  }
  async getPair(a: string, b: string): Promise<[string | null, string | null]> {
    const [x, y] = await this.guard(() => this.redis.mget(a, b));
    return [x ?? null, y ?? null];
  }
  async set(key: string, value: string, ttlMs: number) {
    await this.guard(() => this.redis.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs))));
  }
  async replace(key: string, value: string, ttlMs: number) {
    return (await this.guard(() => this.redis.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'XX'))) === 'OK';
  }
  async replaceWithCompanion(key: string, value: string, ttlMs: number, companion: string, companionTtlMs: number) {
    const ms = (t: number) => Math.max(1, Math.ceil(t));
    return (await this.guard(() => this.redis.gatehouseReplacePair(key, companion, value, ms(ttlMs), ms(companionTtlMs)))) === 1;
  }
  async setIfAbsent(key: string, value: string, ttlMs: number) {
    const taken = (await this.guard(() => this.redis.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'))) === 'OK';
    if (taken) await this.durable();
    return taken;
  }
  getDel(key: string) {
    return this.guard(() => this.redis.getdel(key));
  }
  async del(...keys: string[]) {
    // One DEL per key: keys of different sessions may live in different cluster slots.
    await this.guard(() => Promise.all(keys.map((k) => this.redis.del(k))));
  }
  async expire(key: string, ttlMs: number) {
    await this.guard(() => this.redis.pexpire(key, Math.max(1, Math.ceil(ttlMs))));
  }
  async compareAndSet(key: string, expected: number, value: string, ttlMs: number | 'keep') {
    const ttl = ttlMs === 'keep' ? 'keep' : Math.max(1, Math.ceil(ttlMs));
    const written = (await this.guard(() => this.redis.gatehouseCas(key, expected, value, ttl))) === 1;
    if (written) await this.durable();
    return written;
  }
  async swapLock(key: string, owner: string, value: string, ttlMs: number) {
    return (await this.guard(() => this.redis.gatehouseSwap(key, owner, value, Math.max(1, Math.ceil(ttlMs))))) === 1;
  }
  async releaseLock(key: string, owner: string) {
    return (await this.guard(() => this.redis.gatehouseRelease(key, owner))) === 1;
  }
  async renewLock(key: string, owner: string, ttlMs: number) {
    return (await this.guard(() => this.redis.gatehouseRenew(key, owner, Math.max(1, Math.ceil(ttlMs))))) === 1;
  }
  async hashPut(key: string, field: string, value: string, ttlMs: number) {
    await this.guard(() => this.redis.gatehouseHashPut(key, field, value, Math.max(1, Math.ceil(ttlMs))));
  }
  async hashDelete(key: string, ...fields: string[]) {
    if (fields.length) await this.guard(() => this.redis.hdel(key, ...fields));
  }
  hashGetAll(key: string) {
    return this.guard(() => this.redis.hgetall(key));
  }
  hashTake(key: string, field: string) {
    return this.guard(() => this.redis.gatehouseHashTake(key, field));
  }
  async schedule(key: string, member: string, atMs: number, keyTtlMs: number) {
    await this.guard(() => this.redis.gatehouseSchedule(key, member, atMs, Math.max(1, Math.ceil(keyTtlMs))));
  }
  async reschedule(key: string, member: string, atMs: number) {
    await this.guard(() => this.redis.zadd(key, 'XX', atMs, member));
  }
  async unschedule(key: string, member: string) {
    await this.guard(() => this.redis.zrem(key, member));
  }
  due(key: string, nowMs: number, limit: number) {
    return this.guard(() => this.redis.zrangebyscore(key, '-inf', nowMs, 'LIMIT', 0, limit));
  }
  async claim(key: string, member: string) {
    return (await this.guard(() => this.redis.zrem(key, member))) === 1;
  }
  async admit(key: string, member: string, untilMs: number, nowMs: number, max: number) {
    const ttl = Math.max(1, Math.ceil(untilMs - nowMs));
    return (await this.guard(() => this.redis.gatehouseAdmit(key, member, untilMs, nowMs, max, ttl))) === 1;
  }
  countInWindow(key: string, windowMs: number) {
    return this.guard(() => this.redis.gatehouseCount(key, Math.max(1, Math.ceil(windowMs))));
  }
  /**
   * Sentinel failover safety. Redis replicates asynchronously, and during a failover two servers can both act
   * as master for a moment: the old one (until Sentinel demotes it, which discards what it took meanwhile) and
   * the promoted replica. A refresh lock taken on the old one would let two replicas refresh at once, and a
   * token write made there would vanish, bringing back the refresh token the IdP rotated away; either way the
   * next grant is a reuse and the IdP revokes the grant (RFC 9700 §4.14.2). So a lock or token write counts
   * only once `waitForReplicas` replicas hold it (the client-side form of min-replicas-to-write); otherwise
   * it fails as a store fault, which keeps the session and is retried.
   */
  async durable() {
    if (this.replicas === 0) return;
    const acks = await this.guard(() => this.redis.call('WAIT', this.replicas, REPLICA_WAIT_MS) as Promise<number>);
    if (acks < this.replicas) throw new StoreUnavailableError(new Error(`write reached ${acks} of ${this.replicas} replicas`));
  }
  async ping() {
    await this.guard(() => this.redis.ping());
  }
}
