/**
 * `npm run soak`: Gatehouse under every fault at once, for minutes (docs/soak.md).
 *
 * Processes:
 *   gw-a, gw-b, gw-c  the built gateway (dist/src/main.js), three `node` processes sharing one Redis
 *   redis-server      private, on a free port, append-only file with appendfsync always
 *   idp               the test IdP, unchanged (soak/idp.ts)
 *   idp-proxy         a fault proxy on the issuer's port that keeps the books of every token request (soak/idpProxy.ts)
 *   upstream          an API that verifies every bearer locally against the IdP's keys (soak/upstream.ts)
 *   this process      the browsers (soak/browsers.ts), the fault schedule, the samplers and the report
 *
 * Settings (environment): SOAK_MINUTES (10), SOAK_BROWSERS (250), SOAK_RATE (total calls per second, 100),
 * SOAK_TOKEN_SECONDS (access-token life, 10), SOAK_IDLE_SECONDS (60), SOAK_ABSOLUTE_SECONDS (180),
 * SOAK_GAP_SECONDS (quiet after each fault, 10), SOAK_TAIL_SECONDS (how long to watch the keys expire after
 * the load; default: the idle timeout plus the token records' 5-minute grace, and a little more), SOAK_KEEP_LOGS=1 (keep the gateways'
 * logs), SOAK_LOG_LEVEL (theirs; warn), SOAK_RESULTS (folder for the results; default soak/results).
 */
import { cpus, loadavg, release, totalmem } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuSeconds, forkHelper, freePort, machineBusySeconds, memory, stop, type Child } from '../bench/procs';
import { DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET } from '../src/testing/testIdp';
import { SoakRedis, type KeyCensus } from './redis';
import { gatewayScript, killReplica, logSummary, replica, scrape, startReplica, type Replica } from './replicas';
import { Fleet } from './browsers';
import { forgetConnections } from './http';
import { rpcClient, type HoldPhase, type IdpFault, type IdpStats, type KillReport, type UpstreamFault } from './protocol';
import { CYCLE, FAULTS, type FaultEvent, type FaultKind } from './schedule';
import { analyse, renderMarkdown, type Sample, type SoakData, type TailRecord } from './report';
import { renderSvg } from './chart';

const ROOT = resolve(__dirname, '..', '..');
const RESULTS = resolve(process.env.SOAK_RESULTS ?? join(ROOT, 'soak', 'results'));

function setting(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return process.env[name] !== undefined && process.env[name] !== '' && Number.isFinite(v) && v >= 0 ? v : fallback;
}

const API = 'https://api.soak.example/';
const S = {
  minutes: setting('SOAK_MINUTES', 10),
  browsers: setting('SOAK_BROWSERS', 250),
  rate: setting('SOAK_RATE', 100),
  tokenSeconds: setting('SOAK_TOKEN_SECONDS', 10),
  idleSeconds: setting('SOAK_IDLE_SECONDS', 60),
  absoluteSeconds: setting('SOAK_ABSOLUTE_SECONDS', 180),
  gapSeconds: setting('SOAK_GAP_SECONDS', 10),
  tailSeconds: process.env.SOAK_TAIL_SECONDS ? setting('SOAK_TAIL_SECONDS', 0) : undefined,
  /** how long a token record outlives its session, for the sweeper (the gateway's constant) */
  tokenGraceSeconds: 300,
  upstreamTimeoutSeconds: 2,
  upstreamSlowMs: 3000,
  idpSlowMs: 5000,
  logoutEverySeconds: 3,
  revokeEverySeconds: 20,
  sampleSeconds: 5,
  censusSeconds: 30,
};
const loadMs = S.minutes * 60_000;
const warmupMs = Math.min(45_000, Math.max(10_000, loadMs * 0.15));
const rampMs = Math.min(30_000, warmupMs * 0.7);
const cooldownMs = Math.min(20_000, Math.max(5_000, loadMs * 0.05));

