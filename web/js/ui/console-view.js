// ui/console-view.js — the admin console (#/console, shown to admins only): calls and rooms in
// progress from GET /api/admin/live, refreshed every 1.5 s while the tab is open, with an End
// call button per call and per room (PUT /calls/:id/hangup, which ends any call for an admin;
// a room stays for its next join) and Close room per room (DELETE /rooms/:id); the built-in accounts (list, add, remove, reset password); the
// recent webhook deliveries (GET /api/admin/webhooks/deliveries, or a note when the server has
// none); and per-call quality charts from the call's stored reports and its analytics.

import { api } from '../api.js';
import { $, el, duration, when } from './dom.js';
import { notify } from './notice.js';
import { lineChart } from './line-chart.js';
import { qualityChart } from './quality-chart.js';

const POLL_MS = 1500;

const kib = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

function who(p) {
  const name = p.displayName && p.displayName !== p.userId ? `${p.displayName} (${p.userId})` : p.userId;
  const via = p.sessions.length ? p.sessions.map((s) => s.transport + (s.inCall ? '*' : '')).join(', ') : 'not connected';
  const media = [p.audio ? 'mic' : null, p.video ? 'cam' : null, p.screen ? 'screen' : null].filter(Boolean).join('+') || 'no media';
  const relay = p.relay.allocations ? `, TURN ${p.relay.allocations}: ${kib(p.relay.bytesToPeer)} ↑ ${kib(p.relay.bytesFromPeer)} ↓` : '';
  return el('li', { 'data-testid': 'console-participant', dataset: { userId: p.userId, connected: String(p.connected) } },
    el('b', { text: name }), ` — ${p.role}, ${via}, ${media}${relay}`);
}

function since(x) {
  return x.answeredAt ? duration(x.duration) : 'ringing';
}

