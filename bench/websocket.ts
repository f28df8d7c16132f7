/**
 * The WebSocket part of the bench, on the gateway of the HTTP rounds (its route table has a `websocket`
 * route to the same upstream, which echoes):
 *
 * - echo throughput: the same sockets and load generator against the upstream's socket directly, through a
 *   bare Node relay (bareRelay.ts: what any relay process costs) and through the gateway, in interleaved
 *   rounds (the order rotating), each round's CPU per process recorded: the relay's, the upstream's and the
 *   load generator's (on 2 cores they share the machine, so a saturated load generator is reported, not
 *   hidden);
 * - idle sockets: many authenticated sockets opened through the gateway and left idle, the gateway's RSS and
 *   V8 heap read before, while they are open and after they closed, each time after a full garbage
 *   collection in the gateway (what it keeps, not garbage of the handshakes not collected yet).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { summarizeProfile, type ProfileSummary } from './profile';
import type { Gateway } from './gateway';
import type { Loader } from './loader';
import { cpuSeconds, machineBusySeconds, memory } from './procs';
import type { IdleMemory, WsRoundRecord, WsTargetKey } from './report';
import type { SocketSpec } from './wsLoad';

export interface WsSettings {
  sockets: number;
  window: number;
  messageBytes: number;
  warmupSeconds: number;
  roundSeconds: number;
  rounds: number;
  idleSockets: number;
  /** The gateway's GATEHOUSE_WEBSOCKETS_PER_SESSION (the idle sockets are spread over as many sessions as it takes). */
  perSession: number;
}

export interface WsRig {
  loader: Loader;
  gateway: Gateway;
  upstreamPid: number;
  upstreamPort: number;
  bareRelay: { pid: number; port: number };
  /** Session cookies: the echo sockets take one each in turn, the idle ones `perSession` each. */
  cookies: string[];
  /** CPU seconds of every process of the bench (to tell other load on the machine). */
  benchCpuSeconds: () => number;
  say: (msg: string) => void;
}

/** Where the echo socket is: the upstream's own path, the same through the bare relay, and the gateway's route. */
export function echoUrl(rig: WsRig, target: WsTargetKey): string {
  if (target === 'gateway') return `${rig.gateway.url.replace(/^http/, 'ws')}/api/live/echo`;
  return `ws://127.0.0.1:${target === 'bare' ? rig.bareRelay.port : rig.upstreamPort}/echo`;
}

/** The process relaying a target's sockets (none for direct). */
function relayPid(rig: WsRig, target: WsTargetKey): number | undefined {
  return target === 'gateway' ? rig.gateway.child.pid : target === 'bare' ? rig.bareRelay.pid : undefined;
}

function spec(rig: WsRig, url: string): SocketSpec {
  // The Origin a browser sends for a page of the gateway's; the direct socket gets the same handshake.
  return { url, cookies: rig.cookies, origin: rig.gateway.url };
}

