/**
 * The soak's picture, an SVG drawn by hand (no dependency): answers per second by status over the run, the
 * faults shaded and named; under it the gateways' memory and Redis' keys and memory.
 */
import { CATEGORIES, type Category, type Results } from './report';
import { FAULTS } from './schedule';

const COLORS: Record<Category, string> = {
  ok: '#43a047',
  expected401: '#90a4ae',
  s502: '#fb8c00',
  s503: '#fdd835',
  s504: '#8e24aa',
  unexpected401: '#e53935',
  bad: '#000000',
};
const NAMES: Record<Category, string> = {
  ok: '200',
  expected401: '401 expected (logout, revocation, lifetime, data loss, kill)',
  s502: '502',
  s503: '503',
  s504: '504',
  unexpected401: '401 unexpected',
  bad: '500 / other',
};
const REPLICA_COLORS = ['#1e88e5', '#00897b', '#6d4c41'];

const W = 1100;
const LEFT = 60;
const RIGHT = 70;
const PLOT = W - LEFT - RIGHT;
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f1 = (x: number) => (Math.round(x * 10) / 10).toString();

function niceMax(x: number): number {
  if (x <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export function renderSvg(r: Results): string {
  const seconds = Math.max(1, r.perSecond.length);
  const x = (t: number) => LEFT + (t / seconds) * PLOT;
  const out: string[] = [];
  const labelRows = 4;
  const top = 40 + labelRows * 14;
  const h1 = 300;
  const gap = 50;
  const h2 = 140;
  const h3 = 110;
  const y2top = top + h1 + gap;
  const y3top = y2top + h2 + gap;
  const legendTop = y3top + h3 + 40;
  const H = legendTop + 60;
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(
    `<text x="${LEFT}" y="18" font-size="14" font-weight="bold">Gatehouse soak, ${esc(r.startedAt.slice(0, 10))}: answers per second by status, faults shaded</text>`,
  );

  // Fault windows, across all panels, named above the first.
  r.events.forEach((e, i) => {
    const x0 = x(e.start / 1000);
    const x1 = Math.max(x0 + 1.5, x(e.end / 1000));
    out.push(`<rect x="${f1(x0)}" y="${top}" width="${f1(x1 - x0)}" height="${y3top + h3 - top}" fill="#ef5350" fill-opacity="0.13"/>`);
    const row = i % labelRows;
    out.push(`<text x="${f1(x0)}" y="${36 + row * 14}" fill="#b71c1c">${esc(FAULTS[e.kind].short)}</text>`);
    out.push(
      `<line x1="${f1(x0)}" x2="${f1(x0)}" y1="${39 + row * 14}" y2="${top}" stroke="#b71c1c" stroke-width="0.5" stroke-dasharray="2,2"/>`,
    );
  });

  // Panel 1: stacked answers per second.
  const totals = r.perSecond.map((s) => CATEGORIES.reduce((a, c) => a + s[c], 0));
  const yMax = niceMax(Math.max(...totals, 1));
  const y1 = (v: number) => top + h1 - (v / yMax) * h1;
  axes(out, top, h1, yMax, 'answers/s', (v) => String(v));
  const base = new Array<number>(seconds).fill(0);
  for (const c of CATEGORIES) {
    const upper = r.perSecond.map((s, i) => base[i]! + s[c]);
    if (upper.every((u, i) => u === base[i])) continue;
    const pts: string[] = [];
    r.perSecond.forEach((_, i) => pts.push(`${f1(x(i))},${f1(y1(upper[i]!))}`, `${f1(x(i + 1))},${f1(y1(upper[i]!))}`));
    for (let i = seconds - 1; i >= 0; i--) pts.push(`${f1(x(i + 1))},${f1(y1(base[i]!))}`, `${f1(x(i))},${f1(y1(base[i]!))}`);
    out.push(`<polygon points="${pts.join(' ')}" fill="${COLORS[c]}" stroke="none"/>`);
    upper.forEach((u, i) => (base[i] = u));
  }
  timeAxis(out, top + h1, seconds, x);

  // Panel 2: gateway memory.
  const mem = r.memory.series;
  const memMax = niceMax(Math.max(1, ...mem.flatMap((s) => s.gateways.map((g) => (g.rss ?? 0) / 2 ** 20))));
  const yM = (v: number) => y2top + h2 - (v / memMax) * h2;
  out.push(
    `<text x="${LEFT}" y="${y2top - 8}" font-weight="bold">gateway memory, MB: RSS of each replica (a gap: killed), V8 heap in use dashed</text>`,
  );
  axes(out, y2top, h2, memMax, 'MB', (v) => String(v));
  const names = [...new Set(mem.flatMap((s) => s.gateways.map((g) => g.name)))];
  names.forEach((name, i) => {
    for (const [key, dash] of [
      ['rss', ''],
      ['heap', ' stroke-dasharray="4,3"'],
    ] as const) {
      const segs: string[][] = [[]];
      for (const s of mem) {
        const g = s.gateways.find((gg) => gg.name === name);
        const v = g?.[key];
        if (v === undefined) {
          if (segs[segs.length - 1]!.length) segs.push([]);
          continue;
        }
        segs[segs.length - 1]!.push(`${f1(x(s.t / 1000))},${f1(yM(v / 2 ** 20))}`);
      }
      for (const seg of segs)
        if (seg.length > 1)
          out.push(`<polyline points="${seg.join(' ')}" fill="none" stroke="${REPLICA_COLORS[i % 3]}" stroke-width="1.5"${dash}/>`);
    }
    out.push(`<text x="${W - RIGHT + 6}" y="${y2top + 14 + i * 14}" fill="${REPLICA_COLORS[i % 3]}">${esc(name)}</text>`);
  });
  timeAxis(out, y2top + h2, seconds, x);

  // Panel 3: Redis keys and memory.
  const red = r.redis.series;
  const kMax = niceMax(Math.max(1, ...red.map((s) => s.keys)));
  const uMax = niceMax(Math.max(1, ...red.map((s) => s.usedMemory / 2 ** 20)));
  const yK = (v: number) => y3top + h3 - (v / kMax) * h3;
  const yU = (v: number) => y3top + h3 - (v / uMax) * h3;
  out.push(`<text x="${LEFT}" y="${y3top - 8}" font-weight="bold">Redis: keys (left axis), used memory in MB (dashed, right axis)</text>`);
  axes(out, y3top, h3, kMax, 'keys', (v) => String(v));
  for (let i = 0; i <= 2; i++) {
    const v = (uMax * i) / 2;
    out.push(`<text x="${W - RIGHT + 6}" y="${f1(yU(v) + 4)}">${f1(v)}</text>`);
  }
  if (red.length > 1) {
    out.push(
      `<polyline points="${red.map((s) => `${f1(x(s.t / 1000))},${f1(yK(s.keys))}`).join(' ')}" fill="none" stroke="#3949ab" stroke-width="1.5"/>`,
    );
    out.push(
      `<polyline points="${red.map((s) => `${f1(x(s.t / 1000))},${f1(yU(s.usedMemory / 2 ** 20))}`).join(' ')}" fill="none" stroke="#3949ab" stroke-width="1.5" stroke-dasharray="4,3"/>`,
    );
  }
  timeAxis(out, y3top + h3, seconds, x);
  out.push(`<text x="${LEFT + PLOT / 2}" y="${y3top + h3 + 30}" text-anchor="middle">seconds since the load began</text>`);

  // Legend.
  let lx = LEFT;
  for (const c of CATEGORIES) {
    const label = NAMES[c];
    out.push(`<rect x="${lx}" y="${legendTop}" width="12" height="12" fill="${COLORS[c]}"/>`);
    out.push(`<text x="${lx + 16}" y="${legendTop + 10}">${esc(label)}</text>`);
    lx += 26 + label.length * 6;
    if (lx > W - 200) lx = LEFT;
  }
  out.push(`<rect x="${LEFT}" y="${legendTop + 22}" width="12" height="12" fill="#ef5350" fill-opacity="0.3"/>`);
  out.push(
    `<text x="${LEFT + 16}" y="${legendTop + 32}">a fault (${esc(
      [...new Set(r.events.map((e) => FAULTS[e.kind].short))].join(', '),
    )}; details in the table)</text>`,
  );
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function axes(out: string[], top: number, h: number, max: number, unit: string, label: (v: number) => string): void {
  out.push(`<rect x="${LEFT}" y="${top}" width="${PLOT}" height="${h}" fill="none" stroke="#9e9e9e" stroke-width="0.5"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = top + h - (h * i) / 4;
    out.push(`<line x1="${LEFT}" x2="${LEFT + PLOT}" y1="${f1(y)}" y2="${f1(y)}" stroke="#e0e0e0" stroke-width="0.5"/>`);
    out.push(`<text x="${LEFT - 6}" y="${f1(y + 4)}" text-anchor="end">${esc(label(v))}</text>`);
  }
  out.push(`<text x="14" y="${f1(top + h / 2)}" transform="rotate(-90 14 ${f1(top + h / 2)})" text-anchor="middle">${esc(unit)}</text>`);
}

function timeAxis(out: string[], y: number, seconds: number, x: (t: number) => number): void {
  const step = seconds > 900 ? 120 : seconds > 300 ? 60 : seconds > 120 ? 30 : 10;
  for (let t = 0; t <= seconds; t += step) {
    out.push(`<line x1="${f1(x(t))}" x2="${f1(x(t))}" y1="${y}" y2="${y + 4}" stroke="#616161"/>`);
    out.push(`<text x="${f1(x(t))}" y="${y + 15}" text-anchor="middle">${t}</text>`);
  }
}
