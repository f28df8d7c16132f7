/**
 * `npm run bench`: Gatehouse against two baselines, in one run on one machine.
 *
 * Longer than 250 lines because it is the schedule itself, read top to bottom: start everything, warm up,
 * measure in interleaved rounds, count Redis commands, grow Redis to 100,000 sessions and measure again,
 * measure WebSockets (echo throughput against the upstream's own socket, the memory of idle sockets), run the
 * refresh wave, profile when asked (or when a target is missed), write the results.
 *
 * Processes (each server in its own, so CPU time and peak RSS are per process):
 *   upstream      a fast HTTP server answering a small JSON body          (bench/upstream.ts)
 *   bare proxy    node:http piping to the upstream with one header added   (bench/bareProxy.ts)
 *   bare relay    a byte pipe to the upstream, for WebSockets               (bench/bareRelay.ts)
 *   gateway       Gatehouse's own entry point, dist/src/main.js, with Redis and a live session
 *   load          autocannon at a fixed connection count, and the WebSocket clients (bench/load.ts, wsLoad.ts)
 *   redis-server  private, no persistence (or REDIS_URL)
 *   this process  the test IdP (oidc-provider) and the orchestration; idle while load runs
 *
 * Settings (environment): BENCH_CONNECTIONS (32), BENCH_ROUND_SECONDS (6), BENCH_ROUNDS (3),
 * BENCH_WARMUP_SECONDS (10), BENCH_SESSIONS (100000), BENCH_WAVE_SESSIONS (50), BENCH_WAVE_CALLS (10),
 * BENCH_WAVES (2), BENCH_WS_SOCKETS (50), BENCH_WS_WINDOW (16), BENCH_WS_MESSAGE_BYTES (64),
 * BENCH_WS_WARMUP_SECONDS (5), BENCH_WS_IDLE_SOCKETS (1000), BENCH_LONG=1 (a 60 s gateway run for the RSS
 * check), BENCH_PROFILE (auto: profile the gateway when a target is missed; 1: always; 0: never), REDIS_URL
 * (use that Redis instead of a private one).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestIdp, type TestIdp } from '../src/testing/testIdp';
import { cpuSeconds, forkHelper, machineBusySeconds, memory, stop, type Child } from './procs';
import { startLoader, type Loader } from './loader';
import { startGateway, type Gateway, type HeapSizes } from './gateway';
import { login } from './login';
import {
  commandStats,
  monitorWhile,
  redisCpuSeconds,
  resetStats,
  seedSessions,
  sessionKeyShapes,
  startRedis,
  writeCommands,
  type BenchRedis,
} from './redis';
import { summarizeProfile } from './profile';
import { echoRounds, idleSockets, profileEcho, sanityCheckSockets, type WsRig, type WsSettings } from './websocket';
import { evaluate, renderMarkdown, type BenchResults, type RoundRecord, type TargetKey, type WaveRecord } from './report';

const ROOT = resolve(__dirname, '..', '..');
const RESULTS = join(ROOT, 'bench', 'results');
const PROFILE_DIR = join(RESULTS, 'profile');

function setting(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return process.env[name] && Number.isFinite(v) && v > 0 ? v : fallback;
}
/** How long the IdP takes per token request in the due waves: a slow IdP (a deploy, a region away). */
const IDP_DELAY_MS = 1000;
const S = {
  connections: setting('BENCH_CONNECTIONS', 32),
  roundSeconds: setting('BENCH_ROUND_SECONDS', 6),
  rounds: setting('BENCH_ROUNDS', 3),
  warmupSeconds: setting('BENCH_WARMUP_SECONDS', 10),
  sessions: setting('BENCH_SESSIONS', 100_000),
  waveSessions: setting('BENCH_WAVE_SESSIONS', 50),
  waveCalls: setting('BENCH_WAVE_CALLS', 10),
  waves: setting('BENCH_WAVES', 2),
  long: process.env.BENCH_LONG === '1',
  longSeconds: 60,
  profile: (process.env.BENCH_PROFILE ?? 'auto') as '0' | '1' | 'auto',
  accountingRequests: 2000,
};
/** The gateway's sockets per session (its default); the idle sockets take as many sessions as that needs. */
const WS_PER_SESSION = 8;
const WS: WsSettings = {
  sockets: setting('BENCH_WS_SOCKETS', 50),
  window: setting('BENCH_WS_WINDOW', 16),
  messageBytes: setting('BENCH_WS_MESSAGE_BYTES', 64),
  warmupSeconds: setting('BENCH_WS_WARMUP_SECONDS', 5),
  roundSeconds: S.roundSeconds,
  rounds: S.rounds,
  idleSockets: setting('BENCH_WS_IDLE_SOCKETS', 1000),
  perSession: WS_PER_SESSION,
};