const started = Date.now();
const say = (msg: string) => process.stderr.write(`[soak ${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);

async function main(): Promise<void> {
  const script = gatewayScript(ROOT);
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-soak-'));
  say(`${S.minutes} min, ${S.browsers} browsers, ${S.rate} calls/s, ${S.tokenSeconds} s access tokens; work folder ${dir}`);

  const redis = await SoakRedis.start(await freePort(), dir);
  const gwPorts = [await freePort(), await freePort(), await freePort()];
  const metricsPorts = [await freePort(), await freePort(), await freePort()];
  // The browsers see one origin (a load balancer's); each replica is reached on its own port behind it.
  const publicUrl = `http://127.0.0.1:${gwPorts[0]}`;

  const idpPort = await freePort();
  const idp = await forkHelper<{ issuer: string; jwks: object; internalPort: number }>('idp', join(__dirname, 'idp.js'), [
    JSON.stringify({ port: idpPort, publicUrl, resource: API, accessTokenTtl: S.tokenSeconds }),
  ]);
  const idpRpc = rpcClient(idp.child.proc);
  const issuer = idp.ready.issuer;
  const proxy = await forkHelper<number>('idp-proxy', join(__dirname, 'idpProxy.js'), [
    JSON.stringify({ port: idpPort, internalPort: idp.ready.internalPort, accessTokenTtl: S.tokenSeconds }),
  ]);
  const proxyRpc = rpcClient(proxy.child.proc);
  const upstreamPort = await freePort();
  const upstream = await forkHelper<number>('upstream', join(__dirname, 'upstream.js'), [
    JSON.stringify({ port: upstreamPort, issuer, audience: API, jwks: idp.ready.jwks }),
  ]);
  const upRpc = rpcClient(upstream.child.proc);

  const replicas = [0, 1, 2].map((i) => replica(i, gwPorts[i]!, metricsPorts[i]!, dir));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    NODE_ENV: 'production',
    GATEHOUSE_ISSUER: issuer,
    GATEHOUSE_CLIENT_ID: DEFAULT_CLIENT_ID,
    GATEHOUSE_CLIENT_SECRET: DEFAULT_CLIENT_SECRET,
    GATEHOUSE_PUBLIC_URL: publicUrl,
    GATEHOUSE_ROUTES: JSON.stringify([
      { path: '/api', upstream: `http://127.0.0.1:${upstreamPort}`, resource: API, timeoutSeconds: S.upstreamTimeoutSeconds },
    ]),
    GATEHOUSE_SESSION_SECRET: randomBytes(32).toString('base64url'),
    GATEHOUSE_REDIS_URL: redis.url,
    GATEHOUSE_KEY_PREFIX: 'soak:',
    GATEHOUSE_ADMIN_HOST: '127.0.0.1',
    GATEHOUSE_LOG_LEVEL: process.env.SOAK_LOG_LEVEL ?? 'warn',
    GATEHOUSE_SESSION_IDLE_SECONDS: String(S.idleSeconds),
    GATEHOUSE_SESSION_ABSOLUTE_SECONDS: String(S.absoluteSeconds),
    GATEHOUSE_LOGIN_RATE_PER_MINUTE: '0',
    GATEHOUSE_SHUTDOWN_SECONDS: '3',
  };
  // Whatever happens, no process of the soak outlives it.
  process.once('exit', () => {
    for (const r of replicas) r.child?.proc.kill('SIGKILL');
    try {
      if (redis.pid !== undefined) process.kill(redis.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
  const pids = () =>
    replicas.flatMap((r) => (r.child && r.child.proc.exitCode === null && r.child.proc.signalCode === null ? [r.child.pid] : []));
  const start = async (r: Replica) => {
    await startReplica(r, script, env, () => proxyRpc.call('replicas', pids()));
  };
  await Promise.all(replicas.map(start));
  say(
    `redis-server ${redis.version} on ${redis.port}; IdP ${issuer}; upstream ${upstreamPort}; replicas ${replicas.map((r) => `${r.name} ${r.port}`).join(', ')}`,
  );

  const fleet = new Fleet({
    browsers: S.browsers,
    periodMs: (S.browsers / S.rate) * 1000,
    rampMs,
    publicUrl,
    issuer,
    absoluteMs: S.absoluteSeconds * 1000,
    replicas,
  });
  const t0 = Date.now();
  const at = () => Date.now() - t0;
  fleet.start();

  // ---------- samplers ----------
  const samples: Sample[] = [];
  const censuses: Array<{ t: number; census: KeyCensus }> = [];
  let lastCpu = cpuSnapshot(replicas, redis, idp.child, proxy.child, upstream.child);
  const sampler = setInterval(() => {
    void (async () => {
      const cpu = cpuSnapshot(replicas, redis, idp.child, proxy.child, upstream.child);
      const gw = await Promise.all(
        replicas.map(async (r) => {
          if (!r.up || !r.child) return { name: r.name, starts: r.starts };
          const { heap, lagMaxMs } = await scrape(r);
          let rss: number | undefined;
          try {
            rss = memory(r.child.pid).rss;
          } catch {
            rss = undefined;
          }
          return { name: r.name, starts: r.starts, rss, heap, lagMaxMs };
        }),
      );
      samples.push({ t: at(), gateways: gw, redis: await redis.sample(), cpu: cpuPercent(lastCpu, cpu), loggedIn: fleet.loggedIn });
      lastCpu = cpu;
    })();
  }, S.sampleSeconds * 1000);
  const censusTimer = setInterval(() => {
    redis.census().then(
      (census) => censuses.push({ t: at(), census }),
      () => undefined,
    );
  }, S.censusSeconds * 1000);

  // ---------- deliberate session ends: logouts, revocations ----------
  const background: NodeJS.Timeout[] = [];
  const revocations: Array<{ t: number; sub: string; at: number }> = [];
  await sleep(rampMs);
  background.push(setInterval(() => fleet.logoutOne(), S.logoutEverySeconds * 1000));
  background.push(
    setInterval(() => {
      const sub = fleet.revokeOne();
      if (!sub) return;
      revocations.push({ t: at(), sub, at: Date.now() });
      proxyRpc
        .call('revoking', sub)
        .then(() => idpRpc.call('revoke', sub))
        .catch((err: unknown) => say(`revoke ${sub} failed: ${(err as Error).message}`));
    }, S.revokeEverySeconds * 1000),
  );

  // ---------- faults ----------
  const idpFault = (f: IdpFault) => proxyRpc.call('fault', f);
  const upFault = (f: UpstreamFault) => upRpc.call('fault', f);
  /** A fault for `ms`, then none again. */
  const during =
    <F extends { kind: string }>(set: (f: F | { kind: 'none' }) => Promise<unknown>, fault: F, ms: number) =>
    async () => {
      await set(fault);
      await sleep(ms);
      await set({ kind: 'none' });
    };
  let victim = 0;
  const heldBy = new Map<number, () => void>();
  proxyRpc.onEvent((e) => {
    if (e.event === 'held') heldBy.get(e.pid as number)?.();
  });
  /** SIGKILL of a replica while it has a refresh grant held at the IdP's door, then a restart 3 s later. */
  const killDuringRefresh = async (phase: HoldPhase): Promise<Record<string, unknown>> => {
    // gw-a is never killed: its memory is followed for the whole run.
    const candidates = [replicas[1]!, replicas[2]!].filter((r) => r.up);
    const r = candidates[victim++ % Math.max(1, candidates.length)];
    if (!r?.child) return { skipped: 'no replica up to kill' };
    const pid = r.child.pid;
    const held = new Promise<boolean>((ok) => {
      heldBy.set(pid, () => ok(true));
      setTimeout(() => ok(false), 15_000);
    });
    await proxyRpc.call('arm', { pid, phase });
    const refreshHeld = await held;
    heldBy.delete(pid);
    if (refreshHeld) await sleep(200);
    await proxyRpc.call('killing', pid);
    await killReplica(r);
    const report = await proxyRpc.call<KillReport | undefined>('killed', pid);
    await sleep(3000);
    forgetConnections(r.url);
    await start(r);
    return { replica: r.name, phase, refreshHeld, pid: report?.pid };
  };
  const run: Record<FaultKind, () => Promise<Record<string, unknown> | void>> = {
    'kill-after': () => killDuringRefresh('after'),
    'kill-before': () => killDuringRefresh('before'),
    'redis-pause': () => redis.pause(2000),
    'redis-restart': () => redis.crashAndRestart(true),
    'redis-wipe': () => redis.crashAndRestart(false, () => fleet.wiped(Date.now())),
    'idp-503': during(idpFault, { kind: '503' }, 5000),
    'idp-slow': during(idpFault, { kind: 'slow', ms: S.idpSlowMs }, 15_000),
    'idp-reset': during(idpFault, { kind: 'reset' }, 10_000),
    'idp-down': during(idpFault, { kind: 'down' }, 20_000),
    'upstream-down': during(upFault, { kind: 'down' }, 5000),
    'upstream-slow': during(upFault, { kind: 'slow', ms: S.upstreamSlowMs }, 10_000),
  };

  await sleep(Math.max(0, t0 + warmupMs - Date.now()));
  const events: FaultEvent[] = [];
  const quiet = (k: FaultKind) => Math.max(S.gapSeconds, FAULTS[k].quiet ?? 0);
  const counts: Partial<Record<FaultKind, number>> = {};
  const loadEnd = t0 + loadMs;
  for (let i = 0; ; i++) {
    // The next fault in the cycle that still fits before the quiet end of the run.
    let kind: FaultKind | undefined;
    for (let k = 0; k < CYCLE.length && !kind; k++) {
      const c = CYCLE[(i + k) % CYCLE.length]!;
      if (Date.now() + (FAULTS[c].seconds + quiet(c)) * 1000 <= loadEnd - cooldownMs) {
        kind = c;
        i += k;
      }
    }
    if (!kind) break;
    const ev: FaultEvent = { kind, n: (counts[kind] = (counts[kind] ?? 0) + 1), start: at(), end: 0 };
    say(`fault: ${FAULTS[kind].label} (#${ev.n})`);
    const detail = await run[kind]();
    ev.end = at();
    if (detail) ev.detail = detail;
    events.push(ev);
    await sleep(quiet(kind) * 1000);
  }
  await sleep(Math.max(0, loadEnd - Date.now()));

  // ---------- the end of the load ----------
  for (const t of background) clearInterval(t);
  say('load ends; waiting for the calls under way');
  await fleet.stop();
  const loadEndedAt = at();
  clearInterval(sampler);
  clearInterval(censusTimer);
  const idpStats = await proxyRpc.call<IdpStats>('stats');
  fleet.judge(revocations, idpStats.exposures);
  const upstreamStats = await upRpc.call<Record<string, unknown>>('stats');
  const tail = await watchKeysExpire(redis, S.tailSeconds, say);

  say('stopping');
  const logs = Object.fromEntries(replicas.map((r) => [r.name, logSummary(r)]));
  await Promise.all(replicas.flatMap((r) => (r.child ? [stop(r.child, 5000)] : [])));
  await proxyRpc.call('stop').catch(() => undefined);
  proxy.child.proc.disconnect();
  idp.child.proc.disconnect();
  upstream.child.proc.disconnect();
  await redis.stop();

  const data: SoakData = {
    settings: { ...S, loadMs, warmupMs, rampMs, cooldownMs, memoryFromMs: Math.max(warmupMs, loadMs * 0.3), replicas: replicas.length },
    machine: machine(redis.version),
    startedAt: new Date(t0).toISOString(),
    loadEndedAt,
    events,
    calls: fleet.calls.map((c) => ({ ...c, sent: c.sent - t0, done: c.done - t0 })),
    logins: fleet.logins.map((c) => ({ ...c, sent: c.sent - t0, done: c.done - t0 })),
    logouts: fleet.logouts.map((c) => ({ ...c, sent: c.sent - t0, done: c.done - t0 })),
    revocations: revocations.map(({ t, sub }) => ({ t, sub })),
    dataLoss: fleet.dataLoss,
    lb: fleet.lb,
    findings: fleet.findings,
    samples,
    censuses,
    tail,
    idp: idpStats,
    upstream: upstreamStats,
    logs,
  };
  const results = analyse(data);
  mkdirSync(RESULTS, { recursive: true });
  const markdown = renderMarkdown(results);
  writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(RESULTS, 'latest.md'), markdown);
  writeFileSync(join(RESULTS, 'latest.svg'), renderSvg(results));
  const docs = S.minutes >= 10 || process.env.SOAK_UPDATE_DOCS === '1';
  if (docs) updateDocs(markdown);
  formatResults(docs);
  process.stdout.write(`${markdown}\n`);
  say(`results in ${RESULTS} (latest.md, latest.json, latest.svg)`);
  if (process.env.SOAK_KEEP_LOGS === '1') say(`gateway logs kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
  process.exitCode = results.verdict.missed.length > 0 ? 1 : 0;
}

/**
 * After the load: every key must go by itself. The replicas keep running (their sweeper is how timed-out
 * sessions end), nothing else writes. Watches until no key is left, or for `limitSeconds` (default: until
 * every session has timed out and its token record's grace is over).
 */
async function watchKeysExpire(redis: SoakRedis, limitSeconds: number | undefined, log: (m: string) => void): Promise<TailRecord> {
  const first = await redis.census();
  const limit = limitSeconds ?? S.idleSeconds + S.tokenGraceSeconds + 15;
  log(`watching ${first.keys} keys expire (longest TTL ${(first.maxTtlMs / 1000).toFixed(0)} s, watching up to ${limit} s)`);
  const begun = Date.now();
  const series: Array<[number, number]> = [[0, first.keys]];
  let last = first;
  while (Date.now() - begun < limit * 1000) {
    await sleep(Math.min(5000, Math.max(0, begun + limit * 1000 - Date.now())));
    last = await redis.census();
    series.push([Math.round((Date.now() - begun) / 1000), last.keys]);
    if (last.keys === 0) break;
  }
  return { atEnd: first, left: last, seconds: Math.round((Date.now() - begun) / 1000), limitSeconds: limit, series };
}

interface CpuSnapshot {
  at: number;
  machine: number;
  self: number;
  byPid: Map<number, number>;
  groups: Record<string, number[]>;
}
function cpuSnapshot(replicas: Replica[], redis: SoakRedis, idp: Child, proxy: Child, upstream: Child): CpuSnapshot {
  const byPid = new Map<number, number>();
  const read = (pid: number | undefined) => {
    if (pid === undefined) return;
    try {
      byPid.set(pid, cpuSeconds(pid));
    } catch {
      // gone
    }
  };
  const groups: Record<string, number[]> = {
    gateways: replicas.flatMap((r) => (r.child && r.up ? [r.child.pid] : [])),
    idp: [idp.pid],
    'idp proxy': [proxy.pid],
    upstream: [upstream.pid],
    redis: redis.pid !== undefined ? [redis.pid] : [],
  };
  for (const list of Object.values(groups)) list.forEach(read);
  const u = process.cpuUsage();
  return { at: Date.now(), machine: machineBusySeconds(), self: (u.user + u.system) / 1e6, byPid, groups };
}

/** CPU between two snapshots, in % of one core, per group of processes; `other` is the rest of the machine. */
function cpuPercent(a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const secs = (b.at - a.at) / 1000;
  const out: Record<string, number> = {};
  let ours = 0;
  for (const [group, list] of Object.entries(b.groups)) {
    let used = 0;
    for (const pid of list) {
      const before = a.byPid.get(pid);
      const after = b.byPid.get(pid);
      if (before !== undefined && after !== undefined) used += after - before;
    }
    out[group] = Math.round((used / secs) * 1000) / 10;
    ours += used;
  }
  out.browsers = Math.round(((b.self - a.self) / secs) * 1000) / 10;
  ours += b.self - a.self;
  out.machine = Math.round(((b.machine - a.machine) / secs) * 1000) / 10;
  out.other = Math.max(0, Math.round(((b.machine - a.machine - ours) / secs) * 1000) / 10);
  return out;
}

function machine(redisVersion: string): SoakData['machine'] {
  const cpu = cpus();
  let virtualization = '';
  try {
    virtualization = execFileSync('systemd-detect-virt', { encoding: 'utf8' }).trim();
  } catch {
    virtualization = '';
  }
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    memoryGb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    virtualization,
    node: process.version,
    redis: redisVersion,
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
    date: new Date().toISOString().slice(0, 10),
  };
}

const DOC = join(ROOT, 'docs', 'soak.md');
const MARK = { start: '<!-- soak:results -->', end: '<!-- /soak:results -->' };

/** A full run's figures go into docs/soak.md, between its two markers. */
function updateDocs(markdown: string): void {
  let text: string;
  try {
    text = readFileSync(DOC, 'utf8');
  } catch {
    return;
  }
  const i = text.indexOf(MARK.start);
  const j = text.indexOf(MARK.end);
  if (i < 0 || j < i) return;
  writeFileSync(DOC, `${text.slice(0, i + MARK.start.length)}\n\n${markdown.trim()}\n\n${text.slice(j)}`);
}

/** The results are committed: formatted the way the repository's Prettier check wants them. */
function formatResults(docs: boolean): void {
  const files = [join(RESULTS, 'latest.md'), join(RESULTS, 'latest.json'), ...(docs ? [DOC] : [])];
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'prettier', 'bin', 'prettier.cjs'), '--write', ...files], {
      stdio: 'ignore',
    });
  } catch {
    // Prettier missing (an installation without dev dependencies): the files stay as written.
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
