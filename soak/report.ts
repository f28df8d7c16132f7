/**
 * The soak's figures from what it recorded: every browser call and login, the fault windows, the IdP proxy's
 * books, the samplers. `analyse` computes them and judges each against its target; `renderMarkdown` writes
 * the tables (soak/results/latest.md, and the results section of docs/soak.md).
 */
import type { CallRecord, LoginRecord } from './browsers';
import { EXPECTED_401 } from './browsers';
import type { IdpStats } from './protocol';
import type { KeyCensus } from './redis';
import { FAULTS, type FaultEvent, type FaultKind } from './schedule';

export interface Sample {
  t: number;
  gateways: Array<{ name: string; starts: number; rss?: number; heap?: number; lagMaxMs?: number }>;
  redis: { usedMemory: number; keys: number } | undefined;
  cpu: Record<string, number>;
  loggedIn: number;
}

export interface TailRecord {
  atEnd: KeyCensus;
  left: KeyCensus;
  seconds: number;
  limitSeconds: number;
  /** [seconds after the load, keys] */
  series: Array<[number, number]>;
}

export interface SoakData {
  settings: Record<string, number | undefined>;
  machine: {
    cpus: number;
    cpuModel: string;
    memoryGb: number;
    kernel: string;
    virtualization: string;
    node: string;
    redis: string;
    loadAverageAtStart: number[];
    date: string;
  };
  startedAt: string;
  loadEndedAt: number;
  events: FaultEvent[];
  calls: CallRecord[];
  logins: LoginRecord[];
  logouts: LoginRecord[];
  revocations: Array<{ t: number; sub: string }>;
  dataLoss: { affected: number; unauthenticated: number; other: Record<string, number> };
  lb: { refusedRetried: number; staleConnectionRetried: number };
  findings: string[];
  samples: Sample[];
  censuses: Array<{ t: number; census: KeyCensus }>;
  tail: TailRecord;
  idp: IdpStats;
  upstream: Record<string, unknown>;
  logs: Record<string, Record<string, number>>;
}

/** What an answer counts as in the figures and the picture. */
export type Category = 'ok' | 'expected401' | 'unexpected401' | 's502' | 's503' | 's504' | 'bad';
export const CATEGORIES: Category[] = ['ok', 'expected401', 's502', 's503', 's504', 'unexpected401', 'bad'];

export function categoryOf(outcome: string): Category {
  if (outcome === 'ok') return 'ok';
  if ((EXPECTED_401 as readonly string[]).includes(outcome)) return 'expected401';
  if (outcome.startsWith('401 unexpected')) return 'unexpected401';
  if (outcome === 'lb 502' || outcome === '502 bad_gateway') return 's502';
  if (/^503 (token_refresh_unavailable|session_store_unavailable|upstream_busy)/.test(outcome)) return 's503';
  if (outcome === '504 upstream_timeout') return 's504';
  return 'bad';
}

export interface WindowFigures {
  label: string;
  kind: FaultKind | 'baseline';
  n: number;
  /** seconds since the load began */
  start: number;
  faultEnd: number;
  windowEnd: number;
  calls: number;
  outcomes: Record<string, number>;
  logins: { ok: number; failed: number };
  /** seconds from the fault's end to the first second in which every answer was a 200 (or an expected 401) */
  recoverySeconds: number | null;
  /** seconds from the fault's end until every browser that called in the window had a 200 again */
  everyBrowserSeconds: number | null;
  detail?: Record<string, unknown>;
}

export interface Target {
  figure: string;
  target: string;
  measured: string;
  /** false when the run was too short to tell (memory growth, keys expiring): shown, not counted */
  judged?: boolean;
  met: boolean;
}

