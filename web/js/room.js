// room.js — the group room controller: joining with `room-join`, the topology in force and its
// links — mesh: one Peer per other participant keyed by peerId (the newcomer offers to everyone
// already there, existing members answer); sfu: one SfuLink to the server's SFU carrying
// everyone's tracks — switching an `auto` room between the two make-before-break on
// `room-topology`, routing of `call-sdp-update` / `ice-candidate` by `fromPeer` ("sfu" or a
// peer), the SFU's `sfu-layers` (to the link) and `room-active-speaker` (state.activeSpeaker),
// what we want received (`sfu-view`: tile sizes from the view, the receive cap), per-peer media
// state and stats, screen sharing (through the SFU only), and leaving.
// No DOM: the room view renders `state` and `peers` on every 'change' event.

import { rtcConfiguration } from './ice.js';
import { LocalMedia } from './media.js';
import { Peer } from './peer.js';
import { ReceiveView } from './receive-view.js';
import { settings } from './settings.js';
import { SfuLink } from './sfu-link.js';
import { StatsSampler, grade } from './stats.js';

const STATS_EVERY_MS = 4000;
const SFU = 'sfu';
/** A switch waits at most this long for the new path to deliver (README: switching `auto` rooms). */
const SWITCH_WITHIN_MS = 8000;
const SWITCH_POLL_MS = 200;
/** After the SFU delivers a peer, its mesh link stays this long so the peer can switch too. */
const MESH_LINGER_MS = 1000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The receive cap the settings ask for, in bits/s (null: none). */
function capFromSettings() {
  const kbps = Number(settings.get('receiveLimitKbps'));
  return kbps > 0 ? Math.round(kbps * 1000) : null;
}

async function meshFramesDecoded(peer) {
  let frames = 0;
  (await peer.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0; });
  return frames;
}

export class RoomController extends EventTarget {
  constructor(socket) {
    super();
    this.socket = socket;
    // peerId -> {peerId, userId, source: 'mesh'|'sfu', mesh: Peer|null, meshStream, meshState,
    //            sampler, stream, screen, stats, quality, state, media}
    this.peers = new Map();
    this.sfu = null;
    this.sfuView = null; // the ReceiveView of this.sfu
    this.tileSizes = new Map(); // peerId -> {width, height} in device pixels, from the view
    this.receiveCap = capFromSettings();
    settings.addEventListener('change', (e) => { if (e.detail.name === 'receiveLimitKbps') this.setReceiveCap(capFromSettings()); });
    this.topology = 'mesh';
    this.switchGen = 0;
    this.media = null;
    this.config = null;
    this.statsTimer = null;
    this.announceTimer = null;
    this.state = { phase: 'idle', room: null, roomId: null, callId: null, peerId: null, topology: null, sfuState: null, activeSpeaker: null, error: null, warning: null, local: {} };
  }

  get active() { return this.state.phase === 'joining' || this.state.phase === 'joined'; }

