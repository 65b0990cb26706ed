// ui/history-view.js — the History tab: the signed-in user's calls from GET /calls/history
// (newest first, paged), and the analytics of one call from GET /calls/:id/analytics
// (duration, setup time, quality averages, relay usage, media timeline, and for room calls
// through the SFU a chart per participant of what it received, quality-chart.js).

import { api } from '../api.js';
import { $, el, duration, when } from './dom.js';
import { notify } from './notice.js';
import { qualityChart } from './quality-chart.js';

const PAGE = 20;

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '';
}

/** A timeline entry in words: "media: mic off, camera on" rather than raw JSON. */
function describeEvent(t) {
  const d = t.data || {};
  if (t.event === 'media') {
    const parts = [];
    if (d.audio !== undefined) parts.push(`mic ${d.audio ? 'on' : 'off'}`);
    if (d.video !== undefined) parts.push(`camera ${d.video ? 'on' : 'off'}`);
    if (d.screen) parts.push('sharing screen');
    return `media: ${parts.join(', ')}`;
  }
  if (t.event === 'camera-switched') return `switched camera${d.camera ? ` to ${d.camera}` : ''}`;
  const extra = Object.entries(d).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k} ${v}`).join(', ');
  return extra ? `${t.event} (${extra})` : t.event;
}

/** A heading and one chart per SFU participant with quality samples (none: nothing). */
function sfuCharts(sfu) {
  const names = new Map(sfu.map((p) => [p.peerId, p.userId]));
  const nameOf = (peerId) => names.get(peerId) || String(peerId).slice(0, 8);
  const charts = sfu.filter((p) => Array.isArray(p.quality) && p.quality.length).map((p) => qualityChart(p, nameOf));
  if (!charts.length) return [];
  return [el('h2', { class: 'small-title', text: 'Received through the server' }), el('div', { class: 'quality-charts' }, ...charts)];
}

export function initHistoryView(getMe) {
  let offset = 0;

  function other(c) {
    const me = getMe();
    if (c.roomName && !c.calleeId) return `Room “${c.roomName}”`;
    if (c.kind === 'room' || (c.roomId && !c.calleeId)) return c.roomName ? `Room “${c.roomName}”` : 'Room';
    const dir = c.callerId === me ? '→' : '←';
    const who = c.callerId === me ? c.calleeId : c.callerId;
    return `${dir} ${who ?? '?'}`;
  }

  function row(c) {
    const btn = el('button', { type: 'button', class: 'btn small', text: 'Details', 'aria-label': `Details of the call with ${other(c)}`, 'data-testid': 'history-details', onclick: () => showAnalytics(c.id) });
    return el('tr', { 'data-testid': 'history-row', dataset: { callId: c.id, status: c.status } },
      el('td', { text: when(c.createdAt) }),
      el('td', { text: other(c) }),
      el('td', { text: c.callType }),
      el('td', { class: `status-${c.status}`, text: c.status + (c.endReason && c.status === 'ended' ? ` (${c.endReason})` : '') }),
      el('td', { text: c.answeredAt ? duration(c.duration) : '—' }),
      el('td', {}, btn));
  }

  async function load(reset = true) {
    if (reset) offset = 0;
    try {
      const data = await api.history({ limit: PAGE, offset });
      const body = $('#history-table tbody');
      const rows = (data.calls || []).map(row);
      if (reset) body.replaceChildren(...rows); else body.append(...rows);
      offset += rows.length;
      $('#history-empty').hidden = offset > 0;
      $('#history-more').hidden = offset >= (data.total ?? 0);
    } catch (err) {
      if (err.status !== 401) notify(`History could not be loaded: ${err.message}`, 'error', { key: 'history' });
    }
  }

  async function showAnalytics(id) {
    const box = $('#analytics');
    box.hidden = false;
    box.replaceChildren(el('p', { class: 'hint', text: 'Loading…' }));
    try {
      const a = await api.analytics(id);
      const q = a.quality || {};
      const r = a.relay || {};
      const fmt = (v, unit, digits = 0) => (v === null || v === undefined ? '—' : `${Number(v).toFixed(digits)}${unit}`);
      const kb = (b) => (b ? `${(b / 1024).toFixed(1)} KiB` : '0');
      const items = [
        ['Status', `${a.status}${a.endReason ? ` (${a.endReason})` : ''}`],
        ['Type', a.callType],
        ['Started', when(a.createdAt)],
        ['Duration', a.answeredAt ? duration(a.duration) : '—'],
        ['Setup time', fmt(a.setupTime, ' s', 1)],
        ['Participants', (a.participants || []).map((p) => p.userId).join(', ')],
        ['Quality reports', String(q.reports ?? 0)],
        ['Round-trip time', q.avgRttMs == null ? '—' : `${fmt(q.avgRttMs, ' ms')} avg, ${fmt(q.maxRttMs, ' ms')} max`],
        ['Jitter', fmt(q.avgJitterMs, ' ms', 1)],
        ['Packet loss', q.avgPacketLoss == null ? '—' : `${(q.avgPacketLoss * 100).toFixed(2)} %`],
        ['Bitrate', fmt(q.avgBitrateKbps, ' kbit/s')],
        ['TURN relay', r.allocations ? `${r.allocations} allocation(s), ${kb(r.bytesToPeer)} sent, ${kb(r.bytesFromPeer)} received` : 'not used'],
      ];
      const dl = el('dl', { 'data-testid': 'analytics-summary' }, ...items.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v, dataset: { field: k } })]));
      const timeline = el('ol', { class: 'timeline' }, ...(a.timeline || []).map((t) => el('li', { text: `${clock(t.at)} — ${t.userId ?? ''} ${describeEvent(t)}` })));
      box.replaceChildren(el('h2', { text: 'Call details' }), dl, el('h2', { class: 'small-title', text: 'Timeline' }), timeline, ...sfuCharts(a.sfu || []));
      box.dataset.callId = id;
      box.dataset.reports = String(q.reports ?? 0);
      box.focus();
    } catch (err) {
      box.replaceChildren(el('p', { class: 'error', text: `The details could not be loaded: ${err.message}` }));
    }
  }

  $('#history-refresh').addEventListener('click', () => load(true));
  $('#history-more').addEventListener('click', () => load(false));
  return { load };
}