export interface Results {
  machine: SoakData['machine'];
  settings: SoakData['settings'];
  startedAt: string;
  targets: Target[];
  verdict: { met: number; missed: string[] };
  totals: { calls: number; outcomes: Record<string, number>; callsPerSecond: number };
  refresh: IdpStats['refresh'] & { perExpiry: number };
  proxyLagMs: IdpStats['lagMs'];
  /** the replicas' event-loop delay: median and worst of the 5 s samples, and in the samples when a refresh came early */
  gatewayLagMs: { p50: number; max: number; whenEarly: number[] };
  sessions: {
    logins: number;
    loginFailures: Record<string, number>;
    logouts: number;
    logoutOutcomes: Record<string, number>;
    revocations: number;
    endedBy: Record<string, number>;
    dataLoss: SoakData['dataLoss'];
    killBound: number;
    kills: IdpStats['kills'];
  };
  windows: WindowFigures[];
  perSecond: Array<Record<Category, number> & { t: number }>;
  memory: {
    series: Array<{ t: number; gateways: Sample['gateways'] }>;
    steady: {
      name: string;
      heapGrowthPct: number;
      rssGrowthPct: number;
      heapMbPerMinute: number;
      first: { heap: number; rss: number };
      last: { heap: number; rss: number };
    };
  };
  redis: {
    series: Array<{ t: number; usedMemory: number; keys: number }>;
    usedMemoryMax: number;
    keysMax: number;
    noTtlMax: number;
    censusesTaken: number;
    kindsAtEnd: KeyCensus['byKind'];
    tail: TailRecord;
  };
  cpu: Record<string, number>;
  upstream: Record<string, unknown>;
  lb: SoakData['lb'];
  logs: SoakData['logs'];
  findings: string[];
  anomalies: string[];
  events: FaultEvent[];
}

/**
 * How long a key of each kind may live, in seconds (the gateway's own lifetimes): a session's records end
 * with it (its token record and ledger entries 5 minutes later, for the sweeper); a login's or a logout's
 * state after 10 minutes; a session's refresh-rate window (the anomaly signal) after an hour; a refresh lock
 * after its lease.
 */
