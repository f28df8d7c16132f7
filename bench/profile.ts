/**
 * Reads a V8 .cpuprofile (written by `node --cpu-prof`) and says where the time went, three ways:
 *  - self time per function (what the CPU was literally running);
 *  - self time charged to the nearest package or src/ file on the stack (Node internals and native code
 *    count for whoever called them: a `writev` under pino is pino's, under http-proxy it is the proxy's);
 *  - time under each of Gatehouse's own functions (the innermost one on the stack: libraries and Node
 *    internals it calls included), to see which step of the pipeline costs most.
 * No dependency: the format is a tree of call frames plus samples with the time between them.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface HotSpot {
  name: string;
  /** `src/api/headers.js:42`, `express/lib/router/index.js:10`, `node:internal/...`, or '' (native). */
  location: string;
  /** The file of src/, the package or the runtime part it belongs to. */
  where: string;
  ms: number;
  /** Share of the busy time (everything but idle). */
  percent: number;
}

export interface ProfileSummary {
  file: string;
  busyMs: number;
  idleMs: number;
  /** Top functions by self time. */
  functions: HotSpot[];
  /** Self time per package or src/ file, internals charged to their caller. */
  places: Array<{ where: string; ms: number; percent: number }>;
  /** Time under each of Gatehouse's own functions, callees included but not deeper Gatehouse functions. */
  ownInclusive: HotSpot[];
}

const SPECIAL = new Set(['(garbage collector)', '(program)', '(idle)', '(root)']);

/** `file:///.../node_modules/express/lib/x.js` → `express/lib/x.js`; `file:///.../dist/src/a.js` → `src/a.js`. */
function place(frame: CallFrame): { location: string; where: string; attributable: boolean } {
  // Stacks with no package or src/ frame at all end at the root: Node's own socket reads, HTTP parsing, writev.
  if (frame.functionName === '(root)') return { location: '', where: 'Node core only (socket I/O, HTTP parser)', attributable: true };
  if (SPECIAL.has(frame.functionName)) return { location: '', where: frame.functionName, attributable: true };
  const url = frame.url;
  if (url === '') return { location: '', where: 'V8/native', attributable: false };
  const line = `:${frame.lineNumber + 1}`;
  if (url.startsWith('node:')) return { location: url + line, where: 'node internals', attributable: false };
  const path = url.replace(/^file:\/\//, '');
  const mod = /.*\/node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(path);
  if (mod) return { location: `${mod[1]}/${mod[2]}${line}`, where: mod[1]!, attributable: true };
  const own = /\/dist\/((?:src|bench|scripts)\/.*)$/.exec(path);
  if (own) return { location: own[1]! + line, where: own[1]!, attributable: true };
  return { location: path + line, where: path, attributable: true };
}

export function summarizeProfile(file: string, top = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Sample i lasts until sample i+1 (timeDeltas[i+1]); the last one until the profile's end.
  const selfUs = new Map<number, number>();
  let t = p.startTime;
  const stamps = p.timeDeltas.map((d) => (t += d));
  p.samples.forEach((id, i) => {
    const dur = (i + 1 < stamps.length ? stamps[i + 1]! : p.endTime) - stamps[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dur));
  });

  // The package or src/ file a node's time is charged to: its own, or its nearest attributable caller's.
  const owner = new Map<number, string>();
  const ownerOf = (id: number): string => {
    const known = owner.get(id);
    if (known !== undefined) return known;
    const pl = place(byId.get(id)!.callFrame);
    const up = parent.get(id);
    const o = pl.attributable ? pl.where : up === undefined ? pl.where : ownerOf(up);
    owner.set(id, o);
    return o;
  };

  const fns = new Map<string, HotSpot & { us: number }>();
  const places = new Map<string, number>();
  const inclusive = new Map<string, HotSpot & { us: number }>();
  let idleUs = 0;
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    busyUs += us;
    const pl = place(frame);
    const name = frame.functionName || '(anonymous)';
    const key = `${name}@${pl.location}`;
    const f = fns.get(key) ?? { name, location: pl.location, where: pl.where, ms: 0, percent: 0, us: 0 };
    f.us += us;
    fns.set(key, f);
    const o = ownerOf(id);
    places.set(o, (places.get(o) ?? 0) + us);
    // The innermost of Gatehouse's own functions on this stack gets the sample (a partition of the busy time:
    // a middleware that calls next() does not also count the middlewares after it).
    let k = '(no Gatehouse function on the stack)';
    let spot: HotSpot = { name: k, location: '', where: '', ms: 0, percent: 0 };
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const cf = byId.get(n)!.callFrame;
      const pn = place(cf);
      if (!pn.where.startsWith('src/')) continue;
      k = `${cf.functionName || '(anonymous)'}@${pn.location}`;
      spot = { name: cf.functionName || '(anonymous)', location: pn.location, where: pn.where, ms: 0, percent: 0 };
      break;
    }
    const e = inclusive.get(k) ?? { ...spot, us: 0 };
    e.us += us;
    inclusive.set(k, e);
  }
  const finish = (list: Iterable<HotSpot & { us: number }>): HotSpot[] =>
    [...list]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map(({ us, ...f }) => ({ ...f, ms: Math.round(us / 100) / 10, percent: Math.round((1000 * us) / busyUs) / 10 }));
  return {
    file,
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    functions: finish(fns.values()),
    places: [...places]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([where, us]) => ({ where, ms: Math.round(us / 100) / 10, percent: Math.round((1000 * us) / busyUs) / 10 })),
    ownInclusive: finish(inclusive.values()),
  };
}

// `node dist/bench/profile.js <file.cpuprofile> [top]`: the same summary for any profile.
if (require.main === module && process.argv[2]) {
  process.stdout.write(`${JSON.stringify(summarizeProfile(process.argv[2], Number(process.argv[3] ?? 15)), null, 2)}\n`);
}