export function initConsoleView({ isAdmin }) {
  let timer = null;
  let visible = false;
  let selected = null; // call id whose charts are shown
  let removeArmed = null; // user id whose Remove was clicked once

  // ---- live -------------------------------------------------------------------------------------
  async function endCall(id, button) {
    button.disabled = true;
    try {
      await api.adminEndCall(id);
      notify('Call ended.', 'ok', { key: 'console' });
    } catch (err) {
      notify(`The call could not be ended: ${err.message}`, 'error', { key: 'console' });
    }
    refresh();
  }

  async function closeRoom(id, button) {
    button.disabled = true;
    try {
      await api.adminCloseRoom(id);
      notify('Room closed.', 'ok', { key: 'console' });
    } catch (err) {
      notify(`The room could not be closed: ${err.message}`, 'error', { key: 'console' });
    }
    refresh();
  }

  // Rows are keyed by id and updated in place, so a button is never swapped under the pointer
  // by the next poll.
  function keyedRows(tbody, items, key, build) {
    const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    const rows = items.map((item) => {
      const k = key(item);
      let tr = existing.get(k);
      if (!tr) { tr = build.row(item); tr.dataset.key = k; }
      build.update(tr, item);
      return tr;
    });
    for (const [k, tr] of existing) if (!rows.includes(tr)) { tr.remove(); existing.delete(k); }
    rows.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
  }

  const cells = (n) => Array.from({ length: n }, () => el('td'));

  const callRows = {
    row(c) {
      const tr = el('tr', { 'data-testid': 'console-call', dataset: { callId: c.id } }, ...cells(6));
      tr.children[4].dataset.testid = 'console-duration';
      tr.append(el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'btn small', text: 'Quality', 'data-testid': 'console-quality', onclick: () => showQuality(c.id, `${c.callerId} → ${c.calleeId ?? ''}`) }),
        el('button', { type: 'button', class: 'btn small danger', text: 'End call', 'data-testid': 'console-end-call', 'aria-label': `End the call ${c.callerId} → ${c.calleeId ?? ''}`, onclick: (e) => endCall(c.id, e.currentTarget) })));
      return tr;
    },
    update(tr, c) {
      tr.dataset.status = c.status;
      const [call, kind, status, started, length, people] = tr.children;
      call.textContent = `${c.callerId} → ${c.calleeId ?? '(guest)'}`;
      kind.textContent = `${c.callType}, ${c.topology}`;
      status.className = `status-${c.status}`;
      status.textContent = c.status;
      started.textContent = when(c.createdAt);
      length.textContent = since(c);
      people.replaceChildren(el('ul', { class: 'plain' }, ...c.participants.map(who)));
    },
  };

  const roomRows = {
    row(r) {
      const tr = el('tr', { 'data-testid': 'console-room', dataset: { roomId: r.id, callId: r.callId } }, ...cells(6));
      tr.append(el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'btn small', text: 'Quality', onclick: () => showQuality(r.callId, `room ${r.name}`) }),
        el('button', { type: 'button', class: 'btn small danger', text: 'End call', 'data-testid': 'console-end-room-call', 'aria-label': `End the call in room ${r.name}`, onclick: (e) => endCall(r.callId, e.currentTarget) }),
        el('button', { type: 'button', class: 'btn small danger', text: 'Close room', 'data-testid': 'console-close-room', 'aria-label': `Close (delete) room ${r.name}`, onclick: (e) => closeRoom(r.id, e.currentTarget) })));
      return tr;
    },
    update(tr, r) {
      const [name, kind, count, started, length, people] = tr.children;
      name.textContent = r.name;
      kind.textContent = `${r.callType}, ${r.topology} (mode ${r.mode})`;
      count.textContent = `${r.participants.length}/${r.maxParticipants}`;
      started.textContent = when(r.createdAt);
      length.textContent = since(r);
      people.replaceChildren(el('ul', { class: 'plain' }, ...r.participants.map(who)));
    },
  };

  function renderLive(live) {
    keyedRows($('#console-calls tbody'), live.calls, (c) => c.id, callRows);
    $('#console-calls-empty').hidden = live.calls.length > 0;
    $('#console-calls').hidden = live.calls.length === 0;
    keyedRows($('#console-rooms tbody'), live.rooms, (r) => `${r.id} ${r.callId}`, roomRows);
    $('#console-rooms-empty').hidden = live.rooms.length > 0;
    $('#console-rooms').hidden = live.rooms.length === 0;
    const r = live.relay;
    $('#console-relay').textContent = r
      ? `TURN relay: ${r.allocations} allocation(s) now, ${r.allocationsCreated} since start; relayed ${kib(r.bytesToPeer)} to peers, ${kib(r.bytesFromPeer)} from peers. ${live.connections} signaling connection(s).`
      : `The embedded TURN relay is off. ${live.connections} signaling connection(s).`;
    $('#console-status').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    $('#console-live').dataset.calls = String(live.calls.length);
  }

  async function refresh() {
    try {
      renderLive(await api.adminLive());
    } catch (err) {
      $('#console-status').textContent = err.status === 403 ? 'The console is for admins only.' : `Could not load the live view: ${err.message}`;
    }
  }

  function poll() {
    clearTimeout(timer);
    if (!visible) return;
    refresh().finally(() => { if (visible) timer = setTimeout(poll, POLL_MS); });
  }

  // ---- quality ----------------------------------------------------------------------------------
  async function showQuality(id, label) {
    selected = id;
    const box = $('#console-charts');
    box.hidden = false;
    box.dataset.callId = id;
    box.replaceChildren(el('p', { class: 'hint', text: 'Loading…' }));
    try {
      const [series, analytics] = await Promise.all([api.adminQuality(id), api.analytics(id).catch(() => null)]);
      if (selected !== id) return;
      const users = [...new Set(series.samples.map((s) => s.userId))];
      const metric = (key, scale = 1) => users.map((u) => ({
        name: u,
        points: series.samples.filter((s) => s.userId === u).map((s) => ({ t: Date.parse(s.at), v: s[key] === null ? null : s[key] * scale })),
      }));
      const charts = series.samples.length ? [
        lineChart({ title: 'Round-trip time', unit: 'ms', series: metric('rttMs'), testid: 'console-chart-rtt' }),
        lineChart({ title: 'Jitter', unit: 'ms', series: metric('jitterMs'), testid: 'console-chart-jitter' }),
        lineChart({ title: 'Packet loss', unit: '%', series: metric('packetLoss', 100), testid: 'console-chart-loss' }),
        lineChart({ title: 'Bitrate', unit: 'kbit/s', series: metric('bitrateKbps'), testid: 'console-chart-bitrate' }),
      ] : [el('p', { class: 'hint', 'data-testid': 'console-no-reports', text: 'No quality reports for this call yet.' })];
      const sfu = ((analytics && analytics.sfu) || []).filter((p) => Array.isArray(p.quality) && p.quality.length);
      const names = new Map(sfu.map((p) => [p.peerId, p.userId]));
      const sfuCharts = sfu.map((p) => qualityChart(p, (peer) => names.get(peer) || String(peer).slice(0, 8)));
      box.replaceChildren(
        el('h2', { class: 'small-title', text: `Quality of ${label} (${series.samples.length} report(s))` }),
        el('div', { class: 'quality-charts' }, ...charts),
        ...(sfuCharts.length ? [el('h3', { class: 'small-title', text: 'Received through the server' }), el('div', { class: 'quality-charts' }, ...sfuCharts)] : []));
    } catch (err) {
      box.replaceChildren(el('p', { class: 'error', text: `The quality of this call could not be loaded: ${err.message}` }));
    }
  }

  // ---- users ------------------------------------------------------------------------------------
  function userRow(u) {
    const pass = el('input', { type: 'password', minlength: '8', maxlength: '1024', autocomplete: 'new-password', placeholder: 'new password', 'aria-label': `New password for ${u.id}`, 'data-testid': 'console-user-newpass' });
    const reset = el('button', { type: 'button', class: 'btn small', text: 'Reset password', 'data-testid': 'console-user-reset', onclick: async () => {
      try {
        await api.adminSetPassword(u.id, pass.value);
        pass.value = '';
        notify(`The password of ${u.id} was changed.`, 'ok', { key: 'console' });
      } catch (err) { notify(`The password was not changed: ${err.message}`, 'error', { key: 'console' }); }
    } });
    const remove = el('button', { type: 'button', class: 'btn small danger', text: removeArmed === u.id ? 'Really remove?' : 'Remove', 'data-testid': 'console-user-remove', onclick: async () => {
      if (removeArmed !== u.id) { removeArmed = u.id; loadUsers(); return; }
      removeArmed = null;
      try {
        await api.adminRemoveUser(u.id);
        notify(`${u.id} was removed.`, 'ok', { key: 'console' });
      } catch (err) { notify(`${u.id} was not removed: ${err.message}`, 'error', { key: 'console' }); }
      loadUsers();
    } });
    return el('tr', { 'data-testid': 'console-user', dataset: { userId: u.id } },
      el('td', { text: u.id }), el('td', { text: u.name ?? '—' }), el('td', { text: u.admin ? 'admin' : 'user' }),
      el('td', { text: when(u.createdAt) }), el('td', { class: 'actions' }, pass, reset, remove));
  }

  async function loadUsers() {
    try {
      const { users } = await api.adminUsers();
      $('#console-users tbody').replaceChildren(...users.map(userRow));
      $('#console-users-empty').hidden = users.length > 0;
    } catch (err) {
      $('#console-users-empty').hidden = false;
      $('#console-users-empty').textContent = `The accounts could not be loaded: ${err.message}`;
    }
  }

  $('#console-user-add').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.currentTarget;
    const out = f.querySelector('.error');
    out.hidden = true;
    const name = f.elements.name.value.trim();
    try {
      await api.adminAddUser({ username: f.elements.username.value.trim(), password: f.elements.password.value, ...(name ? { name } : {}), admin: f.elements.admin.checked });
      f.reset();
      notify('Account added.', 'ok', { key: 'console' });
      loadUsers();
    } catch (err) {
      out.textContent = err.message;
      out.hidden = false;
    }
  });

  // ---- webhooks ---------------------------------------------------------------------------------
  async function loadWebhooks() {
    const box = $('#console-webhooks');
    const body = $('#console-webhooks-table tbody');
    try {
      const { deliveries } = await api.adminWebhookDeliveries();
      $('#console-webhooks-table').hidden = false;
      box.dataset.state = 'loaded';
      $('#console-webhooks-note').textContent = deliveries.length ? '' : 'No webhook deliveries yet.';
      body.replaceChildren(...deliveries.map((d) => el('tr', { 'data-testid': 'console-delivery', dataset: { status: d.status } },
        el('td', { text: when(d.createdAt) }), el('td', { text: d.event }), el('td', { text: d.url }),
        el('td', { class: `status-${d.status}`, text: d.status + (d.lastStatus ? ` (HTTP ${d.lastStatus})` : '') }),
        el('td', { text: String(d.attempts) }),
        el('td', { text: d.lastError || (d.deliveredAt ? `delivered ${when(d.deliveredAt)}` : d.nextAttemptAt ? `next try ${when(d.nextAttemptAt)}` : '—') }))));
    } catch (err) {
      $('#console-webhooks-table').hidden = true;
      body.replaceChildren();
      box.dataset.state = err.status === 404 ? 'unavailable' : 'error';
      $('#console-webhooks-note').textContent = err.status === 404
        ? 'Webhook deliveries are not available on this server.'
        : `The webhook deliveries could not be loaded: ${err.message}`;
    }
  }
  $('#console-webhooks-refresh').addEventListener('click', loadWebhooks);
  $('#console-users-refresh').addEventListener('click', loadUsers);

  return {
    /** The console tab was opened (admins) or left. */
    setVisible(on) {
      visible = on && isAdmin();
      if (!visible) { clearTimeout(timer); return; }
      poll();
      loadUsers();
      loadWebhooks();
    },
  };
}
