/**
 * The gateway under test: Gatehouse's own entry point (`dist/src/main.js`, what `npm start` runs), in a
 * child process configured only by the environment, exactly as an operator would run it (default log
 * level, so one log line per request; the logs go to a temporary file).
 */
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import type { TestIdp } from '../src/testing/testIdp';
import { freePort, spawnNode, stop, waitFor200, type Child } from './procs';

export interface GatewayOptions {
  name: string;
  idp: TestIdp;
  upstreamPort: number;
  redisUrl: string;
  keyPrefix: string;
  /** e.g. ['--cpu-prof', '--cpu-prof-dir', dir] */
  execArgv?: string[];
  /**
   * Lets the bench run a full garbage collection in the gateway (collectGarbage()), for memory readings that
   * count what is kept, not garbage not collected yet, or profile it for a while (inspect()): the inspector's
   * port is set, but it stays off until the first call (SIGUSR1), so the gateway runs as usual until then.
   */
  gcOnDemand?: boolean;
  env?: Record<string, string>;
}

/** V8's heap as the gateway's own metrics report it (prom-client's default Node.js metrics). */
export interface HeapSizes {
  /** Young generation, reserved: V8 doubles it under sustained allocation, up to its maximum. */
  newSpaceBytes: number;
  /** Old generation in use: what outlives requests (a leak would show here). */
  oldUsedBytes: number;
  /** The whole heap in use (every space), and memory V8 tracks outside it (Buffers' contents among it). */
  usedBytes?: number;
  externalBytes?: number;
}

export interface Gateway {
  readonly child: Child;
  readonly url: string;
  /** V8's heap sizes, read from the admin port's /metrics. */
  heap(): Promise<HeapSizes>;
  /** WebSockets open through it (its gauge). */
  socketsOpen(): Promise<number>;
  /** A full garbage collection in the gateway, over its inspector (only with `gcOnDemand`). */
  collectGarbage(): Promise<void>;
  /** A call of the inspector protocol in the gateway (only with `gcOnDemand`), e.g. `Profiler.start`. */
  inspect(method: string, params?: object): Promise<unknown>;
  stop(): Promise<number | string>;
  /** The last lines of its log (for error messages). */
  tail(): string;
}

export async function startGateway(o: GatewayOptions): Promise<Gateway> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const metricsPort = await freePort();
  await o.idp.allowGateway(url);
  const logFile = join(tmpdir(), `gatehouse-bench-${process.pid}-${o.name}.log`);
  const fd = openSync(logFile, 'w');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    NODE_ENV: 'production',
    GATEHOUSE_ISSUER: o.idp.issuer,
    GATEHOUSE_CLIENT_ID: o.idp.clientId,
    GATEHOUSE_CLIENT_SECRET: o.idp.clientSecret,
    GATEHOUSE_PUBLIC_URL: url,
    GATEHOUSE_UPSTREAM: `http://127.0.0.1:${o.upstreamPort}`,
    GATEHOUSE_SESSION_SECRET: randomBytes(32).toString('base64url'),
    GATEHOUSE_REDIS_URL: o.redisUrl,
    GATEHOUSE_KEY_PREFIX: o.keyPrefix,
    GATEHOUSE_PORT: String(port),
    GATEHOUSE_METRICS_PORT: String(metricsPort),
    GATEHOUSE_SHUTDOWN_SECONDS: '3',
    ...o.env,
  };
  // Diagnostics for the gateway alone, e.g. BENCH_GATEWAY_NODE_ARGS=--trace-gc BENCH_KEEP_LOGS=1.
  const extra = (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const inspectPort = o.gcOnDemand ? await freePort() : undefined;
  if (inspectPort) extra.push(`--inspect-port=127.0.0.1:${inspectPort}`);
  const child = spawnNode(o.name, resolve(__dirname, '../src/main.js'), env, [...extra, ...(o.execArgv ?? [])], fd);
  closeSync(fd);
  const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const tail = () => readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n');
  try {
    await waitFor200(`${url}/readyz`, child);
  } catch (err) {
    await stop(child);
    throw new Error(`${(err as Error).message}\n${tail()}`);
  }
  let inspector: Promise<Inspector> | undefined;
  const inspect = async (method: string, params?: object) => {
    if (!inspectPort) throw new Error(`${o.name}: started without gcOnDemand`);
    inspector ??= openInspector(child, inspectPort);
    return (await inspector).call(method, params);
  };
  return {
    child,
    url,
    tail,
    inspect,
    async collectGarbage() {
      await inspect('HeapProfiler.collectGarbage');
    },
    async heap() {
      const text = await metrics();
      const read = (metric: string, space: string) =>
        Number(new RegExp(`^gatehouse_nodejs_heap_space_size_${metric}_bytes\\{space="${space}"\\} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
      return {
        newSpaceBytes: read('total', 'new'),
        oldUsedBytes: read('used', 'old'),
        usedBytes: gauge(text, 'gatehouse_nodejs_heap_size_used_bytes'),
        externalBytes: gauge(text, 'gatehouse_nodejs_external_memory_bytes'),
      };
    },
    async socketsOpen() {
      return gauge(await metrics(), 'gatehouse_websockets_open');
    },
    async stop() {
      if (inspector) (await inspector.catch(() => undefined))?.close();
      const code = await stop(child, 8000);
      if (process.env.BENCH_KEEP_LOGS === '1') process.stderr.write(`${o.name} log: ${logFile}\n`);
      else rmSync(logFile, { force: true });
      return code;
    },
  };
}

/** A metric without labels from Prometheus' text format. */
function gauge(text: string, name: string): number {
  return Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
}

interface Inspector {
  /** Resolves with the call's result. */
  call(method: string, params?: object): Promise<unknown>;
  close(): void;
}

/** Turns the gateway's inspector on (SIGUSR1, on the port given by --inspect-port) and connects to it. */
async function openInspector(child: Child, port: number): Promise<Inspector> {
  child.proc.kill('SIGUSR1');
  const end = Date.now() + 5000;
  let target: string | undefined;
  while (!target) {
    if (Date.now() > end) throw new Error(`${child.name}: its inspector did not start on port ${port}`);
    await sleep(50);
    target = await fetch(`http://127.0.0.1:${port}/json/list`)
      .then((r) => r.json() as Promise<Array<{ webSocketDebuggerUrl?: string }>>)
      .then((list) => list[0]?.webSocketDebuggerUrl)
      .catch(() => undefined);
  }
  const ws = new WebSocket(target);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let next = 0;
  type Answer = { id?: number; result?: unknown; error?: { message: string } };
  const pending = new Map<number, (m: Answer) => void>();
  ws.on('message', (data) => {
    const m = JSON.parse((data as Buffer).toString('utf8')) as Answer;
    if (m.id !== undefined) pending.get(m.id)?.(m);
  });
  return {
    call: (method, params) =>
      new Promise((resolve, reject) => {
        const id = ++next;
        pending.set(id, (m) => {
          pending.delete(id);
          if (m.error) reject(new Error(`${method}: ${m.error.message}`));
          else resolve(m.result);
        });
        ws.send(JSON.stringify({ id, method, ...(params && { params }) }));
      }),
    close: () => ws.close(),
  };
}
