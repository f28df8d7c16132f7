/**
 * What the bench measured, checked against its targets, as JSON (bench/results/latest.json) and as
 * the markdown table printed at the end and copied into docs/performance.md.
 */
import { readFileSync } from 'node:fs';
import type { LoadResult, WaveResult } from './load';
import type { KeyShape, MonitorCount } from './redis';
import type { ProfileSummary } from './profile';
import type { HeapSizes } from './gateway';
import type { EchoResult } from './wsLoad';
import type { WsSettings } from './websocket';
import { median } from './stats';

/**
 * gateway: a `user` route of a four-route table; none: its `none` route (no session, no token); dpop: the same
 * `user` route on a gateway with DPoP on (a proof signed per proxied request).
 */
export type TargetKey = 'direct' | 'bare' | 'gateway' | 'none' | 'dpop';

export interface RoundRecord {
  target: TargetKey;
  /** steady: 1 session in Redis; sessions: BENCH_SESSIONS more; long: BENCH_LONG's 60 s run. */
  phase: 'steady' | 'sessions' | 'long';
  round: number;
  load: LoadResult;
  cpuUsPerRequest: number;
  /** CPU of the process under test over the round (100 = one core). */
  cpuPercent: number;
  loadgenCpuPercent: number;
  /** CPU used on the machine by processes that are not the bench's (other work disturbing the numbers). */
  foreignCpuPercent: number;
  rssBytes: number;
  peakRssBytes: number;
  /** The gateway's V8 heap at the end of the round (gateway rounds only). */
  heap?: HeapSizes;
  /** INFO commandstats over the round (scripts' inner commands included). */
  redisCalls: Record<string, number>;
  redisCommandsPerRequest: number;
  redisCpuUsPerRequest: number;
}

export interface WaveRecord {
  wave: number;
  /** fresh: no refresh due (the baseline); due: inside the skew, outside the margin; expired: past the tokens' end. */
  kind: 'fresh' | 'due' | 'expired';
  /** How long the IdP took per token request during the wave. */
  idpDelayMs: number;
  sessions: number;
  callsPerSession: number;
  result: WaveResult;
  refreshGrants: number;
  refreshSucceeded: number;
  reuseDetected: number;
  /** CPU the test IdP (in the bench's own process) spent during the wave: the grants are answered one by one. */
  idpCpuMs: number;
  redisCalls: Record<string, number>;
}

/** direct: the upstream's echo socket itself; bare: through a byte pipe (bareRelay.ts); gateway: through a `websocket` route. */
export type WsTargetKey = 'direct' | 'bare' | 'gateway';

export interface WsRoundRecord {
  target: WsTargetKey;
  round: number;
  echo: EchoResult;
  /** The load generator's whole call (handshakes and closes included): what the CPU figures are over. */
  wallSeconds: number;
  /** CPU of each process over the round (100 = one core); relay: the gateway or the bare relay (NaN: direct). */
  cpuPercent: { relay: number; upstream: number; loadgen: number };
  /** The relay's CPU per echoed message (a frame each way); NaN in a direct round. */
  relayCpuUsPerMessage: number;
  /** CPU of the relay, the upstream and the load generator together per echoed message. */
  totalCpuUsPerMessage: number;
  foreignCpuPercent: number;
}

/** What the gateway (and, for comparison, the upstream and the load generator) hold, at one moment. */
export interface MemoryReading {
  rssBytes: number;
  /** V8 heap in use (every space), and memory tracked outside it, from the gateway's /metrics. */
  heapUsedBytes: number;
  externalBytes: number;
}

export interface IdleMemory {
  requested: number;
  sessions: number;
  perSession: number;
  opened: number;
  refused: Record<string, number>;
  openSeconds: number;
  closeSeconds: number;
  /** The gateway's gatehouse_websockets_open gauge once they were open, and once they were closed. */
  gatewayGauge: { open: number; afterClose: number };
  before: MemoryReading;
  open: MemoryReading;
  closed: MemoryReading;
}

export interface WebSocketResults {
  settings: WsSettings;
  rounds: WsRoundRecord[];
  idle: IdleMemory;
}

