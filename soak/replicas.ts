/**
 * The gateway replicas: the built gateway (`dist/src/main.js`, what `npm start` runs after its build), each a
 * `node` process of its own started directly (a SIGKILL of an `npm start` would leave its `node` child on the
 * port), configured only by the environment, sharing one Redis and one session secret. A killed replica is
 * started again on the same ports, as an orchestrator would.
 */
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnNode, waitFor200, type Child } from '../bench/procs';

export interface Replica {
  readonly name: string;
  readonly index: number;
  readonly port: number;
  readonly metricsPort: number;
  readonly url: string;
  readonly logFile: string;
  child: Child | undefined;
  /** in the load balancer's pool: started and ready, not killed */
  up: boolean;
  /** when it was last killed (a connection it dropped then is the load balancer's 502) */
  killedAt: number;
  starts: number;
}

export function gatewayScript(root: string): string {
  const script = join(root, 'dist', 'src', 'main.js');
  if (!existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` first (npm run soak does)`);
  return script;
}

export function replica(index: number, port: number, metricsPort: number, dir: string): Replica {
  const name = `gw-${String.fromCharCode(97 + index)}`;
  return {
    name,
    index,
    port,
    metricsPort,
    url: `http://127.0.0.1:${port}`,
    logFile: join(dir, `${name}.log`),
    child: undefined,
    up: false,
    killedAt: 0,
    starts: 0,
  };
}

/**
 * Starts the replica and resolves once /readyz answers 200. `onSpawn` runs as soon as the process exists,
 * before it opens any connection worth knowing (the IdP proxy learns its pid there).
 */
export async function startReplica(r: Replica, script: string, env: NodeJS.ProcessEnv, onSpawn?: () => Promise<unknown>): Promise<void> {
  const fd = openSync(r.logFile, 'a');
  const child = spawnNode(
    r.name,
    script,
    { ...env, GATEHOUSE_PORT: String(r.port), GATEHOUSE_METRICS_PORT: String(r.metricsPort) },
    [],
    fd,
  );
  closeSync(fd);
  r.child = child;
  r.starts++;
  await onSpawn?.();
  await waitFor200(`${r.url}/readyz`, child, 30_000);
  r.up = true;
}

/** SIGKILL: no drain, no goodbye; resolves once the process is gone. */
export async function killReplica(r: Replica): Promise<void> {
  r.up = false;
  r.killedAt = Date.now();
  const child = r.child;
  if (!child) return;
  child.proc.kill('SIGKILL');
  await child.exited;
}

/**
 * V8's heap in use and the longest event-loop delay since the last scrape (prom-client resets it on each
 * read), from the replica's own metrics (admin port).
 */
export async function scrape(r: Replica): Promise<{ heap?: number; lagMaxMs?: number }> {
  try {
    const res = await fetch(`http://127.0.0.1:${r.metricsPort}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await res.text();
    const read = (name: string) => {
      const v = Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
      return Number.isFinite(v) ? v : undefined;
    };
    const lag = read('gatehouse_nodejs_eventloop_lag_max_seconds');
    return { heap: read('gatehouse_nodejs_heap_size_used_bytes'), ...(lag !== undefined && { lagMaxMs: Math.round(lag * 1000) }) };
  } catch {
    return {};
  }
}

/** Log lines at warn or above, counted by message (pino JSON lines). */
export function logSummary(r: Replica): Record<string, number> {
  const out: Record<string, number> = {};
  let text = '';
  try {
    text = readFileSync(r.logFile, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) {
      if (line.trim()) out[`(not JSON) ${line.slice(0, 80)}`] = (out[`(not JSON) ${line.slice(0, 80)}`] ?? 0) + 1;
      continue;
    }
    try {
      // pino writes the level as a label (the gateway's logger) or as a number (pino's default).
      const l = JSON.parse(line) as { level?: number | string; msg?: string };
      const level =
        typeof l.level === 'number' ? (l.level >= 60 ? 'fatal' : l.level >= 50 ? 'error' : l.level >= 40 ? 'warn' : 'info') : l.level;
      if (level !== 'warn' && level !== 'error' && level !== 'fatal') continue;
      const k = `${level}: ${l.msg ?? ''}`;
      out[k] = (out[k] ?? 0) + 1;
    } catch {
      // a line cut by the SIGKILL
    }
  }
  return out;
}
