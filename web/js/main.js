// main.js — boots the client and wires the pieces together: session ↔ sign-in page, the
// signaling socket and its status, routing of /rtc messages to the call and room controllers,
// hash routes (#/call, #/rooms, #/history, #/selftest, #/settings, #/console for admins, #room=ID), the insecure-page
// warning, expired-token handling, the `window.signalbox` handle (read-only state for
// diagnostics and tests) and `window.__signalbox` (the few actions tests and the console take).

import { configureApi, api } from './api.js';
import { session, isExpired, msUntilExpiry } from './session.js';
import { RtcSocket } from './rtc-socket.js';
import { CallController } from './call.js';
import { RoomController } from './room.js';
import { mediaAvailable } from './media.js';
import { $ } from './ui/dom.js';
import { notify, dismiss } from './ui/notice.js';
import { initSignin, renderSignedIn } from './ui/signin-view.js';
import { initCallView } from './ui/call-view.js';
import { initRoomView, parseRoomInput } from './ui/room-view.js';
import { initHistoryView } from './ui/history-view.js';
import { initSelftestView } from './ui/selftest-view.js';
import { initSettingsView } from './ui/settings-view.js';
import { initConsoleView } from './ui/console-view.js';

const EXPIRED = 'Your session has expired. Please sign in again.';
const VIEWS = ['call', 'rooms', 'history', 'selftest', 'settings', 'console'];
const isAdmin = () => !!(session.user && session.user.admin);

const socket = new RtcSocket(() => session.token);
const call = new CallController(socket);
const room = new RoomController(socket);
let pendingRoom = null;
let welcomed = false;
let connectedWaiters = [];

window.signalbox = {
  get user() { return session.user; },
  get signaling() { return socket.status; },
  get call() { return call.state; },
  get room() {
    const peers = [...room.peers.values()].map((p) => ({
      peerId: p.peerId, userId: p.userId, state: p.state, source: p.source, stats: p.stats,
      media: { ...p.media }, streamId: p.stream ? p.stream.id : null, screen: !!p.screen,
    }));
    return { ...room.state, local: { ...room.state.local, stream: undefined, screenStream: undefined }, peers };
  },
  /**
   * Every live RTCPeerConnection, for diagnostics (chrome://webrtc-internals shows the same):
   * the call's, a room's mesh links (kind 'room'), a room's SFU link (kind 'sfu', with
   * `tracks`: received track id → {peerId, role: 'audio'|'camera'|'screen'}).
   */
  peerConnections() {
    const list = [];
    if (call.peer) list.push({ kind: 'call', callId: call.state.callId, remote: call.state.peerUserId, pc: call.peer.pc });
    for (const p of room.peers.values()) if (p.mesh && !p.mesh.closed) list.push({ kind: 'room', callId: room.state.callId, remote: p.userId, peerId: p.peerId, pc: p.mesh.pc });
    if (room.sfu) list.push({ kind: 'sfu', callId: room.state.callId, remote: 'sfu', peerId: 'sfu', pc: room.sfu.pc, tracks: room.sfu.trackOwners() });
    return list;
  },
};

/** Actions for tests and the console; `window.signalbox` stays read-only. */
window.__signalbox = {
  /** The most bits/s the SFU may send this browser in total (null: no cap), until the setting changes. */
  setReceiveCap: (bps) => room.setReceiveCap(bps),
};

// ---- insecure page --------------------------------------------------------------------------
function checkSecureContext() {
  if (mediaAvailable()) return;
  $('#insecure-banner').hidden = false;
  $('#insecure-origin').textContent = location.origin;
  $('#insecure-https').textContent = `https://${location.hostname}${location.port ? `:${location.port}` : ''}/`;
}