  update(patch = {}) {
    Object.assign(this.state, patch);
    this.sync();
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }));
  }

  /** Derives what each tile shows from the path it currently takes. */
  sync() {
    const sfuState = this.sfu ? this.sfu.state : null;
    this.state.sfuState = sfuState;
    this.state.topology = this.active ? this.topology : null;
    for (const e of this.peers.values()) {
      const pub = this.sfu ? this.sfu.publishers.get(e.peerId) : null;
      if (e.source === SFU) {
        e.stream = pub ? pub.stream : null;
        e.state = !this.sfu ? 'waiting' : sfuState !== 'connected' ? sfuState : (pub ? 'connected' : 'waiting');
      } else {
        e.stream = e.meshStream;
        e.state = e.mesh ? e.meshState : 'waiting';
      }
      const screenLive = pub && pub.screen && !pub.screen.muted && e.media.screen !== false;
      e.screen = screenLive ? pub.screenStream : null;
    }
  }

  async join(roomId) {
    if (this.active) throw new Error('You are already in a room.');
    this.update({ phase: 'joining', roomId, error: null, warning: null });
    try {
      this.config = await rtcConfiguration();
      this.media = new LocalMedia();
      try {
        await this.media.open({ video: true });
      } catch (err) {
        if (err.code === 'insecure') throw err;
        this.update({ warning: `${err.message} You can still see and hear the others.` });
      }
      if (this.media.warning) this.update({ warning: this.media.warning });
      this.media.addEventListener('screen', (e) => { if (!e.detail.on) this.onScreenStopped(); });
      const ack = await this.socket.request('room-join', { roomId });
      this.topology = ack.topology === SFU ? SFU : 'mesh';
      this.update({ phase: 'joined', room: ack.room, callId: ack.callId, peerId: ack.peerId, local: this.localFlags() });
      for (const p of ack.peers || []) this.addEntry(p.peerId, p.userId, this.topology);
      if (this.topology === SFU) {
        this.openSfu();
      } else {
        // The newcomer offers to everyone already in the room.
        for (const e of this.peers.values()) this.offerMesh(e);
      }
      this.statsTimer = setInterval(() => this.collectStats(), STATS_EVERY_MS);
      this.sendMediaState();
      this.update();
    } catch (err) {
      this.cleanup();
      const message = err.code === 'room_full' || err.status === 409 ? `This room is full. ${err.message}` : err.message;
      this.update({ phase: 'idle', error: message });
      throw err;
    }
  }

  localFlags() {
    const m = this.media;
    return {
      audio: m ? m.audioOn : false,
      video: m ? m.videoOn : false,
      screen: !!(m && m.screenTrack),
      stream: m ? m.stream : null,
      screenStream: m ? m.screenStream : null,
    };
  }

  // ---- participants ---------------------------------------------------------------------

  addEntry(peerId, userId, source) {
    if (this.peers.has(peerId)) return this.peers.get(peerId);
    const entry = {
      peerId, userId, source, mesh: null, meshStream: null, meshState: 'new', sampler: null,
      stream: null, screen: null, stats: null, quality: 'unknown', state: 'waiting',
      media: { audio: true, video: true, screen: undefined },
    };
    this.peers.set(peerId, entry);
    this.update();
    return entry;
  }

  removePeer(peerId) {
    const entry = this.peers.get(peerId);
    if (!entry) return;
    this.dropMesh(entry);
    this.peers.delete(peerId);
    if (this.state.activeSpeaker === peerId) this.state.activeSpeaker = null;
    this.update();
    if (this.topology === 'mesh') this.maybeLeaveSfu();
  }

  /** A mesh Peer for `entry` (replacing a closed one). */
  meshPeer(entry, polite) {
    this.dropMesh(entry);
    const { peerId } = entry;
    const peer = new Peer(this.config, {
      polite,
      label: `room:${peerId}`,
      signal: ({ sdp, candidate }) => {
        const payload = { callId: this.state.callId, to: peerId };
        if (sdp) this.socket.send('call-sdp-update', { ...payload, sdp });
        else this.socket.send('ice-candidate', { ...payload, candidate });
      },
    });
    entry.mesh = peer;
    entry.meshState = 'new';
    entry.sampler = new StatsSampler(peer.pc);
    peer.addEventListener('remote-stream', (e) => { if (entry.mesh === peer) { entry.meshStream = e.detail.stream; this.update(); } });
    peer.addEventListener('state', (e) => { if (entry.mesh === peer) { entry.meshState = e.detail.state; this.update(); } });
    peer.addEventListener('error', (e) => console.warn('room peer error', peerId, e.detail.error));
    return peer;
  }

  /** We offer to this peer over the mesh (we are the newcomer, or the first by peerId). */
  offerMesh(entry) {
    const peer = this.meshPeer(entry, false);
    peer.addLocal(this.media.stream, { video: true });
    peer.startOffering();
  }

  dropMesh(entry) {
    if (!entry.mesh) return;
    entry.mesh.close();
    entry.mesh = null;
    entry.meshStream = null;
    entry.sampler = null;
  }

  // ---- the SFU link -----------------------------------------------------------------------

  openSfu() {
    if (this.sfu) return;
    const callId = this.state.callId;
    const link = new SfuLink(this.config, {
      label: 'room:sfu',
      signal: ({ candidate }) => this.socket.send('ice-candidate', { callId, to: SFU, candidate }),
      sendSdp: (sdp) => this.socket.request('call-sdp-update', { callId, to: SFU, sdp }),
    });
    const view = new ReceiveView((v) => this.socket.request('sfu-view', { callId, ...v }), { tiles: this.tileSizes, maxBitrate: this.receiveCap });
    this.sfu = link;
    this.sfuView = view;
    link.addEventListener('tracks', () => { if (this.sfu === link) this.update(); });
    link.addEventListener('state', () => {
      if (this.sfu !== link) return;
      if (link.state === 'connected') view.start();
      this.update();
    });
    link.addEventListener('error', (e) => console.warn('sfu link error', e.detail.error));
    link.addEventListener('rejected', (e) => {
      if (this.sfu !== link) return;
      this.update({ warning: `The server refused this browser's media description (${e.detail.message || e.detail.code}).` });
    });
    link.publish(this.media.stream);
  }

  /** Closes the SFU link; `leave` tells the server (`sfu-leave`) we stay in the room without it. */
  closeSfu({ leave }) {
    const link = this.sfu;
    if (!link) return;
    this.sfu = null;
    link.close();
    this.sfuView.close();
    this.sfuView = null;
    if (this.media && this.media.screenTrack) this.media.stopScreen();
    if (leave && this.state.callId) {
      this.socket.request('sfu-leave', { callId: this.state.callId }).catch((err) => console.warn(`sfu-leave: ${err.code || ''} ${err.message}`));
    }
    for (const e of this.peers.values()) if (e.source === SFU) e.stats = null;
    this.update({ activeSpeaker: null }); // only the SFU says who speaks
  }

  /** Back in a mesh: once no tile needs the SFU any more, leave it. */
  maybeLeaveSfu() {
    if (!this.sfu || this.topology !== 'mesh' || !this.active) return;
    if ([...this.peers.values()].some((e) => e.source === SFU)) return;
    this.closeSfu({ leave: true });
  }

  // ---- what we receive from the SFU -----------------------------------------------------------

  /** peerId → {width, height}: each remote camera tile's size in device pixels (0 × 0: not visible). */
  setTileSizes(sizes) {
    this.tileSizes = sizes;
    if (this.sfuView) this.sfuView.setTiles(sizes);
  }

  /** The most bits/s to receive from the SFU in total (null: no cap), from now until the setting changes. */
  setReceiveCap(bps) {
    const cap = bps === null || bps === undefined ? null : Math.round(Number(bps));
    if (cap !== null && !(cap > 0)) throw new Error(`A receive cap is a positive number of bits/s, or null (got ${bps}).`);
    this.receiveCap = cap;
    if (this.sfuView) this.sfuView.setMaxBitrate(cap);
  }

  // ---- switching (auto rooms) --------------------------------------------------------------

  setTopology(topology) {
    topology = topology === SFU ? SFU : 'mesh';
    if (topology === this.topology) return;
    this.topology = topology;
    const gen = ++this.switchGen;
    console.info(`room: topology ${topology}`);
    if (topology === SFU) {
      this.openSfu();
      for (const e of this.peers.values()) {
        if (e.mesh) this.handOver(e, gen, SFU);
        else e.source = SFU;
      }
    } else {
      if (this.media && this.media.screenTrack) {
        this.media.stopScreen();
        this.update({ warning: 'Screen sharing stopped: the room is peer-to-peer again, and sharing needs the server.' });
      }
      if (!this.peers.size) {
        this.closeSfu({ leave: true });
      } else {
        for (const e of this.peers.values()) {
          if (!e.mesh && this.state.peerId < e.peerId) this.offerMesh(e);
          // The other side (its peerId sorts first) offers to us: answered in handle().
          this.handOver(e, gen, 'mesh');
        }
      }
    }
    this.update();
  }

  /** Whether the path `to` delivers `entry`'s video yet. */
  async delivers(entry, to) {
    if (to === SFU) return !!this.sfu && (await this.sfu.cameraFramesDecoded(entry.peerId)) > 0;
    const peer = entry.mesh;
    if (!peer || peer.closed || peer.state !== 'connected') return false;
    return (await meshFramesDecoded(peer)) > 0;
  }

  /** Moves `entry`'s tile to the path `to` once it delivers (or after SWITCH_WITHIN_MS). */
  async handOver(entry, gen, to) {
    const current = () => gen === this.switchGen && this.active && this.peers.get(entry.peerId) === entry;
    const deadline = Date.now() + SWITCH_WITHIN_MS;
    while (Date.now() < deadline && current()) {
      try { if (await this.delivers(entry, to)) break; } catch { /* closed meanwhile */ }
      await sleep(SWITCH_POLL_MS);
    }
    if (!current()) return;
    console.info(`room: ${entry.userId}'s tile through ${to} after ${SWITCH_WITHIN_MS - (deadline - Date.now())} ms`);
    entry.source = to;
    entry.stats = null;
    this.update();
    if (to === SFU) {
      const peer = entry.mesh;
      setTimeout(() => {
        if (entry.mesh === peer && entry.source === SFU) { this.dropMesh(entry); this.update(); }
      }, MESH_LINGER_MS);
    } else {
      this.maybeLeaveSfu();
    }
  }

  // ---- messages ---------------------------------------------------------------------------

  /** Routes one /rtc message. Returns true when it was about this room. */
  handle(msg) {
    if (!this.active) return false;
    switch (msg.type) {
      case 'room-topology':
        if (msg.roomId !== this.state.roomId && msg.callId !== this.state.callId) return false;
        if (this.state.phase === 'joined') this.setTopology(msg.topology);
        return true;
      case 'room-peer-joined':
        if (msg.roomId !== this.state.roomId || msg.peerId === this.state.peerId) return false;
        // Mesh: wait for its offer (a tile shows it is coming). SFU: its tracks come through it.
        this.addEntry(msg.peerId, msg.userId, this.topology);
        this.announceSoon();
        return true;
      case 'room-peer-left':
        if (msg.roomId !== this.state.roomId) return false;
        this.removePeer(msg.peerId);
        return true;
      case 'call-sdp-update':
      case 'ice-candidate': {
        if (msg.callId !== this.state.callId || !msg.fromPeer) return false;
        if (msg.fromPeer === SFU) {
          if (!this.sfu) return true;
          if (msg.type === 'call-sdp-update') this.sfu.handleDescription(msg.sdp);
          else this.sfu.handleCandidate(msg.candidate);
          return true;
        }
        let entry = this.peers.get(msg.fromPeer);
        if (msg.type === 'call-sdp-update') {
          if (!entry) entry = this.addEntry(msg.fromPeer, msg.from, 'mesh');
          if (msg.sdp.type === 'offer' && (!entry.mesh || entry.mesh.closed)) {
            this.meshPeer(entry, true).acceptOffer(msg.sdp, this.media.stream);
          } else if (entry.mesh) {
            entry.mesh.handleDescription(msg.sdp);
          }
        } else if (entry && entry.mesh) {
          entry.mesh.handleCandidate(msg.candidate);
        }
        return true;
      }
      case 'sfu-layers':
        if (msg.callId !== this.state.callId) return false;
        if (this.sfu) this.sfu.setLayers(msg.mid, msg.layers);
        return true;
      case 'room-active-speaker':
        if (msg.roomId !== this.state.roomId && msg.callId !== this.state.callId) return false;
        this.update({ activeSpeaker: msg.peerId || null });
        return true;
      case 'media-state': {
        if (msg.callId !== this.state.callId) return false;
        for (const e of this.peers.values()) {
          if (e.userId === msg.from && (!msg.fromPeer || msg.fromPeer === e.peerId)) {
            e.media = { audio: msg.audio ?? e.media.audio, video: msg.video ?? e.media.video, screen: msg.screen ?? e.media.screen };
          }
        }
        this.update();
        return true;
      }
      case 'call-ended':
        if (msg.callId !== this.state.callId) return false;
        this.cleanup();
        this.update({ phase: 'idle', error: 'The room call ended.' });
        return true;
      default:
        return false;
    }
  }

  // ---- stats --------------------------------------------------------------------------------

  async collectStats() {
    const reports = [];
    let bySfu = null;
    if (this.sfu) {
      try { bySfu = await this.sfu.sampleByPeer(); } catch { /* closed */ }
    }
    for (const e of this.peers.values()) {
      try {
        if (e.source === SFU) {
          e.stats = bySfu ? bySfu.get(e.peerId) || null : null;
        } else if (e.sampler && e.mesh && !e.mesh.closed) {
          e.stats = await e.sampler.sample();
        } else {
          continue;
        }
        e.quality = grade(e.stats);
        if (e.stats && e.stats.connectionState === 'connected') reports.push({ peerId: e.peerId, userId: e.userId, via: e.source, ...e.stats });
      } catch { /* closed */ }
    }
    if (!this.active) return;
    this.update();
    if (reports.length && this.state.callId) {
      const avg = (k) => {
        const v = reports.map((r) => r[k]).filter((x) => typeof x === 'number');
        return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
      };
      this.socket.send('call-stats', {
        callId: this.state.callId,
        stats: { rttMs: avg('rttMs'), jitterMs: avg('jitterMs'), packetLoss: avg('packetLoss'), bitrateKbps: avg('bitrateKbps'), topology: this.topology, peers: reports },
      });
    }
  }

  // ---- local media --------------------------------------------------------------------------

  sendMediaState() {
    if (!this.state.callId || !this.media) return;
    const l = this.localFlags();
    this.update({ local: l });
    this.socket.send('media-state', { callId: this.state.callId, audio: l.audio, video: l.video, screen: l.screen });
  }

  /** Someone joined: tell them our media state (they missed what we sent before). */
  announceSoon() {
    clearTimeout(this.announceTimer);
    this.announceTimer = setTimeout(() => { if (this.state.phase === 'joined') this.sendMediaState(); }, 300);
  }

  toggleAudio() { if (this.media) { this.media.setAudio(!this.media.audioOn); this.sendMediaState(); } }
  toggleVideo() { if (this.media) { this.media.setVideo(!this.media.videoOn); this.sendMediaState(); } }

  /** Whether a screen share can start now (it goes through the SFU). */
  get canShareScreen() {
    return this.state.phase === 'joined' && this.topology === SFU && !!this.sfu && !!navigator.mediaDevices?.getDisplayMedia;
  }

  async toggleScreen() {
    if (!this.media || this.state.phase !== 'joined') return;
    if (this.media.screenTrack) {
      this.media.stopScreen(); // -> onScreenStopped
      return;
    }
    if (!this.canShareScreen) throw new Error('Screen sharing needs the room to go through the server (SFU); this room is peer-to-peer right now.');
    const track = await this.media.startScreen();
    const link = this.sfu;
    if (!link || this.topology !== SFU || !this.media) {
      this.media?.stopScreen();
      return;
    }
    await link.addScreen(track, this.media.screenStream);
    this.sendMediaState();
  }

  onScreenStopped() {
    if (this.sfu) this.sfu.removeScreen();
    this.sendMediaState();
  }

  // ---- reconnect and leaving -------------------------------------------------------------

  /** After a signaling reconnect the server has dropped us from the room: join again. */
  async onWelcome() {
    if (this.state.phase !== 'joined') return;
    const roomId = this.state.roomId;
    this.cleanup();
    this.update({ phase: 'idle' });
    try { await this.join(roomId); } catch { /* error shown */ }
  }

  leave() {
    if (!this.active) return;
    this.socket.send('room-leave', { roomId: this.state.roomId });
    this.cleanup();
    this.update({ phase: 'idle', room: null, callId: null, peerId: null });
  }

  cleanup() {
    clearInterval(this.statsTimer);
    clearTimeout(this.announceTimer);
    this.statsTimer = null;
    this.switchGen += 1;
    for (const e of this.peers.values()) this.dropMesh(e);
    this.peers.clear();
    // Leaving the room (or the socket dropping) ends the SFU session on the server.
    if (this.sfu) { this.sfu.close(); this.sfu = null; }
    if (this.sfuView) { this.sfuView.close(); this.sfuView = null; }
    this.state.activeSpeaker = null; // (the caller's update renders it)
    this.topology = 'mesh';
    // Detached first: closing stops a screen share, which must not send media-state any more.
    const media = this.media;
    this.media = null;
    if (media) media.close();
  }
}
