/**
 * The load generator (a child process of the bench, so its CPU never counts against a server under test).
 * autocannon drives a fixed number of keep-alive connections; every response's latency is recorded here at
 * microsecond resolution (autocannon's own histogram keeps whole milliseconds, too coarse for a p99 budget
 * of 2 ms). The refresh wave is sent from here too, so the parent's in-process IdP does not delay the clock.
 *
 * IPC: {id, kind:'load', ...LoadSpec} → {id, result: LoadResult}; {id, kind:'wave', ...WaveSpec} → {id, result: WaveResult}.
 */
import http from 'node:http';
import autocannon from 'autocannon';
import { Samples, type Percentiles } from './stats';
import { closeIdle, echo, openIdle, type EchoSpec, type IdleSpec } from './wsLoad';

export interface LoadSpec {
  url: string;
  connections: number;
  /** Seconds of load, or a fixed number of requests with `amount`. */
  seconds?: number;
  amount?: number;
  headers: Record<string, string>;
}

export interface LoadResult {
  /** Responses received, and those with a 2xx status. */
  responses: number;
  ok: number;
  /** Connection errors and timeouts (autocannon's counts). */
  errors: number;
  timeouts: number;
  seconds: number;
  rps: number;
  latencyMs: Percentiles;
}

export interface WaveSpec {
  url: string;
  /** One session cookie per session; each session sends `callsPerSession` requests at once on its own connections. */
  cookies: string[];
  callsPerSession: number;
}

export interface WaveResult {
  requests: number;
  byStatus: Record<string, number>;
  /** From the first request sent to the last answer received. */
  seconds: number;
  latencyMs: Percentiles;
}

async function load(spec: LoadSpec): Promise<LoadResult> {
  const samples = new Samples();
  let ok = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: spec.url,
        connections: spec.connections,
        ...(spec.amount !== undefined ? { amount: spec.amount } : { duration: spec.seconds ?? 5 }),
        headers: spec.headers,
        timeout: 10,
      },
      (err: unknown, r: autocannon.Result) => (err ? reject(err instanceof Error ? err : new Error(JSON.stringify(err))) : resolve(r)),
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      samples.push(ms);
      if (status >= 200 && status < 300) ok++;
    });
  });
  return {
    responses: samples.length,
    ok,
    errors: result.errors,
    timeouts: result.timeouts,
    seconds: result.duration,
    rps: samples.length / result.duration,
    latencyMs: samples.percentiles(),
  };
}

function get(url: URL, agent: http.Agent, cookie: string): Promise<{ status: number; ms: number }> {
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.get(url, { agent, headers: { cookie, 'x-csrf': '1' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Number(process.hrtime.bigint() - start) / 1e6 }));
    });
    req.on('error', () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - start) / 1e6 }));
  });
}

async function wave(spec: WaveSpec): Promise<WaveResult> {
  const url = new URL(spec.url);
  // Like a browser tab: each session has its own connections, one per concurrent call.
  const agents = spec.cookies.map(() => new http.Agent({ keepAlive: true, maxSockets: spec.callsPerSession }));
  const start = process.hrtime.bigint();
  const answers = await Promise.all(
    spec.cookies.flatMap((cookie, i) => Array.from({ length: spec.callsPerSession }, () => get(url, agents[i]!, cookie))),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  for (const a of agents) a.destroy();
  const samples = new Samples();
  const byStatus: Record<string, number> = {};
  for (const a of answers) {
    samples.push(a.ms);
    byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
  }
  return { requests: answers.length, byStatus, seconds, latencyMs: samples.percentiles() };
}

type Message = { id: number } & (
  | ({ kind: 'load' } & LoadSpec)
  | ({ kind: 'wave' } & WaveSpec)
  | ({ kind: 'echo' } & EchoSpec)
  | ({ kind: 'openIdle' } & IdleSpec)
  | { kind: 'closeIdle' }
);

function run(m: Message): Promise<unknown> {
  switch (m.kind) {
    case 'load':
      return load(m);
    case 'wave':
      return wave(m);
    case 'echo':
      return echo(m);
    case 'openIdle':
      return openIdle(m);
    case 'closeIdle':
      return closeIdle();
  }
}

process.on('message', (m: Message) => {
  const work = run(m);
  work.then(
    (result) => process.send?.({ id: m.id, result }),
    (err: unknown) => process.send?.({ id: m.id, error: String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: process.pid });
