/**
 * The gateway under test: Gatehouse's own entry point (`dist/src/main.js`, what `npm start` runs), in a
 * child process configured only by the environment, exactly as an operator would run it (default log
 * level, so one log line per request; the logs go to a temporary file).
 */
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
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
  env?: Record<string, string>;
}

/** V8's heap as the gateway's own metrics report it (prom-client's default Node.js metrics). */
export interface HeapSizes {
  /** Young generation, reserved: V8 doubles it under sustained allocation, up to its maximum. */
  newSpaceBytes: number;
  /** Old generation in use: what outlives requests (a leak would show here). */
  oldUsedBytes: number;
}

export interface Gateway {
  readonly child: Child;
  readonly url: string;
  /** V8's heap sizes, read from the admin port's /metrics. */
  heap(): Promise<HeapSizes>;
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
  const child = spawnNode(o.name, resolve(__dirname, '../src/main.js'), env, [...extra, ...(o.execArgv ?? [])], fd);
  closeSync(fd);
  const tail = () => readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n');
  try {
    await waitFor200(`${url}/readyz`, child);
  } catch (err) {
    await stop(child);
    throw new Error(`${(err as Error).message}\n${tail()}`);
  }
  return {
    child,
    url,
    tail,
    async heap() {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const read = (metric: string, space: string) =>
        Number(new RegExp(`^gatehouse_nodejs_heap_space_size_${metric}_bytes\\{space="${space}"\\} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
      return { newSpaceBytes: read('total', 'new'), oldUsedBytes: read('used', 'old') };
    },
    async stop() {
      const code = await stop(child, 8000);
      if (process.env.BENCH_KEEP_LOGS === '1') process.stderr.write(`${o.name} log: ${logFile}\n`);
      else rmSync(logFile, { force: true });
      return code;
    },
  };
}
