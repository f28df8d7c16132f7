/**
 * Spawning real redis-server processes for tests.
 *
 * - globalSetup uses `startRedisServer()` for the suite-wide Redis (unless REDIS_URL / GATEHOUSE_REDIS_URL is set).
 * - Tests that kill and restart Redis call `startRedisServer()` themselves to get a PRIVATE server, so they never
 *   disturb the shared one other test files use in parallel.
 *
 * Nothing here depends on ioredis: readiness is checked with a raw RESP `PING` over a TCP socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RedisServerHandle {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** pid of the running redis-server, or undefined while it is stopped */
  readonly pid: number | undefined;
  /** true while the process is running (between start/restart and stop/kill) */
  readonly running: boolean;
  /** graceful stop (SIGTERM, then SIGKILL after 5 s); resolves once the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** hard crash (SIGKILL); resolves once the process has exited. Idempotent. */
  kill(): Promise<void>;
  /** start redis-server again on the same port (stops it first if it still runs); resolves once it answers PING */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** extra redis-server command-line arguments, e.g. `['--maxmemory', '10mb']` */
  extraArgs?: string[];
  /** how long to wait for PING to answer (default 10 s) */
  startTimeoutMs?: number;
  /** a config file given as the first argument (Sentinel needs one it can rewrite) */
  configFile?: string;
}

/** Absolute path of redis-server: `$REDIS_SERVER_BIN` if set, else the first executable `redis-server` on PATH. */
export function findRedisServerBinary(): string {
  const override = process.env.REDIS_SERVER_BIN;
  if (override) {
    if (!isExecutable(override)) throw new Error(`REDIS_SERVER_BIN=${override} is not an executable file`);
    return override;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'redis-server');
    if (isExecutable(candidate)) return candidate;
  }
  throw new Error(
    'redis-server was not found on PATH. The tests need a real Redis: install it (e.g. `apt-get install -y redis-server`), ' +
      'or point REDIS_URL (or GATEHOUSE_REDIS_URL) at a running Redis, or set REDIS_SERVER_BIN to the binary.',
  );
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago (bind to 0, read it, close). */
export async function findFreePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      if (address === null || typeof address === 'string') {
        srv.close();
        reject(new Error('could not read the port of a probe socket'));
        return;
      }
      const { port } = address;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** One raw RESP PING to host:port; resolves true on `+PONG`, false on any error/other answer/timeout. */
export function pingRedis(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let answer = '';
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(ok);
    };
    const socket = net.connect({ port, host });
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
    socket.once('close', () => done(false));
  });
}

/** Keeps the last few KB of the child's output for error messages. */
function captureOutput(child: ChildProcess): () => string {
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail.trim();
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => child.once('exit', () => resolve()));
}

/**
 * Each server works in a folder of its own: a replica's full sync writes an RDB file there, and a server
 * sharing a folder would load it at start (a cluster node even claims the slots of the keys it finds).
 */
async function spawnOnce(bin: string, port: number, opts: StartRedisOptions): Promise<{ child: ChildProcess; output: () => string }> {
  const dir = path.join(os.tmpdir(), `gatehouse-redis-${port}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const args = [
    ...(opts.configFile ? [opts.configFile] : []),
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--dir',
    dir,
    '--loglevel',
    'warning',
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = captureOutput(child);
  let exited = false;
  let spawnError: Error | undefined;
  child.once('exit', () => {
    exited = true;
  });
  child.once('error', (err) => {
    spawnError = err;
    exited = true;
  });

  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
  while (Date.now() < deadline) {
    if (exited) {
      const why = spawnError ? spawnError.message : `exit code ${child.exitCode ?? child.signalCode}`;
      throw new RedisStartError(`redis-server on port ${port} exited during start-up (${why}): ${output()}`, output());
    }
    if (await pingRedis(port, '127.0.0.1', 500)) return { child, output };
    await sleep(50);
  }
  child.kill('SIGKILL');
  await waitForExit(child);
  throw new RedisStartError(`redis-server on port ${port} did not answer PING within the start timeout: ${output()}`, output());
}

class RedisStartError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
  }
}

/**
 * Spawn a private `redis-server --port <port> --bind 127.0.0.1 --save '' --appendonly no` and wait for PING.
 * Without `port`, a free port is picked (retried if another process grabs it first).
 */
export async function startRedisServer(port?: number, opts: StartRedisOptions = {}): Promise<RedisServerHandle> {
  const bin = findRedisServerBinary();
  let child: ChildProcess | undefined;
  let chosenPort = port ?? 0;

  for (let attempt = 0; ; attempt++) {
    const tryPort = port ?? (await findFreePort());
    try {
      ({ child } = await spawnOnce(bin, tryPort, opts));
      chosenPort = tryPort;
      break;
    } catch (err) {
      const inUse = err instanceof RedisStartError && /address already in use/i.test(err.output);
      if (port === undefined && inUse && attempt < 5) continue;
      throw err;
    }
  }

  const terminate = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c) return;
    child = undefined;
    if (c.exitCode === null && c.signalCode === null) {
      c.kill(signal);
      const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
      await waitForExit(c);
      clearTimeout(timer);
    }
    c.stdout?.destroy();
    c.stderr?.destroy();
    fs.rmSync(path.join(os.tmpdir(), `gatehouse-redis-${chosenPort}`), { recursive: true, force: true });
  };

  const handle: RedisServerHandle = {
    url: `redis://127.0.0.1:${chosenPort}`,
    port: chosenPort,
    get pid() {
      return child?.pid;
    },
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    stop: () => terminate('SIGTERM'),
    kill: () => terminate('SIGKILL'),
    restart: async () => {
      await terminate('SIGTERM');
      // the port is normally free again at once (redis-server sets SO_REUSEADDR); retry briefly if not
      for (let attempt = 0; ; attempt++) {
        try {
          ({ child } = await spawnOnce(bin, chosenPort, opts));
          return;
        } catch (err) {
          const inUse = err instanceof RedisStartError && /address already in use/i.test(err.output);
          if (!inUse || attempt >= 20) throw err;
          await sleep(100);
        }
      }
    },
  };
  return handle;
}