export function lifetimeOf(kind: string, s: SoakData['settings']): { seconds: number; sessionBound: boolean } {
  const absolute = s.absoluteSeconds ?? 0;
  const grace = s.tokenGraceSeconds ?? 300;
  const letter = /^[^:]*:([a-z]+)[:{]/.exec(kind)?.[1] ?? '';
  switch (letter) {
    case 's':
    case 'u':
    case 'p':
      return { seconds: absolute, sessionBound: true };
    case 't':
    case 'e':
      return { seconds: absolute + grace, sessionBound: true };
    case 'l':
      return { seconds: 10, sessionBound: true };
    case 'r':
      return { seconds: 3600, sessionBound: false };
    default:
      return { seconds: 600, sessionBound: false };
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const mean = (xs: number[]) => (xs.length ? sum(xs) / xs.length : NaN);
const tally = (xs: string[]) => xs.reduce<Record<string, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});

export function analyse(d: SoakData): Results {
  const end = d.loadEndedAt;
  const seconds = Math.ceil(end / 1000);

  // Answers per second, by when they arrived.
  const perSecond: Results['perSecond'] = Array.from({ length: seconds }, (_, t) => ({
    t,
    ok: 0,
    expected401: 0,
    unexpected401: 0,
    s502: 0,
    s503: 0,
    s504: 0,
    bad: 0,
  }));
  for (const c of d.calls) {
    const s = perSecond[Math.min(seconds - 1, Math.floor(c.done / 1000))];
    if (s) s[categoryOf(c.outcome)]++;
  }
  const clean = (k: number) => {
    const s = perSecond[k];
    return s !== undefined && s.ok > 0 && s.unexpected401 + s.s502 + s.s503 + s.s504 + s.bad === 0;
  };

  // Fault windows: each fault owns the time until the next one begins; before the first, the baseline.
  const windows: WindowFigures[] = [];
  const bounds = [
    { kind: 'baseline' as const, n: 1, start: 0, end: 0 as number, detail: undefined as Record<string, unknown> | undefined },
    ...d.events.map((e) => ({ kind: e.kind, n: e.n, start: e.start, end: e.end, detail: e.detail })),
  ];
  bounds.forEach((w, i) => {
    const windowEnd = bounds[i + 1]?.start ?? end;
    const inWindow = (t: number) => t >= w.start && t < windowEnd;
    // By when the answer came: a call cut by a kill belongs to the kill, wherever it began.
    const calls = d.calls.filter((c) => inWindow(c.done));
    const logins = d.logins.filter((l) => inWindow(l.done));
    let recoverySeconds: number | null = null;
    let everyBrowserSeconds: number | null = null;
    if (w.kind !== 'baseline') {
      for (let k = Math.ceil(w.end / 1000); k < Math.floor(windowEnd / 1000); k++) {
        if (clean(k)) {
          recoverySeconds = Math.max(0, Math.round((k * 1000 - w.end) / 100) / 10);
          break;
        }
      }
      // Every browser that called in the window, back to a 200 (a browser logged out meanwhile: after its login).
      const firstOk = new Map<number, number>();
      const seen = new Set<number>();
      for (const c of calls) {
        if (c.done < w.end) continue;
        seen.add(c.browser);
        if (c.outcome === 'ok' && !firstOk.has(c.browser)) firstOk.set(c.browser, c.done);
      }
      const last = seen.size === firstOk.size ? Math.max(w.end, ...firstOk.values()) : undefined;
      everyBrowserSeconds = last === undefined ? null : round1((last - w.end) / 1000);
    }
    windows.push({
      label: w.kind === 'baseline' ? 'before the first fault' : `${FAULTS[w.kind].short} #${w.n}`,
      kind: w.kind,
      n: w.n,
      start: round1(w.start / 1000),
      faultEnd: round1(w.end / 1000),
      windowEnd: round1(windowEnd / 1000),
      calls: calls.length,
      outcomes: tally(calls.map((c) => c.outcome)),
      logins: { ok: logins.filter((l) => l.outcome === 'ok').length, failed: logins.filter((l) => l.outcome !== 'ok').length },
      recoverySeconds,
      everyBrowserSeconds,
      ...(w.detail && { detail: w.detail }),
    });
  });

  const outcomes = tally(d.calls.map((c) => c.outcome));
  const count = (cat: Category) => sum(Object.entries(outcomes).map(([o, n]) => (categoryOf(o) === cat ? n : 0)));
  const r = d.idp.refresh;
  const perExpiry = r.due > 0 ? (r.due + r.atOnce) / r.due : NaN;
  // The replicas' longest event-loop delay in each 5 s sample; and in the samples when refreshes came early.
  const t0 = Date.parse(d.startedAt);
  const lagAt = (t: number) =>
    Math.max(0, ...d.samples.filter((s) => s.t >= t && s.t < t + 5000 + 1).flatMap((s) => s.gateways.map((g) => g.lagMaxMs ?? 0)));
  const lags = d.samples.map((s) => Math.max(0, ...s.gateways.map((g) => g.lagMaxMs ?? 0))).sort((a, b) => a - b);
  const gatewayLag = { p50: lags[Math.floor(lags.length / 2)] ?? 0, max: lags[lags.length - 1] ?? 0 };
  const earlyLags = r.earlyAt.map((at) => lagAt(at - t0));
  const killBound = sum(d.idp.kills.map((k) => k.inFlight));
  const killLosses = outcomes['401 kill'] ?? 0;

  // Memory of gw-a (never killed), once it has settled: the first and the last fifth compared.
  const warm = d.settings.warmupMs ?? 0;
  const steadySamples = d.samples.filter((s) => s.t >= (d.settings.memoryFromMs ?? warm)).map((s) => ({ t: s.t, g: s.gateways[0] }));
  const withHeap = steadySamples.filter((s) => s.g?.heap !== undefined && s.g.rss !== undefined);
  const fifth = Math.max(1, Math.floor(withHeap.length / 5));
  const firstPart = withHeap.slice(0, fifth);
  const lastPart = withHeap.slice(-fifth);
  const first = { heap: mean(firstPart.map((s) => s.g!.heap!)), rss: mean(firstPart.map((s) => s.g!.rss!)) };
  const last = { heap: mean(lastPart.map((s) => s.g!.heap!)), rss: mean(lastPart.map((s) => s.g!.rss!)) };
  const slope = regression(withHeap.map((s) => [s.t / 60_000, s.g!.heap! / 2 ** 20]));
  const steady = {
    name: d.samples[0]?.gateways[0]?.name ?? 'gw-a',
    heapGrowthPct: round1(((last.heap - first.heap) / first.heap) * 100),
    rssGrowthPct: round1(((last.rss - first.rss) / first.rss) * 100),
    heapMbPerMinute: Math.round(slope * 100) / 100,
    first: { heap: mb(first.heap), rss: mb(first.rss) },
    last: { heap: mb(last.heap), rss: mb(last.rss) },
  };

  const redisSeries = d.samples.flatMap((s) => (s.redis ? [{ t: s.t, usedMemory: s.redis.usedMemory, keys: s.redis.keys }] : []));
  const noTtlMax = Math.max(0, ...d.censuses.map((c) => c.census.noTtl), d.tail.atEnd.noTtl);
  const cpuGroups = new Set(d.samples.flatMap((s) => Object.keys(s.cpu)));
  const loadSamples = d.samples.filter((s) => s.t >= warm);
  const cpu = Object.fromEntries([...cpuGroups].map((g) => [g, round1(mean(loadSamples.map((s) => s.cpu[g] ?? 0)))]));

  const loginOk = d.logins.filter((l) => l.outcome === 'ok').length;
  const endedBy = {
    'logout (deliberate)': d.logouts.filter((l) => l.outcome.startsWith('ok')).length,
    'revoked at the IdP (deliberate)': outcomes['401 revoked'] ?? 0,
    'absolute lifetime': outcomes['401 lifetime'] ?? 0,
    'Redis data loss': outcomes['401 data loss'] ?? 0,
    'a killed replica took the rotated refresh token': killLosses,
    'anything else (lost sessions)': count('unexpected401'),
  };
  const undocumented = Object.entries(outcomes).filter(([o]) => categoryOf(o) === 'bad');
  const noRetryAfter = sum(Object.entries(outcomes).map(([o, n]) => (o.includes('(no Retry-After)') ? n : 0)));
  const baseline = windows[0]!;
  const baselineNotOk = sum(Object.entries(baseline.outcomes).map(([o, n]) => (o === 'ok' || categoryOf(o) === 'expected401' ? 0 : n)));
  const unrecovered = windows.filter((w) => w.kind !== 'baseline' && w.recoverySeconds === null).map((w) => w.label);
  const dl = d.dataLoss;
  const dlJudged = dl.unauthenticated + sum(Object.values(dl.other));
  const tooLong = Object.entries(d.tail.atEnd.byKind).flatMap(([k, v]) => {
    const life = lifetimeOf(k, d.settings).seconds;
    return v.maxTtlMs > life * 1000 + 1000 ? [`${k}: ${Math.round(v.maxTtlMs / 1000)} s > ${life} s`] : [];
  });
  const sessionLeft = sum(Object.entries(d.tail.left.byKind).map(([k, v]) => (lifetimeOf(k, d.settings).sessionBound ? v.keys : 0)));
  const refusedBearers = sum(Object.values((d.upstream.refused ?? {}) as Record<string, number>));

  const targets: Target[] = [
    {
      figure: 'successful refresh grants per access-token expiry',
      target: '1.00',
      measured: `${fmt(perExpiry, 3)} (${r.due + r.atOnce} grants for ${r.due} expiries; most for one expiry of one session: ${r.maxGrantsPerExpiry}; ${r.initial} first API tokens after a login)`,
      met: r.atOnce === 0 && r.due > 0,
    },
    {
      figure: 'refresh tokens the IdP received twice',
      target: '0, except after a kill lost their rotation',
      measured: `${r.sentTwice.other} (after a kill: ${r.sentTwice.killPhysics})`,
      met: r.sentTwice.other === 0,
    },
    {
      figure: '`invalid_grant` not caused by a revocation or a kill',
      target: '0',
      measured: `${r.invalidGrant.unexplained} (revoked on purpose: ${r.invalidGrant.revokedOnPurpose}; after the gateway revoked the token at a session end: ${r.invalidGrant.afterGatewayRevoked}; after a kill: ${r.invalidGrant.killPhysics}; the rest of a grant revoked by reuse: ${r.invalidGrant.afterReuse})`,
      met: r.invalidGrant.unexplained === 0,
    },
    {
      figure: 'sessions ended by anything but a logout, a revocation, their lifetime or the Redis data loss',
      target: '0',
      measured: `${count('unexpected401')}`,
      met: count('unexpected401') === 0,
    },
    {
      figure: 'sessions a killed replica ended (its rotated refresh token died with it), each a 401 `session_expired`',
      target: `≤ the refreshes in flight at the killed replicas (${killBound})`,
      measured: `${killLosses} (rotations lost: ${r.lostRotations}; reuses the IdP saw after them: ${r.invalidGrant.killPhysics})`,
      met: killLosses <= killBound && r.invalidGrant.killPhysics <= killBound,
    },
    {
      figure: 'after the Redis data loss, the first answer of every affected browser (but a 503 while Redis restarts)',
      target: '401 `unauthenticated`',
      measured: `${dl.unauthenticated} of ${dlJudged} judged (${dl.affected} affected)${Object.keys(dl.other).length ? `; other: ${JSON.stringify(dl.other)}` : ''}`,
      met: Object.keys(dl.other).length === 0,
    },
    {
      figure: 'answers other than 200, an expected 401 and the documented 502/503/504',
      target: '0 (no 500, no unexpected 401)',
      measured: undocumented.length ? undocumented.map(([o, n]) => `${o}: ${n}`).join('; ') : '0',
      met: undocumented.length === 0,
    },
    {
      figure: '503 without `Retry-After` where the docs give one',
      target: '0',
      measured: `${noRetryAfter}`,
      met: noRetryAfter === 0,
    },
    {
      figure: 'answers other than 200 before the first fault',
      target: '0',
      measured: `${baselineNotOk} of ${baseline.calls}`,
      met: baselineNotOk === 0,
    },
    {
      figure: 'faults recovered from (a second of nothing but 200s) before the next fault',
      target: 'all',
      measured: unrecovered.length ? `all but ${unrecovered.join(', ')}` : `all ${windows.length - 1}`,
      met: unrecovered.length === 0,
    },
    {
      figure: 'bearer tokens the upstream refused (expired, bad signature, wrong audience)',
      target: '0',
      measured: `${refusedBearers} of ${String(d.upstream.requests)}`,
      met: refusedBearers === 0,
    },
    {
      figure: `V8 heap of ${steady.name} (never killed) after the warm-up, last fifth against first`,
      target: 'no growth (< +10 %)',
      measured: `${signed(steady.heapGrowthPct)} % (${steady.first.heap} → ${steady.last.heap} MB; slope ${signed(steady.heapMbPerMinute)} MB/min); RSS ${signed(steady.rssGrowthPct)} % (${steady.first.rss} → ${steady.last.rss} MB)`,
      met: steady.heapGrowthPct < 10 && steady.rssGrowthPct < 10,
      judged: (d.settings.loadMs ?? 0) >= 10 * 60_000,
    },
    {
      figure: 'Redis keys without a TTL (every 30 s and at the end)',
      target: '0',
      measured: `${noTtlMax} (in ${d.censuses.length + 1} censuses)`,
      met: noTtlMax === 0,
    },
    {
      figure: 'keys with a TTL longer than their kind may live',
      target: '0',
      measured: tooLong.length ? tooLong.join('; ') : '0',
      met: tooLong.length === 0,
    },
    {
      figure: `session keys (\`s\`, \`t\`, \`u\`, \`e\`, \`l\`) left ${d.tail.seconds} s after the load, every session timed out and its token record's grace over`,
      target: '0',
      measured: `${sessionLeft} (of ${d.tail.atEnd.keys} keys at the end of the load, ${d.tail.left.keys} left: ${
        Object.entries(d.tail.left.byKind)
          .map(([k, v]) => `${v.keys} \`${k}\` expiring within ${Math.ceil(v.maxTtlMs / 1000)} s`)
          .join(', ') || 'none'
      })`,
      met: sessionLeft === 0,
      judged: d.tail.seconds >= (d.settings.idleSeconds ?? 0) + (d.settings.tokenGraceSeconds ?? 300),
    },
  ];

  return {
    machine: d.machine,
    settings: d.settings,
    startedAt: d.startedAt,
    targets,
    verdict: {
      met: targets.filter((t) => t.met && t.judged !== false).length,
      missed: targets.filter((t) => !t.met && t.judged !== false).map((t) => t.figure),
    },
    totals: { calls: d.calls.length, outcomes, callsPerSecond: round1(d.calls.length / (end / 1000)) },
    refresh: { ...r, perExpiry: Math.round(perExpiry * 1000) / 1000 },
    proxyLagMs: d.idp.lagMs,
    gatewayLagMs: { ...gatewayLag, whenEarly: earlyLags },
    sessions: {
      logins: loginOk,
      loginFailures: tally(d.logins.filter((l) => l.outcome !== 'ok').map((l) => l.outcome)),
      logouts: d.logouts.length,
      logoutOutcomes: tally(d.logouts.map((l) => l.outcome)),
      revocations: d.revocations.length,
      endedBy,
      dataLoss: d.dataLoss,
      killBound,
      kills: d.idp.kills,
    },
    windows,
    perSecond,
    memory: { series: d.samples.map((s) => ({ t: s.t, gateways: s.gateways })), steady },
    redis: {
      series: redisSeries,
      usedMemoryMax: Math.max(0, ...redisSeries.map((s) => s.usedMemory)),
      keysMax: Math.max(0, ...redisSeries.map((s) => s.keys)),
      noTtlMax,
      censusesTaken: d.censuses.length + 1,
      kindsAtEnd: d.tail.atEnd.byKind,
      tail: d.tail,
    },
    cpu,
    upstream: d.upstream,
    lb: d.lb,
    logs: d.logs,
    findings: d.findings.slice(0, 200),
    anomalies: d.idp.anomalies,
    events: d.events,
  };
}

function regression(points: Array<[number, number]>): number {
  if (points.length < 2) return 0;
  const mx = mean(points.map((p) => p[0]));
  const my = mean(points.map((p) => p[1]));
  const num = sum(points.map(([x, y]) => (x - mx) * (y - my)));
  const den = sum(points.map(([x]) => (x - mx) ** 2));
  return den === 0 ? 0 : num / den;
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const mb = (bytes: number) => round1(bytes / 2 ** 20);
const fmt = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const signed = (x: number) => (x > 0 ? `+${x}` : `${x}`);

/** The short names of answers in the window table. */
function shortOutcomes(outcomes: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [o, n] of Object.entries(outcomes)) {
    const c = categoryOf(o);
    const key =
      c === 'ok'
        ? '200'
        : c === 'expected401'
          ? '401 expected'
          : c === 's502'
            ? o === 'lb 502'
              ? '502 (balancer)'
              : '502'
            : c === 's503'
              ? `503 ${o.split(' ')[1]}`
              : c === 's504'
                ? '504'
                : o;
    out[key] = (out[key] ?? 0) + n;
  }
  return out;
}

export function renderMarkdown(r: Results): string {
  const m = r.machine;
  const s = r.settings;
  const lines: string[] = [];
  lines.push(
    `Run of ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC: ${m.cpus} vCPUs (${m.cpuModel}), ${m.memoryGb} GB, Linux ${m.kernel}${m.virtualization ? ` (${m.virtualization})` : ''}, Node ${m.node}, Redis ${m.redis}; load average ${m.loadAverageAtStart.join(' ')} at the start.`,
  );
  lines.push('');
  lines.push(
    `${Number(s.loadMs) / 60_000} minutes of load: ${s.browsers} browsers, ${r.totals.callsPerSecond} calls/s in all (${r.totals.calls} calls) across ${s.replicas} replicas; access tokens of ${s.tokenSeconds} s; sessions of ${s.idleSeconds} s idle, ${s.absoluteSeconds} s absolute; a logout every ${s.logoutEverySeconds} s, a revocation at the IdP every ${s.revokeEverySeconds} s; ${r.events.length} faults. CPU, in % of one core, averaged after the warm-up: ${Object.entries(
      r.cpu,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  lines.push('');
  const judged = r.targets.filter((t) => t.judged !== false).length;
  lines.push(
    `**${r.verdict.met} of ${judged} targets met${judged < r.targets.length ? ` (${r.targets.length - judged} not judged: the run was too short to tell)` : ''}.**`,
  );
  lines.push('');
  lines.push('| figure | target | measured | |');
  lines.push('| --- | --- | --- | --- |');
  for (const t of r.targets)
    lines.push(
      `| ${t.figure} | ${t.target} | ${t.measured} | ${t.judged === false ? 'not judged: run too short' : t.met ? 'met' : '**missed**'} |`,
    );
  lines.push('');

  const rf = r.refresh;
  lines.push('Refresh grants, counted by the proxy in front of the IdP:');
  lines.push('');
  lines.push('| refresh grants | count |');
  lines.push('| --- | ---: |');
  lines.push(`| arrived at the IdP's door | ${rf.attempts} |`);
  lines.push(`| reached the IdP | ${rf.forwarded} |`);
  lines.push(
    `| succeeded: first API token after a login / at an expiry / a second one for an expiry | ${rf.initial} / ${rf.due} / ${rf.atOnce} |`,
  );
  for (const [why, n] of Object.entries(rf.failedBeforeIdp)) lines.push(`| failed before the IdP: ${why} | ${n} |`);
  for (const [why, n] of Object.entries(rf.idpErrors)) lines.push(`| answered by the IdP with \`${why}\` | ${n} |`);
  lines.push(`| rotations lost with a killed replica | ${rf.lostRotations} |`);
  for (const [by, n] of Object.entries(rf.early)) lines.push(`| came before the nominal refresh point by ${by} | ${n} |`);
  lines.push('');
  if (r.proxyLagMs)
    lines.push(`The proxy's clock is exact to its event-loop delay: p99 ${r.proxyLagMs.p99} ms, at most ${r.proxyLagMs.max} ms.`, '');
  const gl = r.gatewayLagMs;
  lines.push(
    `The replicas' event-loop delay, the worst of the three in each 5 s: median ${gl.p50} ms, at most ${gl.max} ms${
      gl.whenEarly.length
        ? `; in the 5 s of each refresh more than 1.5 s before its point: ${gl.whenEarly.join(', ')} ms (a replica that stalls between noting the time and sending the grant counts the token's life from before it)`
        : ''
    }.`,
    '',
  );

  const ss = r.sessions;
  lines.push(
    `Sessions: ${ss.logins} logins (failed attempts, each retried: ${
      Object.entries(ss.loginFailures)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }).`,
  );
  lines.push('');
  lines.push('| sessions ended by | count |');
  lines.push('| --- | ---: |');
  for (const [k, v] of Object.entries(ss.endedBy)) lines.push(`| ${k} | ${v} |`);
  lines.push('');
  lines.push(
    `Kills: ${ss.kills.map((k) => `${k.inFlight} refreshes in flight (${k.droppedBeforeIdp} dropped before the IdP, ${k.lostRotations} rotations lost, ${k.answeredJustBefore} answered in the last second, ${k.arrivedAfterTheKill} read after the kill)`).join('; ') || 'none'}.`,
  );
  lines.push('');

  lines.push('Answers by fault window (a window runs from the fault to the next one; answers counted by when they came):');
  lines.push('');
  lines.push('| window | at s | fault s | calls | answers | logins ok / failed | all 200 after s | every browser 200 after s |');
  lines.push('| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |');
  for (const w of r.windows) {
    const answers = Object.entries(shortOutcomes(w.outcomes))
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ');
    lines.push(
      `| ${w.label} | ${w.start} | ${w.kind === 'baseline' ? '' : round1(w.faultEnd - w.start)} | ${w.calls} | ${answers} | ${w.logins.ok} / ${w.logins.failed} | ${w.recoverySeconds ?? (w.kind === 'baseline' ? '' : 'not before the next')} | ${w.everyBrowserSeconds ?? (w.kind === 'baseline' ? '' : 'not before the next')} |`,
    );
  }
  lines.push('');
  const byKind = new Map<string, WindowFigures[]>();
  for (const w of r.windows) if (w.kind !== 'baseline') byKind.set(w.kind, [...(byKind.get(w.kind) ?? []), w]);
  const worst = (xs: Array<number | null>) =>
    xs.some((x) => x === null) ? 'not before the next fault' : String(Math.max(...(xs as number[])));
  lines.push(
    'Time to full recovery after each fault: the first second after its end in which every answer was a 200 (or an expected 401), and when every browser that called in its window had a 200 again.',
  );
  lines.push('');
  lines.push('| fault | times | all 200 after s, worst | every browser 200 after s, worst |');
  lines.push('| --- | ---: | ---: | ---: |');
  for (const [kind, ws] of byKind)
    lines.push(
      `| ${FAULTS[kind as FaultKind].label} | ${ws.length} | ${worst(ws.map((w) => w.recoverySeconds))} | ${worst(ws.map((w) => w.everyBrowserSeconds))} |`,
    );
  lines.push('');

  const red = r.redis;
  lines.push(
    `Memory: ${r.memory.steady.name} heap ${r.memory.steady.first.heap} → ${r.memory.steady.last.heap} MB, RSS ${r.memory.steady.first.rss} → ${r.memory.steady.last.rss} MB (first and last fifth after the warm-up). Redis: at most ${mb(red.usedMemoryMax)} MB and ${red.keysMax} keys; ${red.tail.atEnd.keys} keys when the load ended, ${red.tail.left.keys} left ${red.tail.seconds} s later.`,
  );
  lines.push('');
  lines.push(
    `| key kind | lives at most s | keys at the end of the load | longest TTL s | without TTL | left ${red.tail.seconds} s later |`,
  );
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [k, v] of Object.entries(red.kindsAtEnd).sort())
    lines.push(
      `| \`${k}\` | ${lifetimeOf(k, r.settings).seconds} | ${v.keys} | ${Math.round(v.maxTtlMs / 1000)} | ${v.noTtl} | ${red.tail.left.byKind[k]?.keys ?? 0} |`,
    );
  lines.push('');
  const logLines: Record<string, number> = {};
  for (const byMessage of Object.values(r.logs)) for (const [k, v] of Object.entries(byMessage)) logLines[k] = (logLines[k] ?? 0) + v;
  const logged = Object.entries(logLines).sort((a, b) => b[1] - a[1]);
  if (logged.length) {
    lines.push("The replicas' warnings and errors, all three together:");
    lines.push('');
    lines.push('| log line | count |');
    lines.push('| --- | ---: |');
    for (const [k, v] of logged) lines.push(`| ${k.replace(/\|/g, '\\|')} | ${v} |`);
    lines.push('');
  }
  if (r.findings.length || r.anomalies.length) {
    lines.push('Findings:');
    lines.push('');
    for (const f of [...r.findings.slice(0, 20), ...r.anomalies.slice(0, 20)]) lines.push(`- ${f}`);
    lines.push('');
  }
  return lines.join('\n');
}
