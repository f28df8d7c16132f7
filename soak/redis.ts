/**
 * The soak's Redis: a private redis-server on a free port, its data in a temporary folder, with the
 * append-only file written and fsynced before every reply (`appendfsync always`): a restart that keeps the
 * data keeps every write the gateways were told succeeded, a just-rotated refresh token included
 * (`everysec` could lose the last second: data loss, not a kept restart). Faults: a pause (SIGSTOP, SIGCONT),
 * a crash and restart with the data kept (SIGKILL, same folder), and one with the data gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

export interface KeyCensus {
  keys: number;
  /** keys without a TTL (PTTL -1): never expire by themselves */
  noTtl: number;
  /** the longest remaining TTL, ms */
  maxTtlMs: number;
  /** by kind (the key up to its hash tag, or with its random part starred) */
  byKind: Record<string, { keys: number; noTtl: number; maxTtlMs: number }>;
}

export class SoakRedis {
  private proc: ChildProcess | undefined;
  readonly url: string;
  /** the soak's own connection (samples, census); reconnects by itself after a restart */
  readonly client: Redis;
  version = 'unknown';

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {
    this.url = `redis://127.0.0.1:${port}`;
    this.client = new Redis(this.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 2000,
      retryStrategy: () => 200,
    });
    this.client.on('error', () => undefined);
  }

  static async start(port: number, dir: string): Promise<SoakRedis> {
    const r = new SoakRedis(port, dir);
    mkdirSync(r.dataDir, { recursive: true });
    await r.spawn();
    await r.client.connect();
    r.version = /redis_version:(\S+)/.exec(await r.client.info('server'))?.[1] ?? 'unknown';
    return r;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private get dataDir(): string {
    return join(this.dir, 'data');
  }

  private async spawn(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dataDir, '--save', ''];
    args.push('--appendonly', 'yes', '--appendfsync', 'always', '--loglevel', 'warning', '--logfile', join(this.dir, 'redis.log'));
    const proc = spawn('redis-server', args, { stdio: 'ignore' });
    this.proc = proc;
    proc.once('error', (err) => {
      process.stderr.write(`soak: could not start redis-server (is it on PATH?): ${err.message}\n`);
      process.exit(1);
    });
    // Ready once it answers PING (a restart first loads its append-only file).
    const probe = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 });
    probe.on('error', () => undefined);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await probe
        .connect()
        .then(() => probe.ping())
        .then(
          (p) => p === 'PONG',
          () => false,
        );
      probe.disconnect();
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${this.port}`);
      await sleep(50);
    }
  }

  /** SIGSTOP for `ms`, then SIGCONT: every command waits or times out meanwhile. */
  async pause(ms: number): Promise<void> {
    this.proc?.kill('SIGSTOP');
    await sleep(ms);
    this.proc?.kill('SIGCONT');
  }

  /**
   * SIGKILL (a crash), then a new redis-server on the same port: with its data folder, or an empty one.
   * `beforeKill` runs at the last moment the data is there.
   */
  async crashAndRestart(keepData: boolean, beforeKill?: () => void): Promise<void> {
    const proc = this.proc;
    beforeKill?.();
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
    }
    if (!keepData) {
      rmSync(this.dataDir, { recursive: true, force: true });
      mkdirSync(this.dataDir, { recursive: true });
    }
    await this.spawn();
  }

  async sample(): Promise<{ usedMemory: number; keys: number } | undefined> {
    try {
      const [info, keys] = await Promise.all([this.client.info('memory'), this.client.dbsize()]);
      return { usedMemory: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN), keys };
    } catch {
      return undefined;
    }
  }

  /** Every key and its remaining TTL. */
  async census(): Promise<KeyCensus> {
    const c: KeyCensus = { keys: 0, noTtl: 0, maxTtlMs: 0, byKind: {} };
    let cursor = '0';
    do {
      const [next, keys] = await this.client.scan(cursor, 'COUNT', 1000);
      cursor = next;
      if (keys.length === 0) continue;
      const pipe = this.client.pipeline();
      for (const k of keys) pipe.pttl(k);
      const ttls = (await pipe.exec()) ?? [];
      keys.forEach((k, i) => {
        const ttl = Number(ttls[i]?.[1] ?? -2);
        if (ttl === -2) return; // expired meanwhile
        const kind = kindOf(k);
        const e = (c.byKind[kind] ??= { keys: 0, noTtl: 0, maxTtlMs: 0 });
        c.keys++;
        e.keys++;
        if (ttl === -1) {
          c.noTtl++;
          e.noTtl++;
        } else {
          c.maxTtlMs = Math.max(c.maxTtlMs, ttl);
          e.maxTtlMs = Math.max(e.maxTtlMs, ttl);
        }
      });
    } while (cursor !== '0');
    return c;
  }

  async stop(): Promise<void> {
    this.client.disconnect();
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGCONT');
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000).then(() => proc.kill('SIGKILL'))]);
    }
  }
}

/** `soak:s:{abc}` → `soak:s:`; `soak:o:9f8e…` → `soak:o:*` */
export function kindOf(key: string): string {
  const tag = key.indexOf('{');
  if (tag >= 0) return key.slice(0, tag);
  return key.replace(/[A-Za-z0-9_-]{16,}/g, '*');
}