export interface BenchResults {
  date: string;
  /** The commit measured (`abc1234`, plus a note when src/ had uncommitted changes). */
  source: string;
  machine: {
    cpus: number;
    cpuModel: string;
    memoryGB: number;
    kernel: string;
    node: string;
    redis: string;
    loadGenerator: string;
    /** 1-minute load average when the bench started and ended (other work on the machine). */
    loadAverage: { before: number; after: number };
  };
  settings: Record<string, unknown> & {
    connections: number;
    roundSeconds: number;
    rounds: number;
    sessions: number;
    warmupSeconds: number;
  };
  rounds: RoundRecord[];
  accounting: { requests: number; writeCommands: string[] } & MonitorCount;
  sessions: { seeded: number; shapes: KeyShape[]; redisUsedMemoryMB: { before: number; after: number } };
  rss: { warmBytes: number; samples: Array<[number, number]> };
  waves: WaveRecord[];
  /** Absent from results of a bench without WebSocket routes. */
  websocket?: WebSocketResults;
  profile?: ProfileSummary & { rpsUnderProfiler: number };
  /** The gateway under WebSocket echo load, profiled the same way (when the WebSocket goal is missed). */
  websocketProfile?: ProfileSummary & { messagesPerSecondUnderProfiler: number };
  seconds: number;
}

export interface Check {
  name: string;
  target: string;
  measured: string;
  ok: boolean;
}

interface Row {
  label: string;
  rounds: RoundRecord[];
}

const pick = (rs: RoundRecord[], target: TargetKey, phase: RoundRecord['phase']) =>
  rs.filter((r) => r.target === target && r.phase === phase);
const med = (rs: RoundRecord[], f: (r: RoundRecord) => number) => median(rs.map(f));
const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
const fmt = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
const pct = (v: number) => `${v >= 0 ? '+' : ''}${(100 * v).toFixed(1)}%`;

/** Per steady round r: f(gateway round r, bare round r), so both saw the same state of the machine. */
function paired(rs: RoundRecord[], f: (g: RoundRecord, b: RoundRecord) => number): number {
  const g = pick(rs, 'gateway', 'steady');
  const b = pick(rs, 'bare', 'steady');
  return median(
    g.map((gr) =>
      f(
        gr,
        b.find((br) => br.round === gr.round)!,
      ),
    ),
  );
}

function rows(r: BenchResults): Row[] {
  const out: Row[] = [
    { label: 'direct upstream', rounds: pick(r.rounds, 'direct', 'steady') },
    { label: 'bare Node proxy', rounds: pick(r.rounds, 'bare', 'steady') },
    { label: 'Gatehouse, 1 session', rounds: pick(r.rounds, 'gateway', 'steady') },
    { label: 'Gatehouse, a `none` route', rounds: pick(r.rounds, 'none', 'steady') },
    { label: 'Gatehouse, DPoP (a proof per request)', rounds: pick(r.rounds, 'dpop', 'steady') },
    { label: `Gatehouse, ${r.sessions.seeded.toLocaleString('en-US')} sessions`, rounds: pick(r.rounds, 'gateway', 'sessions') },
  ];
  const long = pick(r.rounds, 'gateway', 'long');
  if (long.length) out.push({ label: 'Gatehouse, 60 s run', rounds: long });
  return out;
}

/** Gateway throughput as a share of a bare Node proxy's, at least. */
const THROUGHPUT_GOAL = 0.5;
/** WebSocket echo messages per second through the gateway as a share of the upstream socket's, at least. */
const WEBSOCKET_GOAL = 0.8;

const wsPick = (ws: WebSocketResults, target: WsTargetKey) => ws.rounds.filter((x) => x.target === target);
/**
 * Per WebSocket round r: f(`target`'s round r, `other`'s round r), the two having seen the same state of the
 * machine (by default the ratio of their messages per second).
 */
function wsRatios(
  ws: WebSocketResults,
  target: WsTargetKey,
  other: WsTargetKey,
  f = (t: WsRoundRecord, o: WsRoundRecord) => t.echo.messagesPerSecond / o.echo.messagesPerSecond,
): number[] {
  return wsPick(ws, target).map((t) => {
    const o = ws.rounds.find((x) => x.target === other && x.round === t.round);
    return o ? f(t, o) : NaN;
  });
}
/** A load generator at this share of a core or more is the bottleneck of its round. */
const SATURATED_PERCENT = 90;