/** One echo round against one target, with the CPU each process used over it. */
async function echoRound(rig: WsRig, s: WsSettings, target: WsTargetKey, round: number): Promise<WsRoundRecord> {
  const relay = relayPid(rig, target);
  const cpu = () => ({
    relay: relay === undefined ? 0 : cpuSeconds(relay),
    upstream: cpuSeconds(rig.upstreamPid),
    loadgen: cpuSeconds(rig.loader.child.pid),
  });
  const cpu0 = cpu();
  const ours0 = rig.benchCpuSeconds();
  const machine0 = machineBusySeconds();
  const t0 = performance.now();
  const echo = await rig.loader.echo({
    ...spec(rig, echoUrl(rig, target)),
    sockets: s.sockets,
    window: s.window,
    messageBytes: s.messageBytes,
    seconds: s.roundSeconds,
  });
  // CPU over the whole call (handshakes and closes included: 50 of them cost nothing next to the messages).
  const wall = (performance.now() - t0) / 1000;
  const cpu1 = cpu();
  const used = { relay: cpu1.relay - cpu0.relay, upstream: cpu1.upstream - cpu0.upstream, loadgen: cpu1.loadgen - cpu0.loadgen };
  const foreign = machineBusySeconds() - machine0 - (rig.benchCpuSeconds() - ours0);
  // Every message of the call, the drain after the measured time included, for the CPU per message.
  const n = Math.max(1, echo.messagesInCall);
  const record: WsRoundRecord = {
    target,
    round,
    echo,
    wallSeconds: wall,
    cpuPercent: {
      relay: relay === undefined ? NaN : (100 * used.relay) / wall,
      upstream: (100 * used.upstream) / wall,
      loadgen: (100 * used.loadgen) / wall,
    },
    relayCpuUsPerMessage: relay === undefined ? NaN : (used.relay * 1e6) / n,
    totalCpuUsPerMessage: ((used.relay + used.upstream + used.loadgen) * 1e6) / n,
    foreignCpuPercent: Math.max(0, (100 * foreign) / wall),
  };
  const bad = echo.wrongEchoes + echo.socketErrors;
  const pc = (v: number) => (Number.isFinite(v) ? `${v.toFixed(0)}%` : '–');
  rig.say(
    `websocket round ${round} ${target.padEnd(7)} ${echo.messagesPerSecond.toFixed(0).padStart(6)} msg/s  ` +
      `p50 ${echo.latencyMs.p50.toFixed(2)} ms  p99 ${echo.latencyMs.p99.toFixed(2)} ms  CPU relay ${pc(record.cpuPercent.relay)}` +
      ` upstream ${pc(record.cpuPercent.upstream)} load ${pc(record.cpuPercent.loadgen)}` +
      `  other load ${record.foreignCpuPercent.toFixed(0)}%` +
      (bad ? `  !! ${echo.wrongEchoes} wrong echoes, ${echo.socketErrors} sockets lost` : ''),
  );
  return record;
}

/** The upstream sees a bearer through the gateway and none otherwise; one message echoes unchanged every way. */
export async function sanityCheckSockets(rig: WsRig): Promise<void> {
  const first = (url: string, send?: string) =>
    new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(url, { origin: rig.gateway.url, headers: { cookie: rig.cookies[0]! }, perMessageDeflate: false });
      ws.once('open', () => send !== undefined && ws.send(send));
      ws.once('message', (data) => {
        resolve((data as Buffer).toString('utf8'));
        ws.close();
      });
      ws.once('unexpected-response', (_req, res) => reject(new Error(`${url}: upgrade refused with ${res.statusCode}`)));
      ws.once('error', reject);
    });
  for (const target of WS_TARGETS) {
    const echo = echoUrl(rig, target);
    const saw = await first(echo.replace(/\/echo$/, '/bearer'));
    const echoed = await first(echo, 'sanity');
    if (saw !== (target === 'gateway' ? 'saw-bearer:1' : 'saw-bearer:0') || echoed !== 'sanity') {
      throw new Error(`websocket sanity check: ${target} answered ${saw}, echoed ${JSON.stringify(echoed)}`);
    }
  }
}

const WS_TARGETS: readonly WsTargetKey[] = ['direct', 'bare', 'gateway'];

/** Warm-up, then interleaved echo rounds, the order rotating each round. */
export async function echoRounds(rig: WsRig, s: WsSettings): Promise<WsRoundRecord[]> {
  const load = { sockets: s.sockets, window: s.window, messageBytes: s.messageBytes };
  for (const t of WS_TARGETS) await rig.loader.echo({ ...spec(rig, echoUrl(rig, t)), ...load, seconds: s.warmupSeconds });
  rig.say(
    `websocket warm-up done (${s.warmupSeconds} s each): ${s.sockets} sockets × ${s.window} messages of ${s.messageBytes} B in flight`,
  );
  const rounds: WsRoundRecord[] = [];
  for (let r = 1; r <= s.rounds; r++) {
    for (let i = 0; i < WS_TARGETS.length; i++) rounds.push(await echoRound(rig, s, WS_TARGETS[(i + r - 1) % WS_TARGETS.length]!, r));
  }
  return rounds;
}

