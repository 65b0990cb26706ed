// ui/room-view.js — group rooms: the Rooms tab (create a room with its media path, copy its
// link, join by link or id) and the room screen (one tile per participant with name, media
// state and quality, a screen tile next to a participant who shares, the active speaker's tile
// outlined and, in a grid of more than four, made big; which path the room takes;
// mute/camera/share screen/leave). Renders RoomController.state on every 'change', and tells
// the controller the size its remote tiles are shown at (tile-sizes.js).

import { api } from '../api.js';
import { describePath } from '../stats.js';
import { $, el, setStream, setPressed, initials } from './dom.js';
import { notify } from './notice.js';
import { TileSizes } from './tile-sizes.js';

/** From this many tiles on, the active speaker's tile is the big one. */
const FEATURE_FROM_TILES = 5;

export function roomLink(roomId) {
  return `${location.origin}/#room=${encodeURIComponent(roomId)}`;
}

/** Accepts a full link (`…/#room=ID`), `#room=ID`, or a bare id. */
export function parseRoomInput(text) {
  text = text.trim();
  const m = /[#&]room=([^&\s]+)/.exec(text);
  return m ? decodeURIComponent(m[1]) : text;
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    notify('Link copied.', 'ok', { key: 'copy' });
  } catch {
    // Clipboard needs a secure context and permission: select it for the user instead.
    const input = $('#room-link');
    input.value = text;
    input.select();
    notify('Press Ctrl+C (or ⌘C) to copy the selected link.', 'info', { key: 'copy' });
  }
}

