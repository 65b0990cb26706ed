// ui/line-chart.js — a small inline SVG line chart (no chart library): one line per series over
// a shared time axis, y from 0 to a rounded maximum, with the unit and the latest value of each
// series in the caption. Input: {title, unit, series: [{name, points: [{t (ms), v (number|null)}]}]}.
// A null value breaks the line. Used by the admin console for a call's quality reports.

import { el } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 320;
const HEIGHT = 90;
const LEFT = 40;
const RIGHT = 6;
const TOP = 6;
const BOTTOM = 14;
const COLOURS = ['lc-a', 'lc-b', 'lc-c', 'lc-d'];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

/** 1, 2 or 5 × a power of ten, at least `v`. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((n) => n >= v);
}

function secs(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export function lineChart({ title, unit, series, testid }) {
  const all = series.flatMap((s) => s.points);
  const times = all.map((p) => p.t);
  const values = all.map((p) => p.v).filter((v) => typeof v === 'number' && Number.isFinite(v));
  const start = Math.min(...times);
  const end = Math.max(...times);
  const span = end > start ? end - start : 1;
  const top = niceCeil(Math.max(0, ...values));
  const x = (t) => LEFT + ((t - start) / span) * (WIDTH - LEFT - RIGHT);
  const y = (v) => TOP + (HEIGHT - TOP - BOTTOM) * (1 - v / top);
  const lines = series.map((s, i) => {
    let d = '';
    let pen = 'M';
    for (const p of s.points) {
      if (typeof p.v !== 'number' || !Number.isFinite(p.v)) { pen = 'M'; continue; }
      d += `${pen}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      pen = 'L';
    }
    // A single sample still shows, as a dot.
    const dots = s.points.length === 1 && typeof s.points[0].v === 'number'
      ? [svg('circle', { cx: x(s.points[0].t).toFixed(1), cy: y(s.points[0].v).toFixed(1), r: 2, class: `lc-dot ${COLOURS[i % COLOURS.length]}` })]
      : [];
    return [svg('path', { d, class: `lc-line ${COLOURS[i % COLOURS.length]}`, 'data-series': s.name }), ...dots];
  }).flat();
  const last = (s) => [...s.points].reverse().find((p) => typeof p.v === 'number');
  const summary = `${title}: ${series.map((s) => { const l = last(s); return `${s.name} ${l ? `${+l.v.toFixed(2)} ${unit}` : 'no data'}`; }).join(', ')}`;
  const chart = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: 'img', 'aria-label': summary,
    class: 'line-chart', 'data-testid': testid || 'line-chart', 'data-points': all.length,
  },
  svg('title', {}, summary),
  svg('line', { x1: LEFT, y1: TOP, x2: LEFT, y2: HEIGHT - BOTTOM, class: 'qc-axis' }),
  svg('line', { x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH - RIGHT, y2: HEIGHT - BOTTOM, class: 'qc-axis' }),
  svg('text', { x: LEFT - 3, y: TOP + 6, 'text-anchor': 'end', class: 'qc-label' }, String(top)),
  svg('text', { x: LEFT - 3, y: HEIGHT - BOTTOM, 'text-anchor': 'end', class: 'qc-label' }, '0'),
  svg('text', { x: LEFT, y: HEIGHT - 2, class: 'qc-label' }, '0:00'),
  svg('text', { x: WIDTH - RIGHT, y: HEIGHT - 2, 'text-anchor': 'end', class: 'qc-label' }, secs(end - start)),
  ...lines);
  const legend = el('ul', { class: 'qc-legend' }, ...series.map((s, i) => el('li', {}, el('i', { class: `lc-key ${COLOURS[i % COLOURS.length]}`, 'aria-hidden': 'true' }), s.name)));
  return el('figure', { class: 'lc' }, el('figcaption', {}, el('b', { text: title }), ` (${unit})`), chart, legend);
}
