/**
 * The fault proxy in front of the soak's IdP (a child process of its own, so that its clock and its event
 * loop are not the IdP's: a busy IdP must not make requests look late). It listens on the issuer's port;
 * the gateways (discovery, token, revocation) and the browsers (authorization, logout) reach the IdP only
 * through it. oidc-provider builds its URLs from the Host header, which the proxy passes on.
 *
 * - It injects the IdP's faults: 503 bursts, latency, connection resets, refused connections.
 * - It tells which gateway replica sent a token request (from Linux's socket tables, procOwner.ts), and can
 *   hold that replica's refresh grants, before the IdP sees them or after it answered, until the
 *   orchestrator has killed the replica.
 * - It keeps the books of every session's chain of refresh tokens: which token the IdP ever received twice,
 *   each invalid_grant's cause, how many grants each access-token expiry took.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Owners } from './procOwner';
import { emit, rpcServer, type HoldPhase, type IdpFault, type IdpStats, type KillReport } from './protocol';

export interface ProxyOptions {
  /** the issuer's port */
  port: number;
  /** where the IdP itself listens */
  internalPort: number;
  accessTokenTtl: number;
}

const o = JSON.parse(process.argv[2] ?? '{}') as ProxyOptions;

// ---------- the books ----------

interface Chain {
  id: number;
  sub: string;
  /** when the last successful grant's request arrived, its access token's life in seconds, who asked */
  last?: { at: number; life: number; pid: number | undefined };
  /** grants since the last due one (a second grant for one expiry makes this 2) */
  sinceDue: number;
  revokedAt?: number;
  gatewayRevokedAt?: number;
  reusedAt?: number;
}
interface RtState {
  chain: Chain;
  /** each time the IdP received it: from which replica, when, and what it answered */
  forwards: Array<{ pid: number | undefined; at: number; status?: number | string }>;
  redeemed: boolean;
  /** the rotation this token was given never reached the replica: one reuse of it follows (physics at a kill) */
  exposed: boolean;
  exposedBy?: 'kill' | 'answer lost';
  /** which pid got the 200 that redeemed it, and when */
  deliveredTo?: number;
  deliveredAt?: number;
}

let chains = 0;
const tokens = new Map<string, RtState>();
const subs = new Map<string, Chain[]>();
const stats: IdpStats = {
  tokenRequests: {},
  logins: 0,
  refresh: {
    attempts: 0,
    forwarded: 0,
    ok: 0,
    initial: 0,
    due: 0,
    atOnce: 0,
    failedBeforeIdp: {},
    idpErrors: {},
    invalidGrant: { revokedOnPurpose: 0, afterGatewayRevoked: 0, afterReuse: 0, killPhysics: 0, unexplained: 0 },
    sentTwice: { killPhysics: 0, other: 0 },
    lostRotations: 0,
    maxGrantsPerExpiry: 0,
    early: {},
    earlyAt: [],
  },
  revocationRequests: 0,
  kills: [],
  exposures: [],
  reuses: [],
  anomalies: [],
  faultAnswers: {},
};
const bump = (rec: Record<string, number>, k: string, n = 1) => (rec[k] = (rec[k] ?? 0) + n);
const anomaly = (s: string) => {
  if (stats.anomalies.length < 200) stats.anomalies.push(`${new Date().toISOString()} ${s}`);
};

