// ui/quality-chart.js — what one participant of a room call received through the SFU, as a
// small inline SVG (no chart library): the server's bandwidth estimate over time as a line, and
// under it one band per received video track coloured by the simulcast layer it was sent
// (q/h/f, one encoding, or paused); the freeze total as text. Input: one entry of the analytics'
// `sfu` array with its `quality` samples ({at, estimateKbps, freezes, layers}, every 2 s).

import { el, duration } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const LEFT = 44; // room for the y labels and the band names
const RIGHT = 6;
const TOP = 8;
const PLOT_HEIGHT = 34;
const BAND_HEIGHT = 7;
const BAND_GAP = 2;
const TIME_ROW = 12;
/** How long the server's samples are apart (the last one is drawn this long). */
const SAMPLE_MS = 2000;
const STATES = [['f', 'full'], ['h', 'half'], ['q', 'quarter'], ['single', 'one encoding'], ['paused', 'paused']];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

const label = (x, y, text, anchor = 'start') => svg('text', { x, y, 'text-anchor': anchor, class: 'qc-label' }, text);

/** 1, 2 or 5 × a power of ten, at least `v`. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((n) => n >= v);
}

function layerState(entry) {
  if (entry.paused) return 'paused';
  return ['f', 'h', 'q'].includes(entry.layer) ? entry.layer : 'single';
}

/** The received video tracks, in the order they first appear: [{key, fromPeerId, mid}]. */
function tracksOf(samples) {
  const seen = new Map();
  for (const s of samples) {
    for (const l of s.layers || []) {
      const key = `${l.fromPeerId} ${l.mid}`;
      if (!seen.has(key)) seen.set(key, { key, fromPeerId: l.fromPeerId, mid: l.mid });
    }
  }
  return [...seen.values()];
}

/** @param {{userId: string, peerId: string, quality: object[]}} participant  @param {(peerId: string) => string} nameOf */
export function qualityChart(participant, nameOf) {
  const samples = participant.quality;
  const times = samples.map((s) => Date.parse(s.at));
  const start = times[0];
  const step = times.length > 1 ? times[times.length - 1] - times[times.length - 2] : SAMPLE_MS;
  const end = times[times.length - 1] + (step > 0 ? step : SAMPLE_MS);
  const x = (t) => LEFT + ((t - start) / (end - start)) * (WIDTH - LEFT - RIGHT);
  const until = (i) => (i + 1 < times.length ? times[i + 1] : end);

  const estimates = samples.map((s) => s.estimateKbps).filter((v) => typeof v === 'number');
  const top = niceCeil(Math.max(0, ...estimates));
  const y = (kbps) => TOP + PLOT_HEIGHT - (kbps / top) * PLOT_HEIGHT;
  let d = '';
  let pen = 'M';
  samples.forEach((s, i) => {
    if (typeof s.estimateKbps !== 'number') { pen = 'M'; return; }
    d += `${pen}${x(times[i]).toFixed(1)},${y(s.estimateKbps).toFixed(1)}`;
    pen = 'L';
  });

  const tracks = tracksOf(samples);
  const bandsTop = TOP + PLOT_HEIGHT + 6;
  const height = bandsTop + tracks.length * (BAND_HEIGHT + BAND_GAP) + TIME_ROW;
  const bands = tracks.flatMap((track, row) => {
    const by = bandsTop + row * (BAND_HEIGHT + BAND_GAP);
    const runs = []; // [{state, from, to}] of consecutive samples alike
    samples.forEach((s, i) => {
      const entry = (s.layers || []).find((l) => `${l.fromPeerId} ${l.mid}` === track.key);
      const state = entry ? layerState(entry) : null;
      const last = runs[runs.length - 1];
      if (last && last.state === state && last.to === times[i]) last.to = until(i);
      else runs.push({ state, from: times[i], to: until(i) });
    });
    const sameSender = tracks.filter((t) => t.fromPeerId === track.fromPeerId).length > 1;
    const name = `${nameOf(track.fromPeerId)}${sameSender ? ` ${track.mid}` : ''}`.slice(0, 9);
    return [
      label(LEFT - 3, by + BAND_HEIGHT - 1, name, 'end'),
      ...runs.filter((r) => r.state).map((r) => svg('rect', {
        x: x(r.from).toFixed(1), y: by, width: Math.max(0.5, x(r.to) - x(r.from)).toFixed(1), height: BAND_HEIGHT, class: `qc-layer qc-${r.state}`,
      }, svg('title', {}, `${nameOf(track.fromPeerId)}: ${r.state} for ${duration((r.to - r.from) / 1000)}`))),
    ];
  });

  const freezes = Math.max(0, ...samples.map((s) => s.freezes || 0));
  const range = estimates.length ? `${Math.round(Math.min(...estimates))}–${Math.round(Math.max(...estimates))} kbit/s estimated` : 'no bandwidth estimate';
  const summary = `${participant.userId} received ${tracks.length} video track(s): ${range}, ${freezes} freeze(s)`;
  const chart = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: 'img', 'aria-label': summary,
    class: 'quality-chart', 'data-testid': 'sfu-quality-chart', 'data-peer': participant.peerId, 'data-samples': samples.length,
  },
  svg('title', {}, summary),
  svg('line', { x1: LEFT, y1: TOP, x2: LEFT, y2: TOP + PLOT_HEIGHT, class: 'qc-axis' }),
  svg('line', { x1: LEFT, y1: TOP + PLOT_HEIGHT, x2: WIDTH - RIGHT, y2: TOP + PLOT_HEIGHT, class: 'qc-axis' }),
  label(LEFT - 3, TOP + 6, String(top), 'end'),
  label(LEFT - 3, TOP + PLOT_HEIGHT, '0', 'end'),
  svg('path', { d, class: 'qc-estimate' }),
  ...bands,
  label(LEFT, height - 2, '0:00'),
  label(WIDTH - RIGHT, height - 2, duration((end - start) / 1000), 'end'));

  const legend = el('ul', { class: 'qc-legend' },
    el('li', {}, el('i', { class: 'qc-line', 'aria-hidden': 'true' }), 'estimated kbit/s'),
    ...STATES.map(([state, words]) => el('li', {}, el('i', { class: `qc-${state}`, 'aria-hidden': 'true' }), ['f', 'h', 'q'].includes(state) ? `${state} ${words}` : words)));
  return el('figure', { class: 'qc', dataset: { peer: participant.peerId } },
    el('figcaption', {}, el('b', { text: participant.userId }), ' received · ',
      el('span', { 'data-testid': 'sfu-freezes', text: `${freezes} freeze${freezes === 1 ? '' : 's'}` })),
    chart,
    legend);
}