const started = Date.now();
const say = (msg: string) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`);

interface Target {
  key: TargetKey;
  url: string;
  pid: number;
  heap?: () => Promise<HeapSizes>;
  /** The target's own cookie (a gateway of its own), instead of the rig's. */
  headers?: Record<string, string>;
}

/** Everything a round needs to know. */
interface Rig {
  redis: BenchRedis;
  loader: Loader;
  headers: Record<string, string>;
  /** Gateway RSS, sampled every second while it is under load: [seconds since start, bytes]. */
  rss: Array<[number, number]>;
  /** Every process of the bench (children, and redis-server when private), to tell other load on the machine. */
  pids: number[];
}

/** CPU seconds used by the bench's own processes (this one included). */
function benchCpuSeconds(rig: Rig): number {
  const self = process.cpuUsage();
  return rig.pids.reduce((sum, pid) => sum + cpuSeconds(pid), (self.user + self.system) / 1e6);
}

/** One round of load against one target, with its CPU, memory and Redis costs. */
async function measure(rig: Rig, t: Target, seconds: number, phase: RoundRecord['phase'], round: number): Promise<RoundRecord> {
  const { redis, loader } = rig;
  await resetStats(redis.client);
  const redisCpu0 = await redisCpuSeconds(redis.client);
  const cpu0 = cpuSeconds(t.pid);
  const loadCpu0 = cpuSeconds(loader.child.pid);
  const ours0 = benchCpuSeconds(rig);
  const machine0 = machineBusySeconds();
  const sampler =
    t.key === 'gateway' ? setInterval(() => rig.rss.push([(Date.now() - started) / 1000, memory(t.pid).rss]), 1000) : undefined;
  const load = await loader.load({ url: t.url, connections: S.connections, seconds, headers: t.headers ?? rig.headers });
  clearInterval(sampler);
  const cpu = cpuSeconds(t.pid) - cpu0;
  const loadCpu = cpuSeconds(loader.child.pid) - loadCpu0;
  const foreignCpu = machineBusySeconds() - machine0 - (benchCpuSeconds(rig) - ours0);
  const calls = await commandStats(redis.client);
  const redisCpu = (await redisCpuSeconds(redis.client)) - redisCpu0;
  const mem = memory(t.pid);
  if (t.key === 'gateway') rig.rss.push([(Date.now() - started) / 1000, mem.rss]);
  const heap = t.heap ? await t.heap().catch(() => undefined) : undefined;
  const n = Math.max(1, load.responses);
  const record: RoundRecord = {
    target: t.key,
    phase,
    round,
    load,
    cpuUsPerRequest: (cpu * 1e6) / n,
    cpuPercent: (100 * cpu) / load.seconds,
    loadgenCpuPercent: (100 * loadCpu) / load.seconds,
    foreignCpuPercent: Math.max(0, (100 * foreignCpu) / load.seconds),
    rssBytes: mem.rss,
    peakRssBytes: mem.peak,
    ...(heap && { heap }),
    redisCalls: calls,
    redisCommandsPerRequest: Object.values(calls).reduce((a, b) => a + b, 0) / n,
    redisCpuUsPerRequest: (redisCpu * 1e6) / n,
  };
  const bad = load.responses - load.ok + load.errors + load.timeouts;
  say(
    `${phase} round ${round} ${t.key.padEnd(7)} ${load.rps.toFixed(0).padStart(6)} req/s  p50 ${load.latencyMs.p50.toFixed(2)} ms  ` +
      `p99 ${load.latencyMs.p99.toFixed(2)} ms  cpu ${record.cpuUsPerRequest.toFixed(0)} µs/req  redis ${record.redisCommandsPerRequest.toFixed(2)} cmd/req` +
      `  other load ${record.foreignCpuPercent.toFixed(0)}%` +
      (bad ? `  !! ${bad} non-2xx/errors` : ''),
  );
  return record;
}

/** Every target answers 200 to the bench's request, and the proxies deliver a Bearer token upstream. */
async function sanityCheck(targets: Target[], headers: Record<string, string>): Promise<void> {
  for (const t of targets) {
    const r = await fetch(t.url, { headers: t.headers ?? headers });
    await r.arrayBuffer();
    const bearer = r.headers.get('x-saw-bearer');
    const dpop = r.headers.get('x-saw-dpop');
    // A `none` route sends no token; a DPoP gateway a DPoP token with its proof; every other proxy a Bearer token.
    const wanted = t.key === 'direct' || t.key === 'none' ? bearer !== '1' : t.key === 'dpop' ? dpop === '1' : bearer === '1';
    if (r.status !== 200 || !wanted) {
      throw new Error(`sanity check: ${t.key} answered ${r.status} (upstream saw a bearer: ${bearer}, a DPoP token: ${dpop})`);
    }
  }
}

/** Logs in `count` users, a few at a time (the IdP runs in this process). */
async function loginMany(gateway: Gateway, idp: TestIdp, count: number, name = 'wave-user'): Promise<string[]> {
  const cookies: string[] = [];
  for (let i = 0; i < count; i += 10) {
    const batch = Array.from({ length: Math.min(10, count - i) }, (_, j) => login(gateway.url, idp.issuer, `${name}-${i + j}`));
    cookies.push(...(await Promise.all(batch)));
  }
  return cookies;
}

/**
 * The refresh waves: N sessions, M concurrent calls each, at three points of their access tokens' life.
 *   fresh     no refresh due: the same burst's own steady state, the baseline of the next one
 *   due       inside the refresh skew, outside the expiry margin, with the IdP taking IDP_DELAY_MS per token
 *             request: the calls go on with the current tokens while one refresh per session runs behind them
 *   expired   past their end: every call waits for its session's one refresh (the IdP at full speed, then
 *             slow, to show what the due waves spare)
 * Exactly-once refresh means N refresh grants per due or expired wave, however the M calls of a session
 * interleave.
 */
async function refreshWaves(rig: Rig, upstreamPort: number, prefix: string): Promise<WaveRecord[]> {
  // Tokens live 12 s; the skew (30 s) is capped at half of that and the margin (2 s) at a quarter: a refresh
  // is due from 6 s on, and a token is sent until 10 s.
  const ttl = 12;
  const idp = await startTestIdp({ accessTokenTtl: ttl, refreshTokenTtl: 3600 });
  const gateway = await startGateway({ name: 'wave-gateway', idp, upstreamPort, redisUrl: rig.redis.url, keyPrefix: `${prefix}wave:` });
  const waves: WaveRecord[] = [];
  const run = async (kind: WaveRecord['kind'], idpDelayMs: number, cookies: string[]) => {
    idp.resetCounters();
    await resetStats(rig.redis.client);
    idp.delay(idpDelayMs);
    const idpCpu0 = process.cpuUsage();
    const result = await rig.loader.wave({ url: `${gateway.url}/api/items`, cookies, callsPerSession: S.waveCalls });
    // A due wave's refreshes run behind its answers: the grants are counted once they are all answered.
    const expected = kind === 'fresh' ? 0 : cookies.length;
    for (const end = Date.now() + 30_000; idp.refreshSucceeded + idp.refreshFailed < expected && Date.now() < end;) await sleep(50);
    const idpCpu = process.cpuUsage(idpCpu0); // this process only runs the IdP meanwhile
    idp.delay(0);
    await sleep(100); // lock releases are sent after the answers
    const record: WaveRecord = {
      wave: waves.length + 1,
      kind,
      idpDelayMs,
      sessions: cookies.length,
      callsPerSession: S.waveCalls,
      result,
      refreshGrants: idp.grants.refresh_token,
      refreshSucceeded: idp.refreshSucceeded,
      reuseDetected: idp.reuseDetected,
      idpCpuMs: (idpCpu.user + idpCpu.system) / 1000,
      redisCalls: await commandStats(rig.redis.client),
    };
    waves.push(record);
    say(
      `refresh wave ${record.wave} (${kind}${idpDelayMs ? `, IdP ${idpDelayMs} ms per token request` : ''}): ` +
        `${cookies.length}×${S.waveCalls} calls, ${record.refreshGrants} grants, p99 ${result.latencyMs.p99.toFixed(1)} ms, ` +
        `IdP CPU ${record.idpCpuMs.toFixed(0)} ms, statuses ${JSON.stringify(result.byStatus)}`,
    );
    return Date.now();
  };
  try {
    const loginsStart = Date.now();
    const cookies = await loginMany(gateway, idp, S.waveSessions);
    // The tokens date from the logins: the first due wave comes 6.5 s after the last, while the first is sent.
    let refreshedAt = Date.now();
    if (refreshedAt - loginsStart > 3000) say(`logins took ${refreshedAt - loginsStart} ms: the first tokens may be inside the margin`);
    // A new gateway process answers its first burst slowly (JIT, connection pools): the baseline is the second.
    await rig.loader.wave({ url: `${gateway.url}/api/items`, cookies, callsPerSession: S.waveCalls });
    await run('fresh', 0, cookies);
    for (let w = 1; w <= S.waves; w++) {
      await sleep(Math.max(0, refreshedAt + (ttl / 2) * 1000 + 500 - Date.now())); // due, still sent for 3.5 s
      refreshedAt = await run('due', IDP_DELAY_MS, cookies);
    }
    await sleep(Math.max(0, refreshedAt + ttl * 1000 + 300 - Date.now())); // every token has expired
    refreshedAt = await run('expired', 0, cookies);
    // What a call inside the margin costs with the slow IdP: it waits for the refresh.
    await sleep(Math.max(0, refreshedAt + ttl * 1000 + 300 - Date.now()));
    await run('expired', IDP_DELAY_MS, cookies);
    return waves;
  } finally {
    await gateway.stop();
    await idp.close();
  }
}

/** Gatehouse's route table in the bench: the measured HTTP path is the catch-all, and one route takes WebSockets. */
function routeTable(upstreamPort: number) {
  const api = `http://127.0.0.1:${upstreamPort}`;
  return [
    { path: '/api', upstream: api },
    { path: '/api/orders', upstream: api },
    { path: '/api/catalog', upstream: api, token: 'optional' },
    { path: '/api/status', upstream: api, token: 'none' },
    { path: '/api/live', upstream: api, websocket: true },
  ];
}