// ---- routing ---------------------------------------------------------------------------------
function route() {
  const hash = location.hash.slice(1);
  if (/(^|&)room=/.test(hash)) {
    const id = parseRoomInput(`#${hash}`);
    if (session.user) joinRoom(id); else pendingRoom = id;
    return;
  }
  let view = VIEWS.includes(hash.replace(/^\//, '')) ? hash.replace(/^\//, '') : 'call';
  // The console is for admins: others see the call page, and no console at all.
  if (view === 'console' && !isAdmin()) view = 'call';
  $('#nav-console').hidden = !isAdmin();
  for (const section of document.querySelectorAll('.view')) section.hidden = section.dataset.view !== view;
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view === 'history') historyView.load();
  if (view === 'settings') settingsView.refresh(false);
  consoleView.setVisible(view === 'console');
}

function whenConnected() {
  if (socket.status === 'open') return Promise.resolve();
  return new Promise((resolve) => connectedWaiters.push(resolve));
}

async function joinRoom(roomId) {
  if (!roomId) return;
  if (room.active) {
    if (room.state.roomId === roomId) return;
    notify('Leave the current room first.', 'error');
    return;
  }
  if (call.busy) { notify('Hang up the current call before joining a room.', 'error'); return; }
  await whenConnected();
  try {
    await room.join(roomId);
    if (location.hash !== `#room=${roomId}`) window.history.replaceState(null, '', `#room=${encodeURIComponent(roomId)}`);
  } catch (err) {
    if (err.code === 'not_found' || err.status === 404) notify('That room does not exist (or you may not join it).', 'error', { key: 'room-error' });
    if (/room=/.test(location.hash)) window.history.replaceState(null, '', '#/rooms');
    route();
  }
}

// ---- session ----------------------------------------------------------------------------------
configureApi({
  getToken: () => session.token,
  onUnauthorized: (err) => {
    if (!session.token) return;
    session.signOut(err.code === 'token_expired' ? EXPIRED : 'The server no longer accepts your sign-in. Please sign in again.');
  },
});

session.addEventListener('change', (e) => {
  const { user, reason } = e.detail;
  renderSignedIn(user, reason);
  if (user) {
    welcomed = false;
    watchExpiry();
    socket.connect();
    route();
    if (pendingRoom) { const id = pendingRoom; pendingRoom = null; joinRoom(id); }
  } else {
    if (call.busy) call.hangup();
    room.leave();
    socket.close();
    consoleView.setVisible(false);
    $('#nav-console').hidden = true;
    $('#signal-status').hidden = true;
  }
});

// ---- signaling ----------------------------------------------------------------------------------
socket.addEventListener('status', (e) => {
  const { status, retryInMs, welcome } = e.detail;
  const pill = $('#signal-status');
  pill.hidden = !session.user;
  pill.dataset.status = status;
  pill.textContent = { open: 'online', connecting: 'connecting…', reconnecting: 'reconnecting…', closed: 'offline' }[status] || status;
  call.setSignaling(status);
  if (status === 'reconnecting' && welcomed) {
    const secs = retryInMs ? ` Retrying in ${Math.ceil(retryInMs / 1000)} s…` : '';
    notify(`Lost the connection to the server.${secs}${call.busy ? ' Your call continues if the media path holds.' : ''}`, 'error', { key: 'conn' });
  }
  if (status === 'open') {
    if (welcomed) {
      dismiss('conn');
      notify('Reconnected to the server.', 'ok', { key: 'conn' });
      call.onWelcome(welcome);
      room.onWelcome(welcome);
    }
    welcomed = true;
    const waiters = connectedWaiters;
    connectedWaiters = [];
    waiters.forEach((w) => w());
  }
});

socket.addEventListener('refused', async () => {
  // The upgrade was refused or the server is down: find out whether the token is the reason.
  if (!session.token) return;
  if (isExpired(session.token)) { session.signOut(EXPIRED); return; }
  try { await api.me(); } catch { /* a 401 signs out through onUnauthorized; otherwise keep retrying */ }
});

socket.addEventListener('message', (e) => {
  const msg = e.detail;
  if (msg.type === 'error') {
    // An error for a frame sent without waiting for its ack (signals, stats, media state).
    console.warn(`signaling error ${msg.code}: ${msg.message}`);
    return;
  }
  if (room.handle(msg)) return;
  call.handle(msg);
});

window.addEventListener('online', () => socket.retryNow());

// ---- call notices -----------------------------------------------------------------------------
let lastPhase = 'idle';
call.addEventListener('change', (e) => {
  const s = e.detail;
  if (s.phase === 'ended' && lastPhase !== 'ended' && s.endMessage) notify(s.endMessage, /lost|not online|declined|busy|denied|found|not/i.test(s.endMessage) ? 'error' : 'info', { key: 'call-end', timeoutMs: 8000 });
  lastPhase = s.phase;
});
room.addEventListener('change', () => {
  if (room.state.phase === 'idle' && /room=/.test(location.hash)) {
    window.history.replaceState(null, '', '#/rooms');
    route();
  }
});

// ---- expiry watch ------------------------------------------------------------------------------
// Signs out the moment the token expires, with a clear message; a call or room in progress is
// left to finish first (checked again every few seconds until it has).
const LONGEST_TIMER_MS = 2 ** 31 - 1;
let expiryTimer = null;
function watchExpiry() {
  clearTimeout(expiryTimer);
  const left = msUntilExpiry(session.token);
  if (left === null) return;
  expiryTimer = setTimeout(checkExpiry, Math.min(Math.max(left, 0) + 100, LONGEST_TIMER_MS));
}
function checkExpiry() {
  if (!session.token) return;
  if (!isExpired(session.token)) { watchExpiry(); return; }
  if (call.busy || room.active) { expiryTimer = setTimeout(checkExpiry, 5000); return; }
  session.signOut(EXPIRED);
}

// ---- boot ------------------------------------------------------------------------------------------
initSignin();
initCallView(call);
initRoomView(room, { onJoin: (id) => joinRoom(id) });
const historyView = initHistoryView(() => session.user && session.user.id);
initSelftestView();
const settingsView = initSettingsView();
const consoleView = initConsoleView({ isAdmin });
window.addEventListener('hashchange', route);
checkSecureContext();

(async function boot() {
  const linked = session.takeTokenFromUrl();
  const token = linked || session.load();
  if (/(^|&)room=/.test(location.hash.slice(1))) pendingRoom = parseRoomInput(location.hash);
  if (!token) { renderSignedIn(null); return; }
  try {
    await session.useToken(token);
  } catch (err) {
    renderSignedIn(null, err.code === 'token_expired' ? EXPIRED : err.status === 401 ? 'Your sign-in is no longer valid. Please sign in again.' : `Could not sign in: ${err.message}`);
    if (err.status === 401 || err.status === 400) session.signOut(err.code === 'token_expired' ? EXPIRED : 'Your sign-in is no longer valid. Please sign in again.');
  }
})();