function payloadOf(jwt: string | undefined): Record<string, unknown> | undefined {
  const part = jwt?.split('.')[1];
  if (!part) return undefined;
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function newChain(sub: string): Chain {
  const chain: Chain = { id: ++chains, sub, sinceDue: 0 };
  let list = subs.get(sub);
  if (!list) subs.set(sub, (list = []));
  list.push(chain);
  if (list.length > 20) list.shift();
  return chain;
}

/**
 * A grant this soon after the one before it in the same chain is a second grant for one expiry: two
 * refreshers racing (the exactly-once rule broken). Anything later is a refresh of its own.
 */
const AT_ONCE_MS = 1000;
/**
 * How much earlier than its nominal refresh point (half the token's life after the previous grant reached the
 * proxy) a refresh may come without a remark: the gateway counts a token's life from when it sent the
 * request, which may be a little before it reached the proxy, and a JWT's whole-second `exp` may shorten the
 * life by up to a second. Earlier ones are listed, with the replicas' event-loop delay at the time.
 */
const EARLY_TOLERANCE_MS = 1500;

/** A refresh grant answered 200 at `at` (when its request arrived): the first for the API, due, or a second one. */
function countGrant(chain: Chain, at: number, accessToken: string | undefined, pid: number | undefined): void {
  const p = payloadOf(accessToken);
  const life = typeof p?.exp === 'number' && typeof p.iat === 'number' ? p.exp - p.iat : o.accessTokenTtl;
  const r = stats.refresh;
  if (!chain.last) {
    r.initial++;
  } else if (at - chain.last.at < AT_ONCE_MS) {
    r.atOnce++;
    chain.sinceDue++;
    anomaly(
      `second grant for one expiry: sub ${chain.sub}, ${at - chain.last.at} ms after the one pid ${chain.last.pid} got; now pid ${pid}`,
    );
  } else {
    r.due++;
    chain.sinceDue = 1;
    // The gateway refreshes at half the token's life (its skew, capped at half the life).
    const early = chain.last.at + (chain.last.life / 2) * 1000 - at;
    if (early > 0)
      bump(
        r.early,
        early <= 500 ? 'up to 0.5 s' : early <= 1000 ? '0.5 to 1 s' : early <= EARLY_TOLERANCE_MS ? '1 to 1.5 s' : 'more than 1.5 s',
      );
    if (early > EARLY_TOLERANCE_MS) {
      r.earlyAt.push(at);
      anomaly(
        `refresh ${(early / 1000).toFixed(2)} s before its point: sub ${chain.sub}, the token pid ${chain.last.pid} got ${((at - chain.last.at) / 1000).toFixed(2)} s before; now pid ${pid}`,
      );
    }
  }
  r.maxGrantsPerExpiry = Math.max(r.maxGrantsPerExpiry, chain.sinceDue);
  chain.last = { at, life, pid };
}

/** The IdP's receipts of a token, for a finding: `pid@-1.23s:200` each. */
const receipts = (st: RtState, now: number) =>
  st.forwards.map((f) => `pid ${f.pid}@${((f.at - now) / 1000).toFixed(2)}s:${f.status ?? 'pending'}`).join(', ');

// ---------- replicas, holds, kills ----------

let replicaPids: number[] = [];
let armed: { pid: number; phase: HoldPhase } | undefined;
/** held refresh grants, by pid: each resolves when released */
const holds = new Map<number, Set<() => void>>();
/** refresh grants under way, by pid (arrival to answer), and answers delivered, by pid */
const underWay = new Map<number, Set<string>>();
const delivered = new Map<number, Array<{ rt: string; at: number }>>();

function hold(pid: number): Promise<void> {
  let set = holds.get(pid);
  if (!set) holds.set(pid, (set = new Set()));
  const first = set.size === 0;
  const released = new Promise<void>((resolve) => set.add(resolve));
  if (first) emit('held', { pid });
  return released;
}
function release(pid: number): void {
  for (const r of holds.get(pid) ?? []) r();
  holds.delete(pid);
}

const owners = new Owners(o.port, () => replicaPids);
type OwnedSocket = net.Socket & { owner?: Promise<number | undefined> };

/** Killed and not yet reaped (a zombie), or gone. */
function isDead(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/** Kill reports by pid, kept up to date as the killed replica's last grants end (some arrive after it died). */
const killed = new Map<number, KillReport>();
/**
 * The last kill: a connection whose owner could not be found (opened by the victim just before it died, its
 * request read after) and ending within seconds of it belongs to it.
 */
let lastKill: { report: KillReport; at: number } | undefined;
const reportFor = (pid: number | undefined): KillReport | undefined =>
  pid !== undefined ? killed.get(pid) : lastKill && Date.now() - lastKill.at < 5000 ? lastKill.report : undefined;

/**
 * The IdP rotated this token and the replica that asked never got the answer: its session's next refresh
 * sends the old token, one reuse. Physics when the replica was killed; anything else is a finding.
 */
function expose(st: RtState | undefined, pid: number | undefined): void {
  if (!st || st.exposed) return;
  st.exposed = true;
  const cause = reportFor(pid) || (pid !== undefined && isDead(pid)) ? 'kill' : 'answer lost';
  st.exposedBy = cause;
  stats.exposures.push({ sub: st.chain.sub, at: Date.now(), cause });
  if (cause !== 'kill') anomaly(`rotation of sub ${st.chain.sub} lost: pid ${pid} went away before the answer`);
}

// ---------- the proxy ----------

let fault: IdpFault = { kind: 'none' };
const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}
function forward(internalPort: number, req: http.IncomingMessage, body: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const up = http.request(
      { host: '127.0.0.1', port: internalPort, method: req.method, path: req.url, headers: req.headers, agent: upstreamAgent },
      (res) => {
        readBody(res).then((b) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: b }), reject);
      },
    );
    up.once('error', reject);
    up.end(body);
  });
}

