/**
 * Redis for the bench: a private `redis-server` on a free port (no persistence), or the one at REDIS_URL.
 * Counts what the gateway asks of it: INFO commandstats between CONFIG RESETSTAT calls (every command, also
 * those a Lua script runs), and MONITOR for a short accounting window, which tells a network round trip
 * (a command from a client) from a command run inside a script.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './procs';

/** The bench's own commands, never counted against the gateway. */
const OWN = /^(info|config\|.*|command\|.*|monitor|client\|.*|ping|select)$/;

export interface BenchRedis {
  url: string;
  client: Redis;
  /** redis-server's pid when the bench started it. */
  pid: number | undefined;
  version: string;
  close(): Promise<void>;
}

export async function startRedis(): Promise<BenchRedis> {
  let url = process.env.REDIS_URL;
  let proc: ChildProcess | undefined;
  if (!url) {
    const port = await freePort();
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    proc.once('error', (err) => {
      throw new Error(`could not start redis-server (install it, or set REDIS_URL): ${err.message}`);
    });
    url = `redis://127.0.0.1:${port}`;
  }
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await client.connect();
      break;
    } catch (err) {
      // redis-server is still starting: connect again once the client has given up on this attempt.
      if (i > 50) throw err;
      await sleep(100);
      client.disconnect();
    }
  }
  // From now on a lost connection is retried as usual.
  client.options.retryStrategy = (times) => Math.min(times * 50, 1000);
  const version = /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? 'unknown';
  return {
    url,
    client,
    pid: proc?.pid,
    version,
    async close() {
      await client.quit().catch(() => client.disconnect());
      proc?.kill('SIGTERM');
    },
  };
}

/** Calls per command since the last reset (names as INFO shows them: `get`, `evalsha`, `client|setname`). */
export async function commandStats(client: Redis): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await client.info('commandstats')).matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)) {
    if (!OWN.test(m[1]!)) out[m[1]!] = Number(m[2]);
  }
  return out;
}

export async function resetStats(client: Redis): Promise<void> {
  await client.config('RESETSTAT');
}

/** CPU seconds redis-server has used (user + system, from INFO: works for a remote one too). */
export async function redisCpuSeconds(client: Redis): Promise<number> {
  const info = await client.info('cpu');
  const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return num('used_cpu_user') + num('used_cpu_sys');
}

/** Which of these commands write (Redis' own `write` flag, from COMMAND INFO). */
export async function writeCommands(client: Redis, names: string[]): Promise<Set<string>> {
  const writes = new Set<string>();
  const top = [...new Set(names.map((n) => n.split('|')[0]!))];
  if (top.length === 0) return writes;
  const info = (await client.call('COMMAND', 'INFO', ...top)) as Array<[string, number, string[]] | null>;
  for (const entry of info) if (entry && entry[2].includes('write')) writes.add(entry[0]);
  return new Set(names.filter((n) => writes.has(n.split('|')[0]!)));
}

export interface MonitorCount {
  /** Commands sent by clients (each one a round trip; MGET and EVALSHA count once). */
  fromClients: Record<string, number>;
  /** Commands run inside Lua scripts (no round trip of their own). */
  fromScripts: Record<string, number>;
}

/** Runs `during` with MONITOR on and counts every command by where it came from. */
export async function monitorWhile(url: string, during: () => Promise<unknown>): Promise<MonitorCount> {
  const watcher = new Redis(url, { lazyConnect: true });
  await watcher.connect();
  const monitor = await watcher.monitor();
  const counts: MonitorCount = { fromClients: {}, fromScripts: {} };
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    const name = (args[0] ?? '').toLowerCase();
    if (OWN.test(name)) return;
    const bucket = source === 'lua' ? counts.fromScripts : counts.fromClients;
    bucket[name] = (bucket[name] ?? 0) + 1;
  });
  try {
    await during();
    await sleep(50); // the last lines of the monitor stream
  } finally {
    monitor.disconnect();
    watcher.disconnect();
  }
  return counts;
}

export interface KeyShape {
  /** A per-session key up to its hash tag (`gatehouse:s:`), or a whole shared key (`gatehouse:e:due`). */
  kind: string;
  /** Per-session keys carry a `{hash}` tag; shared ones (the expiry ledger) get one member per session. */
  shared: boolean;
  type: 'string' | 'hash' | 'zset';
  /** Length of the string, of a hash field's name, or of a sorted-set member. */
  size: number;
  /** Length of a hash field's value. */
  valueSize: number;
}

/** What a live session left under `prefix`: its own keys and its entries in shared ones. */
export async function sessionKeyShapes(client: Redis, prefix: string): Promise<KeyShape[]> {
  const shapes: KeyShape[] = [];
  for (const key of await client.keys(`${prefix}*`)) {
    const tagAt = key.indexOf('{');
    const shared = tagAt < 0;
    const kind = shared ? key : key.slice(0, tagAt);
    const type = await client.type(key);
    if (type === 'string') shapes.push({ kind, shared, type, size: await client.strlen(key), valueSize: 0 });
    else if (type === 'hash') {
      const [field = '', value = ''] = Object.entries(await client.hgetall(key))[0] ?? [];
      shapes.push({ kind, shared, type, size: field.length, valueSize: value.length });
    } else if (type === 'zset') {
      const [member = ''] = await client.zrange(key, '0', '0');
      shapes.push({ kind, shared, type, size: member.length, valueSize: 0 });
    }
  }
  return shapes;
}

/**
 * Fills records the way the seeding script below does: one Lua call per 10,000 sessions, run inside Redis
 * (pipelining 500,000 commands through a client costs more time than the whole rest of the bench). Values
 * are filler of the live records' sizes; keys end with a unique counter. Standalone Redis only.
 */
const SEED = `
local first, count, due = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local shapes = {}
for j = 4, #ARGV, 5 do shapes[#shapes + 1] = { ARGV[j], ARGV[j + 1] == '1', ARGV[j + 2], tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4]) } end
local function unique(n, i)
  local id = string.format('%08x', i)
  return string.rep('q', math.max(0, n - 8)) .. id
end
for i = first, first + count - 1 do
  local tag = '{' .. unique(32, i) .. '}'
  for _, s in ipairs(shapes) do
    local key = s[2] and s[1] or (s[1] .. tag)
    if s[3] == 'string' then redis.call('SET', key, string.rep('v', s[4]), 'EX', 3600)
    elseif s[3] == 'hash' then redis.call('HSET', key, unique(s[4], i), string.rep('v', s[5]))
    else redis.call('ZADD', key, due, unique(s[4], i)) end
    if not s[2] and s[3] ~= 'string' then redis.call('EXPIRE', key, 3600) end
  end
end
return count`;

/**
 * Adds `count` sessions' worth of records shaped like the live one (same sizes, one-hour TTL, ledger
 * entries due in an hour). They need not open: they only make Redis as big as a busy deployment's.
 */
export async function seedSessions(client: Redis, shapes: KeyShape[], count: number, batch = 10_000): Promise<void> {
  const due = String(Date.now() + 3_600_000);
  const args = shapes.flatMap((s) => [s.kind, s.shared ? '1' : '0', s.type, String(s.size), String(s.valueSize)]);
  for (let done = 0; done < count; done += batch) {
    await client.eval(SEED, 0, String(done), String(Math.min(batch, count - done)), due, ...args);
  }
}