export function initRoomView(room, { onJoin }) {
  let created = null;
  const tiles = new Map(); // key -> tile element
  const sizes = new TileSizes((m) => room.setTileSizes(m));

  $('#room-create').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const btn = f.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const max = Math.min(16, Math.max(2, Number(f.max.value) || 4));
      const { room: r } = await api.createRoom(f.name.value.trim(), max, f.private.checked, f.mode.value);
      created = r;
      $('#room-created-name').textContent = r.name;
      $('#room-link').value = roomLink(r.id);
      $('#room-created').hidden = false;
      $('#room-created').dataset.roomId = r.id;
      $('#room-copy').focus();
    } catch (err) {
      notify(`The room could not be created: ${err.message}`, 'error');
    } finally {
      btn.disabled = false;
    }
  });
  $('#room-copy').addEventListener('click', () => copy($('#room-link').value));
  $('#room-join-created').addEventListener('click', () => created && onJoin(created.id));
  $('#room-join').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = parseRoomInput(e.target.room.value);
    if (id) onJoin(id);
  });
  $('#room-copy-live').addEventListener('click', () => room.state.roomId && copy(roomLink(room.state.roomId)));
  $('#room-mic').addEventListener('click', () => room.toggleAudio());
  $('#room-cam').addEventListener('click', () => room.toggleVideo());
  $('#room-share').addEventListener('click', async () => {
    try { await room.toggleScreen(); } catch (err) { notify(err.message, 'error', { key: 'room-share' }); }
  });
  $('#room-leave').addEventListener('click', () => room.leave());

  function tile(key, { name, me }) {
    let t = tiles.get(key);
    if (!t) {
      const video = el('video', { autoplay: true, playsinline: true, muted: me ? true : null, 'aria-label': me ? 'Your camera' : `Video of ${name}` });
      if (me) video.muted = true;
      t = el('div', { class: `tile${me ? ' me' : ''}`, 'data-testid': me ? 'room-tile-me' : 'room-tile', dataset: { peer: key } },
        video,
        el('div', { class: 'placeholder', 'aria-hidden': 'true' }),
        el('ul', { class: 'badges' }),
        el('span', { class: 'tag' }),
        el('span', { class: 'q quality' }, el('span', { class: 'bars', 'aria-hidden': 'true' }, el('i'), el('i'), el('i'))));
      tiles.set(key, t);
      if (!me) sizes.watch(key, t);
    }
    return t;
  }

  function screenTile(key, name) {
    let t = tiles.get(key);
    if (!t) {
      t = el('div', { class: 'tile screen', 'data-testid': 'room-screen-share', dataset: { peer: key.slice('screen:'.length) } },
        el('video', { autoplay: true, playsinline: true, muted: true, 'aria-label': `Screen shared by ${name}` }),
        el('span', { class: 'tag' }));
      t.querySelector('video').muted = true;
      tiles.set(key, t);
    }
    t.querySelector('.tag').textContent = `${name}'s screen`;
    return t;
  }

  function paintTile(t, { name, stream, audio, video, screen, state, quality, stats, me, speaking }) {
    const v = t.querySelector('video');
    setStream(v, stream);
    t.querySelector('.tag').textContent = me ? `${name} (you)` : name;
    t.querySelector('.placeholder').textContent = !stream || video === false ? initials(name) : '';
    const badges = [];
    if (audio === false) badges.push(el('li', { text: 'Muted', 'data-testid': 'tile-muted' }));
    if (screen) badges.push(el('li', { class: 'info', text: me ? 'You are sharing your screen' : 'Sharing screen', 'data-testid': 'tile-sharing' }));
    if (!me && state && state !== 'connected') badges.push(el('li', { class: 'info', text: state === 'waiting' ? 'joining…' : state }));
    t.querySelector('.badges').replaceChildren(...badges);
    t.dataset.state = state || '';
    t.dataset.speaking = String(!!speaking);
    t.classList.toggle('speaking', !!speaking);
    t.dataset.userId = name;
    const q = t.querySelector('.q');
    q.hidden = !!me;
    q.dataset.quality = quality || 'unknown';
    q.title = stats ? `${quality} · ${stats.rttMs ?? '?'} ms · ${describePath(stats)}` : '';
    q.setAttribute('aria-label', `Connection to ${name}: ${q.title || 'unknown'}`);
    q.setAttribute('role', 'img');
  }

  function render(s) {
    const screen = $('#room-screen');
    const shown = s.phase === 'joining' || s.phase === 'joined';
    const wasHidden = screen.hidden;
    screen.hidden = !shown;
    screen.dataset.phase = s.phase;
    if (s.error && !shown) { notify(s.error, 'error', { key: 'room-error' }); s.error = null; }
    if (!shown) {
      for (const t of tiles.values()) sizes.forget(t);
      tiles.clear();
      $('#room-grid').replaceChildren();
      return;
    }
    if (wasHidden) $('#room-leave').focus();
    const max = s.room?.maxParticipants;
    const count = 1 + room.peers.size;
    $('#room-title').textContent = s.room ? s.room.name : 'Joining room…';
    $('#room-status').textContent = s.phase === 'joining' ? 'Joining…' : `${count} ${count === 1 ? 'person' : 'people'} here${max ? ` (up to ${max})` : ''}`;
    screen.dataset.topology = s.topology || '';
    $('#room-topology').textContent = !s.topology ? '' : s.topology === 'sfu' ? '· through the server' : '· peer-to-peer';
    $('#room-topology').title = s.topology === 'sfu'
      ? 'Everyone sends to the server once; it forwards to the others.'
      : s.topology === 'mesh' ? 'Everyone connects directly to everyone else.' : '';
    $('#room-warning').textContent = s.warning || '';
    $('#room-warning').hidden = !s.warning;
    setPressed($('#room-mic'), s.local.audio === false, 'Unmute', 'Mute');
    setPressed($('#room-cam'), s.local.video === false, 'Start video', 'Stop video');
    const share = $('#room-share');
    setPressed(share, !!s.local.screen, 'Stop sharing', 'Share screen');
    share.disabled = s.phase !== 'joined' || (!s.local.screen && !room.canShareScreen);
    share.title = share.disabled && s.topology === 'mesh' ? 'Screen sharing works when the room goes through the server (3 or more people, or a room created for it).' : '';

    const keep = new Set(['me']);
    const me = tile('me', { name: 'You', me: true });
    paintTile(me, { name: window.signalbox?.user?.name || 'You', stream: s.local.stream, audio: s.local.audio, video: s.local.video, screen: s.local.screen, me: true, speaking: !!s.peerId && s.activeSpeaker === s.peerId });
    const order = [me];
    for (const p of room.peers.values()) {
      keep.add(p.peerId);
      const t = tile(p.peerId, { name: p.userId });
      paintTile(t, { name: p.userId, stream: p.stream, audio: p.media.audio, video: p.media.video, screen: !!p.screen, state: p.state, quality: p.quality, stats: p.stats, speaking: s.activeSpeaker === p.peerId });
      order.push(t);
      if (p.screen) {
        const key = `screen:${p.peerId}`;
        keep.add(key);
        const st = screenTile(key, p.userId);
        setStream(st.querySelector('video'), p.screen);
        order.push(st);
      }
    }
    for (const k of [...tiles.keys()]) {
      if (!keep.has(k)) { sizes.forget(tiles.get(k)); tiles.delete(k); }
    }
    // The big tile (CSS puts it first): the speaker's, never our own.
    const featured = order.length >= FEATURE_FROM_TILES && s.activeSpeaker !== s.peerId ? tiles.get(s.activeSpeaker) : null;
    for (const t of order) t.classList.toggle('featured', t === featured);
    const grid = $('#room-grid');
    // Only touch the DOM order when it changed (re-appending a playing <video> pauses it).
    const current = [...grid.children];
    if (current.length !== order.length || current.some((n, i) => n !== order[i])) grid.replaceChildren(...order);
  }

  room.addEventListener('change', (e) => render(e.detail));
}