function send(res: http.ServerResponse, a: Answer): void {
  const headers = { ...a.headers };
  delete headers['transfer-encoding'];
  delete headers.connection;
  headers['content-length'] = String(a.body.length);
  res.writeHead(a.status, headers);
  res.end(a.body);
}

// Not `req.destroyed`: a request whose body was read is destroyed, its connection is not.
const gone = (req: http.IncomingMessage) => req.socket.destroyed;

async function handle(internalPort: number, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const isToken = req.method === 'POST' && url.split('?')[0] === '/token';
  const isRevocation = req.method === 'POST' && url.split('?')[0] === '/token/revocation';
  const body = await readBody(req);
  const form = isToken || isRevocation ? new URLSearchParams(body.toString('utf8')) : undefined;
  const grant = isToken ? (form?.get('grant_type') ?? '') : undefined;
  const rt = grant === 'refresh_token' ? (form?.get('refresh_token') ?? '') : undefined;
  const arrived = Date.now();
  if (grant) bump(stats.tokenRequests, grant);
  if (rt !== undefined) stats.refresh.attempts++;

  const f = fault;
  if (f.kind === 'reset' || f.kind === 'down') {
    bump(stats.faultAnswers, f.kind);
    if (rt !== undefined) bump(stats.refresh.failedBeforeIdp, f.kind);
    req.socket.resetAndDestroy();
    return;
  }
  if (f.kind === '503') {
    bump(stats.faultAnswers, '503');
    if (rt !== undefined) bump(stats.refresh.failedBeforeIdp, '503');
    const b = Buffer.from(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'soak: 503 burst' }));
    send(res, { status: 503, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: b });
    return;
  }
  if (f.kind === 'slow') {
    await sleep(f.ms);
    if (gone(req)) {
      if (rt !== undefined) bump(stats.refresh.failedBeforeIdp, 'client gone while the IdP was slow');
      return;
    }
  }

  if (rt === undefined) {
    // Not a refresh grant: forwarded as it is (the code exchange and revocations are read on the way).
    const a = await forward(internalPort, req, body);
    if (grant === 'authorization_code' && a.status === 200) onCodeExchange(a);
    if (isRevocation && form) onRevocation(form);
    if (!gone(req)) send(res, a);
    return;
  }

  // A refresh grant: which replica (looked up when it connected), held if it is the one about to be killed.
  const pid = await (req.socket as OwnedSocket).owner;
  const dead = () => pid !== undefined && killed.has(pid);
  const late = reportFor(pid);
  if (late) {
    // Written by the replica before it died, read here after: it was in flight at the kill.
    late.inFlight++;
    late.arrivedAfterTheKill++;
  }
  let mine = pid !== undefined ? underWay.get(pid) : undefined;
  if (pid !== undefined && !mine) underWay.set(pid, (mine = new Set()));
  mine?.add(rt);
  try {
    if (pid !== undefined && armed?.pid === pid && armed.phase === 'before') {
      await hold(pid);
      if (gone(req) || dead()) {
        bump(stats.refresh.failedBeforeIdp, 'dropped at a kill (never reached the IdP)');
        const report = reportFor(pid);
        if (report) report.droppedBeforeIdp++;
        return;
      }
    }
    if (gone(req)) {
      bump(stats.refresh.failedBeforeIdp, 'client gone before it reached the IdP');
      return;
    }
    const st = tokens.get(rt);
    const receipt: RtState['forwards'][number] = { pid, at: Date.now() };
    if (st) {
      if (st.forwards.length > 0) {
        if (st.exposedBy === 'kill') stats.refresh.sentTwice.killPhysics++;
        else {
          stats.refresh.sentTwice.other++;
          anomaly(`refresh token of sub ${st.chain.sub} sent to the IdP again by pid ${pid}; before: ${receipts(st, receipt.at)}`);
        }
      }
      st.forwards.push(receipt);
    } else {
      anomaly(`refresh token unknown to the books (pid ${pid})`);
    }
    stats.refresh.forwarded++;
    const a = await forward(internalPort, req, body).catch((err: unknown) => {
      receipt.status = `error ${(err as Error).message}`;
      throw err;
    });
    receipt.status = a.status;
    onRefreshAnswer(rt, a, arrived, pid);
    if (pid !== undefined && armed?.pid === pid && armed.phase === 'after') await hold(pid);
    if (gone(req) || dead()) {
      if (a.status === 200) {
        // The IdP rotated the token, and the replica that asked is gone: it took the new one with it.
        stats.refresh.lostRotations++;
        const report = reportFor(pid);
        if (report) report.lostRotations++;
        expose(tokens.get(rt), pid);
      }
      return;
    }
    send(res, a);
    if (a.status === 200 && pid !== undefined) {
      const s = tokens.get(rt);
      if (s) {
        s.deliveredTo = pid;
        s.deliveredAt = Date.now();
      }
      let list = delivered.get(pid);
      if (!list) delivered.set(pid, (list = []));
      list.push({ rt, at: Date.now() });
      if (list.length > 200) list.splice(0, list.length - 200);
    }
  } finally {
    mine?.delete(rt);
  }
}