export function evaluate(r: BenchResults): Check[] {
  const checks: Check[] = [];
  const acc = r.accounting;
  const trips = sum(acc.fromClients) / acc.requests;
  const writes = acc.writeCommands.reduce((n, c) => n + (acc.fromClients[c] ?? 0) + (acc.fromScripts[c] ?? 0), 0) / acc.requests;
  checks.push({ name: 'Redis round trips per proxied request', target: '≤ 1', measured: fmt(trips), ok: trips <= 1.005 });
  checks.push({ name: 'Redis writes per proxied request', target: '0', measured: fmt(writes, 3), ok: writes === 0 });

  // Also as a CPU-cost ratio: with both CPU-bound it predicts the throughput ratio, and other load on the
  // machine moves it far less than it moves req/s (the bare proxy shares a core with the upstream and autocannon).
  const ratio = paired(r.rounds, (g, b) => g.load.rps / b.load.rps);
  const costRatio = paired(r.rounds, (g, b) => b.cpuUsPerRequest / g.cpuUsPerRequest);
  checks.push({
    name: 'throughput, gateway / bare proxy',
    // The forwarder runs on http-proxy-middleware, which costs about a quarter of a bare proxy's throughput.
    target: `≥ ${fmt(THROUGHPUT_GOAL)}`,
    measured:
      (ratio >= THROUGHPUT_GOAL ? fmt(ratio) : `${fmt(ratio)} (${fmt((THROUGHPUT_GOAL - ratio) * 100, 0)} points short)`) +
      `; CPU per request, bare / gateway: ${fmt(costRatio)}`,
    ok: ratio >= THROUGHPUT_GOAL,
  });
  const delta = paired(r.rounds, (g, b) => g.load.latencyMs.p99 - b.load.latencyMs.p99);
  checks.push({
    name: `p99 above the bare proxy at ${r.settings.connections} connections`,
    target: '≤ 2 ms',
    measured: delta <= 2 ? `${fmt(delta)} ms` : `${fmt(delta)} ms (${fmt(delta - 2)} ms over)`,
    ok: delta <= 2,
  });

  // V8 keeps growing its heap for a while under a new load; the first measured round completes the warm-up
  // (BENCH_LONG=1 shows the curve over a further 60 s).
  const samples = r.rss.samples;
  const last = samples[samples.length - 1]?.[1] ?? NaN;
  const gwRounds = r.rounds.filter((x) => x.target === 'gateway');
  const first = gwRounds[0];
  const base = first?.rssBytes ?? NaN;
  const growth = (last - base) / base;
  const after = gwRounds.slice(1).reduce((sec, x) => sec + x.load.seconds, 0);
  const mb = (b: number) => fmt(b / 2 ** 20, 1);
  // What the growth is made of: V8's young generation (reserved, grows by doubling under sustained
  // allocation) and its old generation in use (what outlives requests: a leak would grow there).
  const lastHeap = gwRounds[gwRounds.length - 1]?.heap;
  const heapNote =
    first?.heap && lastHeap
      ? `; V8 young generation ${mb(first.heap.newSpaceBytes)} → ${mb(lastHeap.newSpaceBytes)} MB, ` +
        `old generation in use ${mb(first.heap.oldUsedBytes)} → ${mb(lastHeap.oldUsedBytes)} MB`
      : '';
  checks.push({
    name: `RSS growth over ${after.toFixed(0)} s of gateway load after warm-up (warm-up: ${r.settings.warmupSeconds} s + the first ${r.settings.roundSeconds} s round)`,
    target: '< 10%',
    measured: `${pct(growth)} (${mb(base)} → ${mb(last)} MB; ${mb(r.rss.warmBytes)} MB after the ${r.settings.warmupSeconds} s warm-up alone${heapNote})`,
    ok: growth < 0.1,
  });

  // CPU time per request is what a bigger Redis could change; throughput also moves with other load on the
  // machine (and the phases run at different times), so it is shown but not judged.
  const g1 = pick(r.rounds, 'gateway', 'steady');
  const gN = pick(r.rounds, 'gateway', 'sessions');
  const rpsRatio = med(gN, (x) => x.load.rps) / med(g1, (x) => x.load.rps);
  const cpuRatio = med(gN, (x) => x.cpuUsPerRequest) / med(g1, (x) => x.cpuUsPerRequest);
  const sameRedis = Math.abs(med(gN, (x) => x.redisCommandsPerRequest) - med(g1, (x) => x.redisCommandsPerRequest)) < 0.05;
  checks.push({
    name: `cost per request at ${r.sessions.seeded.toLocaleString('en-US')} vs 1 session`,
    target: 'CPU/req within 10%, same Redis commands',
    measured: `CPU/req ${pct(cpuRatio - 1)}, Redis cmds/req ${sameRedis ? 'same' : 'differ'} (throughput ${pct(rpsRatio - 1)})`,
    ok: cpuRatio <= 1.1 && sameRedis,
  });

  if (r.websocket) {
    const ws = r.websocket;
    const perRound = wsRatios(ws, 'gateway', 'direct');
    const ratio = median(perRound);
    // With every process CPU-bound, the throughput ratio is the ratio of the CPU a message costs the machine.
    const costRatio = median(wsRatios(ws, 'gateway', 'direct', (g, d) => d.totalCpuUsPerMessage / g.totalCpuUsPerMessage));
    // The direct rounds are the fastest: there the load generator is closest to its limit.
    const loadgen = median(wsPick(ws, 'direct').map((x) => x.cpuPercent.loadgen));
    const lost = ws.rounds.reduce((n, x) => n + x.echo.wrongEchoes + x.echo.socketErrors, 0);
    checks.push({
      name: `WebSocket echo throughput, gateway / direct (${ws.settings.sockets} sockets × ${ws.settings.window} in flight, ${ws.settings.messageBytes} B)`,
      target: `≥ ${fmt(WEBSOCKET_GOAL)}`,
      measured:
        `${fmt(ratio)} (${ratio >= WEBSOCKET_GOAL ? '' : `${fmt((WEBSOCKET_GOAL - ratio) * 100, 0)} points short; `}` +
        `rounds ${perRound.map((x) => fmt(x)).join(', ')}); a bare byte pipe: ${fmt(median(wsRatios(ws, 'bare', 'direct')))}; ` +
        `CPU per message (all processes), direct / gateway: ${fmt(costRatio)}; load generator ${fmt(loadgen, 0)}% of a core in the direct rounds` +
        (loadgen >= SATURATED_PERCENT ? ' (saturated: the direct figure is its limit)' : '') +
        (lost ? `; ${lost} wrong echoes or lost sockets` : ''),
      ok: ratio >= WEBSOCKET_GOAL && lost === 0,
    });
  }

  // A due wave's calls go on with the current tokens: its p99 is judged against the same burst with no refresh
  // due (the fresh wave), never against the load rounds (32 connections, not 500 calls at once).
  const fresh = r.waves.find((w) => w.kind === 'fresh');
  for (const w of r.waves) {
    const ok200 = w.result.byStatus['200'] === w.result.requests;
    const grants = w.kind === 'fresh' ? 0 : w.sessions;
    const p99 = w.result.latencyMs.p99;
    const bound = w.kind === 'due' && fresh ? 2 * fresh.result.latencyMs.p99 : undefined;
    checks.push({
      name: `refresh wave ${w.wave} (${waveKind(w)}): ${w.sessions} sessions × ${w.callsPerSession} calls`,
      target: `${grants} grants, all 200${bound !== undefined ? `, p99 ≤ 2 × the fresh wave's (${fmt(bound, 1)} ms)` : ''}`,
      measured: `${w.refreshGrants} grants, ${ok200 ? 'all 200' : JSON.stringify(w.result.byStatus)}, p99 ${fmt(p99, 1)} ms`,
      ok: w.refreshGrants === grants && ok200 && (bound === undefined || p99 <= bound),
    });
  }
  return checks;
}