/** The gateway's settings besides the defaults: its routes, and logins unlimited (the bench logs many users in from one address). */
function gatewayEnv(upstreamPort: number): Record<string, string> {
  return {
    GATEHOUSE_ROUTES: JSON.stringify(routeTable(upstreamPort)),
    GATEHOUSE_WEBSOCKETS_PER_SESSION: String(WS_PER_SESSION),
    GATEHOUSE_LOGIN_RATE_PER_MINUTE: '0',
  };
}

/** A gateway started with --cpu-prof while `drive` loads it; the profile is written when it exits. */
async function profiled<T>(
  rig: Rig,
  idp: TestIdp,
  upstreamPort: number,
  prefix: string,
  name: string,
  drive: (gateway: Gateway) => Promise<T>,
): Promise<{ result: T; summary: ReturnType<typeof summarizeProfile> }> {
  const dir = join(PROFILE_DIR, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const gateway = await startGateway({
    name: `profiled-${name}`,
    idp,
    upstreamPort,
    redisUrl: rig.redis.url,
    keyPrefix: `${prefix}profile-${name}:`,
    env: gatewayEnv(upstreamPort),
    execArgv: ['--cpu-prof', '--cpu-prof-dir', dir],
  });
  let result: T;
  try {
    result = await drive(gateway);
  } finally {
    await gateway.stop();
  }
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (!file) throw new Error('the profiled gateway wrote no .cpuprofile');
  return { result, summary: { ...summarizeProfile(file, 15), file: file.slice(ROOT.length + 1) } };
}

/** The gateway under one round of HTTP load. */
async function profileGateway(rig: Rig, idp: TestIdp, upstreamPort: number, prefix: string) {
  const { result, summary } = await profiled(rig, idp, upstreamPort, prefix, 'http', async (gateway) => {
    const cookie = await login(gateway.url, idp.issuer, 'bench-profile-user');
    const headers = { cookie, 'x-csrf': '1' };
    const url = `${gateway.url}/api/items`;
    await rig.loader.load({ url, connections: S.connections, seconds: 2, headers });
    return rig.loader.load({ url, connections: S.connections, seconds: S.roundSeconds, headers });
  });
  return { rpsUnderProfiler: result.rps, ...summary };
}

/** The commit measured, and whether src/ had uncommitted changes (the build is of the working tree). */
function sourceVersion(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    return `${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', 'src') ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

async function main(): Promise<void> {
  if (Number(process.versions.node.split('.')[0]) < 22) {
    process.stderr.write(`bench: Node ${process.version} is too old; run it with \`npm run bench\` (Node 24 from devDependencies)\n`);
    process.exit(1);
  }
  const cleanup: Array<() => Promise<unknown>> = [];
  const children: Child[] = [];
  try {
    const redis = await startRedis();
    cleanup.push(() => redis.close());
    const prefix = process.env.REDIS_URL ? `gatehouse-bench-${randomBytes(4).toString('hex')}:` : 'gatehouse:';
    const upstream = await forkHelper<number>('upstream', resolve(__dirname, 'upstream.js'));
    const bare = await forkHelper<number>('bare proxy', resolve(__dirname, 'bareProxy.js'), [String(upstream.ready)]);
    const bareRelay = await forkHelper<number>('bare relay', resolve(__dirname, 'bareRelay.js'), [String(upstream.ready)]);
    const loader = await startLoader();
    children.push(upstream.child, bare.child, bareRelay.child, loader.child);
    const idp = await startTestIdp({ accessTokenTtl: 3600, refreshTokenTtl: 3600 });
    cleanup.push(() => idp.close());
    // A route table as a deployment might have one: the measured path is the catch-all, found after the
    // longer prefixes (matching must cost nothing measurable), a `none` route is measured on its own, and a
    // `websocket` route leads to the upstream's echo socket.
    const gateway = await startGateway({
      name: 'gateway',
      idp,
      upstreamPort: upstream.ready,
      redisUrl: redis.url,
      keyPrefix: prefix,
      env: gatewayEnv(upstream.ready),
      gcOnDemand: true,
    });
    cleanup.push(() => gateway.stop());
    const cookie = await login(gateway.url, idp.issuer, 'bench-user');
    // The same routes with DPoP on: what a proof per request costs. Its user's cookie is the only one it knows.
    const dpopGateway = await startGateway({
      name: 'gateway-dpop',
      idp,
      upstreamPort: upstream.ready,
      redisUrl: redis.url,
      keyPrefix: `${prefix}dpop:`,
      env: { ...gatewayEnv(upstream.ready), GATEHOUSE_DPOP: 'true' },
      gcOnDemand: true,
    });
    cleanup.push(() => dpopGateway.stop());
    const dpopCookie = await login(dpopGateway.url, idp.issuer, 'bench-dpop-user');
    const rig: Rig = { redis, loader, headers: { cookie, 'x-csrf': '1' }, rss: [], pids: [] };
    const targets: Target[] = [
      { key: 'direct', url: `http://127.0.0.1:${upstream.ready}/api/items`, pid: upstream.child.pid },
      { key: 'bare', url: `http://127.0.0.1:${bare.ready}/api/items`, pid: bare.child.pid },
      { key: 'gateway', url: `${gateway.url}/api/items`, pid: gateway.child.pid, heap: () => gateway.heap() },
      { key: 'none', url: `${gateway.url}/api/status/items`, pid: gateway.child.pid },
      { key: 'dpop', url: `${dpopGateway.url}/api/items`, pid: dpopGateway.child.pid, headers: { cookie: dpopCookie, 'x-csrf': '1' } },
    ];
    const gw = targets[2]!;
    rig.pids = [
      upstream.child.pid,
      bare.child.pid,
      bareRelay.child.pid,
      loader.child.pid,
      gateway.child.pid,
      dpopGateway.child.pid,
      ...(redis.pid ? [redis.pid] : []),
    ];
    const loadBefore = loadavg()[0]!;
    await sanityCheck(targets, rig.headers);
    say(`started: redis ${redis.version} at ${redis.url}, gateway pid ${gateway.child.pid}, ${S.connections} connections`);

    for (const t of targets)
      await rig.loader.load({ url: t.url, connections: S.connections, seconds: S.warmupSeconds, headers: t.headers ?? rig.headers });
    const warmRss = memory(gw.pid).rss;
    rig.rss.push([(Date.now() - started) / 1000, warmRss]);
    say(`warmed up (${S.warmupSeconds} s each); gateway RSS ${(warmRss / 2 ** 20).toFixed(1)} MB`);

    // Exact round trips: MONITOR tells a client's command from one run inside a Lua script.
    let accounted = 0;
    const accounting = await monitorWhile(redis.url, async () => {
      accounted = (await loader.load({ url: gw.url, connections: 8, amount: S.accountingRequests, headers: rig.headers })).responses;
    });
    const writes = await writeCommands(redis.client, [...Object.keys(accounting.fromClients), ...Object.keys(accounting.fromScripts)]);

    // Interleaved rounds, the order rotating each round, so drift of the machine hits every target alike.
    const rounds: RoundRecord[] = [];
    for (let r = 1; r <= S.rounds; r++) {
      for (let i = 0; i < targets.length; i++) {
        rounds.push(await measure(rig, targets[(i + r - 1) % targets.length]!, S.roundSeconds, 'steady', r));
      }
    }

    // Cost per request must not depend on how many sessions Redis holds.
    const shapes = await sessionKeyShapes(redis.client, prefix);
    const usedBefore = Number(/used_memory:(\d+)/.exec(await redis.client.info('memory'))?.[1]);
    const seedStart = Date.now();
    await seedSessions(redis.client, shapes, S.sessions);
    const usedAfter = Number(/used_memory:(\d+)/.exec(await redis.client.info('memory'))?.[1]);
    say(
      `seeded ${S.sessions} sessions (${shapes.map((s) => `${s.kind}${s.shared ? '' : '*'} ${s.type}`).join(', ')}) in ${Date.now() - seedStart} ms`,
    );
    rounds.push(await measure(rig, gw, S.roundSeconds, 'sessions', 1));
    rounds.push(await measure(rig, targets[1]!, S.roundSeconds, 'sessions', 1));
    rounds.push(await measure(rig, gw, S.roundSeconds, 'sessions', 2));

    if (S.long) rounds.push(await measure(rig, gw, S.longSeconds, 'long', 1));

    // WebSockets, on the same gateway: users logged in for the idle sockets (the echo sockets use one each).
    const wsLoginStart = Date.now();
    const wsCookies = await loginMany(gateway, idp, Math.max(Math.ceil(WS.idleSockets / WS_PER_SESSION), WS.sockets), 'ws-user');
    say(`logged in ${wsCookies.length} users for the WebSockets in ${Date.now() - wsLoginStart} ms`);
    const wsRig: WsRig = {
      loader,
      gateway,
      upstreamPid: upstream.child.pid,
      upstreamPort: upstream.ready,
      bareRelay: { pid: bareRelay.child.pid, port: bareRelay.ready },
      cookies: wsCookies,
      benchCpuSeconds: () => benchCpuSeconds(rig),
      say,
    };
    await sanityCheckSockets(wsRig);
    const wsRounds = await echoRounds(wsRig, WS);
    const idle = await idleSockets(wsRig, WS);

    const waves = await refreshWaves(rig, upstream.ready, prefix);

    const results: BenchResults = {
      date: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        memoryGB: Math.round(totalmem() / 2 ** 30),
        kernel: release(),
        node: process.version,
        redis: redis.version,
        loadGenerator: 'autocannon 9.0.0 and ws 8.23.1 (child process)',
        loadAverage: { before: loadBefore, after: loadavg()[0]! },
      },
      source: sourceVersion(),
      settings: { ...S, profile: S.profile },
      rounds,
      accounting: { requests: accounted, ...accounting, writeCommands: [...writes] },
      sessions: {
        seeded: S.sessions,
        shapes,
        redisUsedMemoryMB: { before: usedBefore / 2 ** 20, after: usedAfter / 2 ** 20 },
      },
      rss: { warmBytes: warmRss, samples: rig.rss },
      waves,
      websocket: { settings: WS, rounds: wsRounds, idle },
      seconds: 0,
    };
    const checks = evaluate(results);
    // Each kind of load gets its own profile, when one of its targets is missed.
    const missed = (sockets: boolean) => checks.some((c) => !c.ok && c.name.startsWith('WebSocket') === sockets);
    if (S.profile === '1' || (S.profile === 'auto' && missed(false))) {
      say('profiling the gateway under load (node --cpu-prof)');
      results.profile = await profileGateway(rig, idp, upstream.ready, prefix);
    }
    if (S.profile === '1' || (S.profile === 'auto' && missed(true))) {
      say('profiling the gateway under WebSocket echo load (V8 profiler, over its inspector)');
      const profile = await profileEcho(wsRig, WS, join(PROFILE_DIR, 'websocket'));
      results.websocketProfile = { ...profile, file: profile.file.slice(ROOT.length + 1) };
    }
    results.seconds = Math.round((Date.now() - started) / 1000);
    const md = renderMarkdown(results, evaluate(results));
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, 'latest.md'), md);
    writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`\n${md}\n`);
    say(`wrote bench/results/latest.md and latest.json`);
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    for (const c of children) await stop(c).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