function onCodeExchange(a: Answer): void {
  stats.logins++;
  const body = JSON.parse(a.body.toString('utf8')) as { refresh_token?: string; id_token?: string };
  const sub = payloadOf(body.id_token)?.sub;
  if (typeof sub !== 'string' || !body.refresh_token) {
    anomaly('code exchange without sub or refresh token');
    return;
  }
  tokens.set(body.refresh_token, { chain: newChain(sub), forwards: [], redeemed: false, exposed: false });
}

function onRevocation(form: URLSearchParams): void {
  stats.revocationRequests++;
  const st = tokens.get(form.get('token') ?? '');
  if (st) st.chain.gatewayRevokedAt ??= Date.now();
}

function onRefreshAnswer(rt: string, a: Answer, arrived: number, pid: number | undefined): void {
  const st = tokens.get(rt);
  let body: { error?: string; refresh_token?: string; access_token?: string } = {};
  try {
    body = JSON.parse(a.body.toString('utf8')) as typeof body;
  } catch {
    // not JSON: counted by status below
  }
  if (a.status === 200) {
    stats.refresh.ok++;
    if (!st) return;
    const wasRedeemed = st.redeemed;
    st.redeemed = true;
    if (wasRedeemed) anomaly(`the IdP accepted a refresh token twice (sub ${st.chain.sub})`);
    if (body.refresh_token) tokens.set(body.refresh_token, { chain: st.chain, forwards: [], redeemed: false, exposed: false });
    countGrant(st.chain, arrived, body.access_token, pid);
    return;
  }
  const error = body.error ?? `status ${a.status}`;
  bump(stats.refresh.idpErrors, error);
  if (error !== 'invalid_grant' || !st) return;
  const ig = stats.refresh.invalidGrant;
  const c = st.chain;
  if (st.redeemed) {
    // oidc-provider's reuse detection: the token was redeemed before, the grant is now revoked.
    c.reusedAt ??= Date.now();
    stats.reuses.push({ sub: c.sub, at: Date.now(), pid, cause: st.exposedBy ?? 'none' });
    if (st.exposedBy === 'kill') ig.killPhysics++;
    else {
      ig.unexplained++;
      anomaly(`refresh token reuse: sub ${c.sub}, delivered to pid ${st.deliveredTo}; receipts: ${receipts(st, Date.now())}`);
    }
  } else if (c.revokedAt !== undefined) ig.revokedOnPurpose++;
  else if (c.gatewayRevokedAt !== undefined) ig.afterGatewayRevoked++;
  else if (c.reusedAt !== undefined) ig.afterReuse++;
  else {
    ig.unexplained++;
    anomaly(`invalid_grant without a cause: sub ${c.sub}`);
  }
}