/** The gateway's RSS and heap once nothing has moved for a moment, after a full garbage collection in it. */
async function settle(rig: WsRig, ms = 2000) {
  await sleep(ms);
  await rig.gateway.collectGarbage();
  await sleep(500);
  const heap = await rig.gateway.heap();
  return {
    rssBytes: memory(rig.gateway.child.pid).rss,
    heapUsedBytes: heap.usedBytes ?? NaN,
    externalBytes: heap.externalBytes ?? NaN,
  };
}

async function untilOpen(gateway: Gateway, count: number, ms = 10_000): Promise<number> {
  let open = await gateway.socketsOpen();
  for (const end = Date.now() + ms; open !== count && Date.now() < end; open = await gateway.socketsOpen()) await sleep(100);
  return open;
}

/** Opens `idleSockets` sockets through the gateway, `perSession` per session, and reads what they cost. */
export async function idleSockets(rig: WsRig, s: WsSettings): Promise<IdleMemory> {
  const sessions = Math.ceil(s.idleSockets / s.perSession);
  const cookies = rig.cookies.slice(0, sessions);
  if (cookies.length < sessions) throw new Error(`idle sockets: ${sessions} sessions needed, ${cookies.length} logged in`);
  if ((await untilOpen(rig.gateway, 0)) !== 0) throw new Error('idle sockets: sockets of the echo rounds are still open');
  const before = await settle(rig);
  const opened = await rig.loader.openIdle({
    url: echoUrl(rig, 'gateway'),
    // Socket i takes session i % sessions: each session ends with perSession sockets.
    cookies,
    origin: rig.gateway.url,
    count: s.idleSockets,
    concurrency: 50,
  });
  const gaugeOpen = await untilOpen(rig.gateway, opened.opened);
  const open = await settle(rig, 3000);
  const closedBy = await rig.loader.closeIdle();
  const gaugeAfter = await untilOpen(rig.gateway, 0);
  const closed = await settle(rig);
  const result: IdleMemory = {
    requested: s.idleSockets,
    sessions,
    perSession: s.perSession,
    opened: opened.opened,
    refused: opened.refused,
    openSeconds: opened.seconds,
    closeSeconds: closedBy.seconds,
    gatewayGauge: { open: gaugeOpen, afterClose: gaugeAfter },
    before,
    open,
    closed,
  };
  const kb = (b: number) => (b / 1024).toFixed(1);
  const n = Math.max(1, opened.opened);
  rig.say(
    `${opened.opened} idle sockets open (${sessions} sessions; refused ${JSON.stringify(opened.refused)}) in ${opened.seconds.toFixed(1)} s: ` +
      `gateway RSS +${kb((open.rssBytes - before.rssBytes) / n)} KB/socket, V8 heap used +${kb((open.heapUsedBytes - before.heapUsedBytes) / n)} KB/socket; ` +
      `after closing: RSS ${((closed.rssBytes - before.rssBytes) / 2 ** 20).toFixed(1)} MB over before`,
  );
  return result;
}

/**
 * The gateway's CPU profile over one echo round (V8's sampling profiler, over the gateway's inspector: this
 * round only, no start-up or logins in it), written to `dir`.
 */
export async function profileEcho(
  rig: WsRig,
  s: WsSettings,
  dir: string,
): Promise<ProfileSummary & { messagesPerSecondUnderProfiler: number }> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const load = { ...spec(rig, echoUrl(rig, 'gateway')), sockets: s.sockets, window: s.window, messageBytes: s.messageBytes };
  await rig.gateway.inspect('Profiler.enable');
  await rig.gateway.inspect('Profiler.start');
  let echo;
  let profile: unknown;
  try {
    echo = await rig.loader.echo({ ...load, seconds: s.roundSeconds });
  } finally {
    ({ profile } = (await rig.gateway.inspect('Profiler.stop')) as { profile: unknown });
  }
  const file = join(dir, 'gateway-websocket-echo.cpuprofile');
  writeFileSync(file, JSON.stringify(profile));
  return { messagesPerSecondUnderProfiler: echo.messagesPerSecond, ...summarizeProfile(file, 15) };
}