function waveKind(w: WaveRecord): string {
  if (w.kind === 'fresh') return 'no refresh due';
  if (w.kind === 'expired') return `tokens expired${w.idpDelayMs ? `, IdP ${w.idpDelayMs} ms per request` : ''}`;
  return `refresh due, IdP ${w.idpDelayMs} ms per request`;
}

export function renderMarkdown(r: BenchResults, checks: Check[]): string {
  const m = r.machine;
  const s = r.settings;
  const lines: string[] = [];
  lines.push(
    `Measured ${r.date.slice(0, 16).replace('T', ' ')} UTC on ${m.cpus} × ${m.cpuModel}, ${m.memoryGB} GB, Linux ${m.kernel}, ` +
      `Node ${m.node}, Redis ${m.redis}; load: ${m.loadGenerator}, ${s.connections} connections, ` +
      `${s.rounds} interleaved rounds of ${s.roundSeconds} s per target (median shown); whole run ${r.seconds} s; source ${r.source}.`,
    '',
    '| target | req/s | p50 ms | p99 ms | CPU µs/req | CPU % | peak RSS MB | Redis cmds/req |',
    '|---|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const row of rows(r)) {
    const x = row.rounds;
    if (!x.length) continue;
    lines.push(
      `| ${row.label} | ${fmt(
        med(x, (v) => v.load.rps),
        0,
      )} | ${fmt(med(x, (v) => v.load.latencyMs.p50))} | ` +
        `${fmt(med(x, (v) => v.load.latencyMs.p99))} | ${fmt(
          med(x, (v) => v.cpuUsPerRequest),
          0,
        )} | ${fmt(
          med(x, (v) => v.cpuPercent),
          0,
        )} | ` +
        `${fmt(Math.max(...x.map((v) => v.peakRssBytes)) / 2 ** 20, 1)} | ${fmt(med(x, (v) => v.redisCommandsPerRequest))} |`,
    );
  }
  const gw = pick(r.rounds, 'gateway', 'steady');
  const dpop = pick(r.rounds, 'dpop', 'steady');
  const ratioDirect = paired(r.rounds, (g) => g.load.rps) / median(pick(r.rounds, 'direct', 'steady').map((d) => d.load.rps));
  lines.push(
    '',
    `Gateway / direct upstream throughput: ${fmt(ratioDirect)}. Load generator CPU: ` +
      `${fmt(median(r.rounds.filter((x) => x.phase === 'steady').map((x) => x.loadgenCpuPercent)), 0)}% of a core (median). ` +
      `Other processes on the machine used ${fmt(median(r.rounds.map((x) => x.foreignCpuPercent)), 0)}% of a core during rounds ` +
      `(median; max ${fmt(Math.max(...r.rounds.map((x) => x.foreignCpuPercent)), 0)}%; load average ${fmt(m.loadAverage.before, 1)} → ${fmt(m.loadAverage.after, 1)}).`,
    ...(dpop.length
      ? [
          '',
          `DPoP's cost (an ES256 proof signed for every proxied request, its key imported once per session): ` +
            `${fmt(med(dpop, (v) => v.cpuUsPerRequest) - med(gw, (v) => v.cpuUsPerRequest), 0)} µs more gateway CPU per request, ` +
            `throughput ${fmt(med(dpop, (v) => v.load.rps) / med(gw, (v) => v.load.rps))} of the same route without DPoP (medians).`,
        ]
      : []),
    '',
    '| target | goal | measured | |',
    '|---|---|---|---|',
    ...checks.map((c) => `| ${c.name} | ${c.target} | ${c.measured} | ${c.ok ? 'met' : '**missed**'} |`),
  );

  // Which commands: commandstats over the steady gateway rounds; round trips from the MONITOR window.
  const responses = gw.reduce((n, x) => n + x.load.responses, 0);
  const calls: Record<string, number> = {};
  for (const x of gw) for (const [k, v] of Object.entries(x.redisCalls)) calls[k] = (calls[k] ?? 0) + v;
  const acc = r.accounting;
  const names = [...new Set([...Object.keys(calls), ...Object.keys(acc.fromClients), ...Object.keys(acc.fromScripts)])].sort();
  lines.push(
    '',
    `Redis commands per proxied request (steady state, 1 session): INFO commandstats over the gateway rounds, and a ` +
      `MONITOR window of ${acc.requests} requests telling round trips from commands run inside scripts.`,
    '',
    '| command | per request (commandstats) | round trips / request | inside scripts / request | writes |',
    '|---|--:|--:|--:|---|',
    ...names.map(
      (n) =>
        `| ${n} | ${fmt((calls[n] ?? 0) / responses, 3)} | ${fmt((acc.fromClients[n] ?? 0) / acc.requests, 3)} | ` +
        `${fmt((acc.fromScripts[n] ?? 0) / acc.requests, 3)} | ${acc.writeCommands.includes(n) ? 'yes' : ''} |`,
    ),
  );

  if (r.websocket) lines.push(...websocketSection(r.websocket));

  if (r.waves.length) {
    lines.push(
      '',
      '| refresh wave | requests | refresh grants | statuses | p50 ms | p99 ms | max ms | wave s | IdP CPU ms | Redis cmds |',
      '|---|--:|--:|---|--:|--:|--:|--:|--:|--:|',
    );
    for (const w of r.waves) {
      const l = w.result.latencyMs;
      lines.push(
        `| ${w.wave}: ${waveKind(w)}, ${w.sessions} sessions × ${w.callsPerSession} | ${w.result.requests} | ${w.refreshGrants} | ${JSON.stringify(w.result.byStatus)} | ` +
          `${fmt(l.p50, 1)} | ${fmt(l.p99, 1)} | ${fmt(l.max, 1)} | ${fmt(w.result.seconds)} | ${fmt(w.idpCpuMs, 0)} | ${sum(w.redisCalls)} |`,
      );
    }
  }

  if (r.websocketProfile) {
    const p = r.websocketProfile;
    lines.push(
      '',
      `CPU profile of the gateway over one WebSocket echo round (V8's profiler, the same as \`--cpu-prof\`, ${p.messagesPerSecondUnderProfiler.toFixed(0)} msg/s ` +
        `under the profiler; busy ${p.busyMs} ms, idle ${p.idleMs} ms; ${p.file}). Self time by package or src/ file:`,
      '',
      '| place | self ms | % of busy |',
      '|---|--:|--:|',
      ...p.places.map((x) => `| ${x.where} | ${x.ms} | ${x.percent} |`),
      '',
      'Top self time:',
      '',
      '| function | where | self ms | % of busy |',
      '|---|---|--:|--:|',
      ...p.functions.map((f) => `| ${f.name} | ${f.location || f.where} | ${f.ms} | ${f.percent} |`),
    );
  }

  if (r.profile) {
    const p = r.profile;
    lines.push(
      '',
      `CPU profile of the gateway under the same load (\`node --cpu-prof\`, ${p.rpsUnderProfiler.toFixed(0)} req/s under the profiler; ` +
        `busy ${p.busyMs} ms, idle ${p.idleMs} ms; ${p.file}). Top self time:`,
      '',
      '| function | where | self ms | % of busy |',
      '|---|---|--:|--:|',
      ...p.functions.map((f) => `| ${f.name} | ${f.location || f.where} | ${f.ms} | ${f.percent} |`),
      '',
      'Self time by package or src/ file (Node internals and native code charged to their caller):',
      '',
      '| place | self ms | % of busy |',
      '|---|--:|--:|',
      ...p.places.map((x) => `| ${x.where} | ${x.ms} | ${x.percent} |`),
      '',
      "Time under Gatehouse's own functions (the innermost one on the stack; what it calls included):",
      '',
      '| function | where | total ms | % of busy |',
      '|---|---|--:|--:|',
      ...p.ownInclusive.map((f) => `| ${f.name} | ${f.location} | ${f.ms} | ${f.percent} |`),
    );
  }
  return `${lines.join('\n')}\n`;
}