const lag = monitorEventLoopDelay({ resolution: 20 });
lag.enable();

async function main(): Promise<void> {
  const internalPort = o.internalPort;
  const sockets = new Set<net.Socket>();
  const proxy = http.createServer((req, res) => {
    handle(internalPort, req, res).catch((err: unknown) => {
      anomaly(`proxy error: ${(err as Error).message}`);
      if (!res.headersSent && !gone(req)) res.writeHead(502).end();
      else res.destroy();
    });
  });
  proxy.keepAliveTimeout = 60_000;
  proxy.on('connection', (s: OwnedSocket) => {
    sockets.add(s);
    const port = s.remotePort;
    s.owner = port ? owners.of(port) : Promise.resolve(undefined);
    s.once('close', () => {
      sockets.delete(s);
      if (port) owners.forget(port);
    });
  });
  const listen = () => new Promise<void>((resolve) => proxy.listen(o.port, '127.0.0.1', resolve));
  await listen();

  rpcServer({
    replicas: (pids: number[]) => {
      replicaPids = pids;
    },
    fault: async (next: IdpFault) => {
      const was = fault;
      fault = next;
      if (next.kind === 'down' && was.kind !== 'down') {
        await new Promise<void>((resolve) => {
          proxy.close(() => resolve());
          for (const s of sockets) s.destroy();
        });
      } else if (was.kind === 'down' && next.kind !== 'down') {
        await listen();
      }
    },
    arm: ({ pid, phase }: { pid: number; phase: HoldPhase }) => {
      armed = { pid, phase };
    },
    disarm: () => {
      const pid = armed?.pid;
      armed = undefined;
      if (pid !== undefined) release(pid);
    },
    /** The orchestrator is about to SIGKILL `pid`: from now on nothing more reaches it. */
    killing: (pid: number) => {
      const now = Date.now();
      const recent = (delivered.get(pid) ?? []).filter((d) => now - d.at < 1000);
      const report: KillReport = {
        pid,
        inFlight: (underWay.get(pid)?.size ?? 0) + recent.length,
        droppedBeforeIdp: 0,
        lostRotations: 0,
        answeredJustBefore: recent.length,
        arrivedAfterTheKill: 0,
      };
      killed.set(pid, report);
      lastKill = { report, at: now };
      stats.kills.push(report);
      // A token answered just before the kill may not have been stored: at most one reuse of it is physics.
      for (const d of recent) expose(tokens.get(d.rt), pid);
    },
    /** `pid` is dead: its held grants end (a held answer is a lost rotation); resolves with the kill's report. */
    killed: async (pid: number): Promise<KillReport | undefined> => {
      armed = undefined;
      // Let the kernel's close of the dead process's sockets reach us, then let its held grants end.
      await sleep(300);
      release(pid);
      const until = Date.now() + 5000;
      while ((underWay.get(pid)?.size ?? 0) > 0 && Date.now() < until) await sleep(20);
      return killed.get(pid);
    },
    /** The orchestrator is about to revoke `sub` at the IdP: its next invalid_grant is deliberate. */
    revoking: (sub: string) => {
      const now = Date.now();
      for (const c of subs.get(sub) ?? []) c.revokedAt ??= now;
    },
    stats: () => ({ ...stats, lagMs: { p99: Math.round(lag.percentile(99) / 1e6), max: Math.round(lag.max / 1e6) } }),
    stop: () => {
      proxy.close();
      for (const s of sockets) s.destroy();
      setTimeout(() => process.exit(0), 100).unref();
    },
  });
  process.send?.({ ready: o.port });
}

process.on('disconnect', () => process.exit(0));
main().catch((err: unknown) => {
  process.stderr.write(`soak idp proxy: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