function websocketSection(ws: WebSocketResults): string[] {
  const st = ws.settings;
  const lines: string[] = [
    '',
    `WebSocket echo: ${st.sockets} sockets, each keeping ${st.window} text messages of ${st.messageBytes} B in flight (an echo ` +
      `received sends the next), to the upstream's \`ws\` echo server directly, through a bare Node relay (a byte pipe) and through ` +
      `Gatehouse's \`websocket\` route (authenticated: session cookie and Origin); ${st.warmupSeconds} s of warm-up each, then ` +
      `${st.rounds} interleaved rounds of ${st.roundSeconds} s (median shown). The load generator's \`ws\` clients are the same for every target.`,
    '',
    '| WebSocket echo | msg/s | p50 ms | p99 ms | relay CPU µs/msg | relay CPU % | upstream CPU % | load generator CPU % | all CPU µs/msg |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  const labels: Record<WsTargetKey, string> = {
    direct: 'direct upstream socket',
    bare: 'bare Node relay (byte pipe)',
    gateway: 'Gatehouse, `websocket` route',
  };
  for (const t of ['direct', 'bare', 'gateway'] as const) {
    const x = wsPick(ws, t);
    if (!x.length) continue;
    const m = (f: (v: WsRoundRecord) => number, digits = 0) => fmt(median(x.map(f)), digits);
    // A direct round has no relay.
    const relay = (f: (v: WsRoundRecord) => number, digits: number) => (t === 'direct' ? '–' : m(f, digits));
    lines.push(
      `| ${labels[t]} | ${m((v) => v.echo.messagesPerSecond)} | ${m((v) => v.echo.latencyMs.p50, 2)} | ${m((v) => v.echo.latencyMs.p99, 2)} | ` +
        `${relay((v) => v.relayCpuUsPerMessage, 1)} | ${relay((v) => v.cpuPercent.relay, 0)} | ` +
        `${m((v) => v.cpuPercent.upstream)} | ${m((v) => v.cpuPercent.loadgen)} | ${m((v) => v.totalCpuUsPerMessage, 1)} |`,
    );
  }
  const direct = wsRatios(ws, 'gateway', 'direct');
  const bare = wsRatios(ws, 'gateway', 'bare');
  const bareDirect = wsRatios(ws, 'bare', 'direct');
  const relayCost = median(wsRatios(ws, 'gateway', 'bare', (g, b) => g.relayCpuUsPerMessage / b.relayCpuUsPerMessage));
  const loadgen = (t: WsTargetKey) => fmt(median(wsPick(ws, t).map((v) => v.cpuPercent.loadgen)), 0);
  const loadgenMax = Math.max(...ws.rounds.map((v) => v.cpuPercent.loadgen));
  lines.push(
    '',
    `Gateway / direct: ${fmt(median(direct))} (rounds ${direct.map((v) => fmt(v)).join(', ')}); bare relay / direct: ` +
      `${fmt(median(bareDirect))}; gateway / bare relay: ${fmt(median(bare))}; the gateway's CPU per message is ` +
      `${fmt(relayCost)} × the bare relay's. The load generator used ${loadgen('direct')}% of a core in the direct rounds, ` +
      `${loadgen('bare')}% with the bare relay and ${loadgen('gateway')}% with the gateway (medians)` +
      (loadgenMax >= SATURATED_PERCENT
        ? ': it runs at a full core in the direct rounds, as does the upstream, so the direct figure is what the client and the ' +
          'upstream can do with both cores to themselves; a relay is a third process on the same 2 cores, and takes its CPU from them.'
        : '.') +
      ` Other processes used ${fmt(median(ws.rounds.map((v) => v.foreignCpuPercent)), 0)}% of a core (median).`,
  );

  const i = ws.idle;
  const n = Math.max(1, i.opened);
  const mb = (b: number) => fmt(b / 2 ** 20, 1);
  const per = (f: (m: MemoryReading) => number) => `${fmt((f(i.open) - f(i.before)) / n / 1024, 1)} KB`;
  const row = (label: string, f: (m: MemoryReading) => number) =>
    `| ${label} | ${mb(f(i.before))} | ${mb(f(i.open))} | ${mb(f(i.closed))} | ${per(f)} |`;
  const refused = Object.keys(i.refused).length ? `, refused ${JSON.stringify(i.refused)}` : '';
  lines.push(
    '',
    `${i.opened.toLocaleString('en-US')} of ${i.requested.toLocaleString('en-US')} idle sockets opened through the gateway ` +
      `(${i.sessions} sessions × ${i.perSession}, GATEHOUSE_WEBSOCKETS_PER_SESSION=${i.perSession}${refused}) in ${fmt(i.openSeconds, 1)} s; ` +
      `the gateway's gauge read ${i.gatewayGauge.open} open, then ${i.gatewayGauge.afterClose} after they closed (${fmt(i.closeSeconds, 1)} s). ` +
      `Each reading 2–3 s after the step, right after a full garbage collection in the gateway (over its inspector):`,
    '',
    `| idle sockets | before MB | ${i.opened.toLocaleString('en-US')} open MB | after closing MB | per open socket |`,
    '|---|--:|--:|--:|--:|',
    row('gateway RSS', (m) => m.rssBytes),
    row('gateway V8 heap in use', (m) => m.heapUsedBytes),
    row('gateway V8 external memory', (m) => m.externalBytes),
  );
  return lines;
}

// `node dist/bench/report.js bench/results/latest.json`: renders a results file again (after a report change).
if (require.main === module && process.argv[2]) {
  const results = JSON.parse(readFileSync(process.argv[2], 'utf8')) as BenchResults;
  process.stdout.write(renderMarkdown(results, evaluate(results)));
}
