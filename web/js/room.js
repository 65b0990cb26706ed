// room.js — the group room controller (mesh): joining with `room-join`, one Peer per other
// participant keyed by peerId (the newcomer offers to everyone already there, existing members
// answer), routing of `call-sdp-update` / `ice-candidate` by `fromPeer`, per-peer media state
// and stats, and leaving. No DOM: the room view renders `state` on every 'change' event.

import { rtcConfiguration } from './ice.js';
import { LocalMedia } from './media.js';
import { Peer } from './peer.js';
import { StatsSampler, grade } from './stats.js';

const STATS_EVERY_MS = 4000;

export class RoomController extends EventTarget {
  constructor(socket) {
    super();
    this.socket = socket;
    this.peers = new Map(); // peerId -> {peerId, userId, peer, sampler, stream, stats, quality, state, media}
    this.media = null;
    this.config = null;
    this.statsTimer = null;
    this.state = { phase: 'idle', room: null, roomId: null, callId: null, peerId: null, error: null, warning: null, local: {} };
  }

  get active() { return this.state.phase === 'joining' || this.state.phase === 'joined'; }

  update(patch = {}) {
    Object.assign(this.state, patch);
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }));
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
      const ack = await this.socket.request('room-join', { roomId });
      this.update({ phase: 'joined', room: ack.room, callId: ack.callId, peerId: ack.peerId, local: this.localFlags() });
      // The newcomer offers to everyone already in the room.
      for (const p of ack.peers || []) this.addPeer(p.peerId, p.userId, false);
      this.statsTimer = setInterval(() => this.collectStats(), STATS_EVERY_MS);
      this.sendMediaState();
    } catch (err) {
      this.cleanup();
      const message = err.code === 'room_full' || err.status === 409 ? `This room is full. ${err.message}` : err.message;
      this.update({ phase: 'idle', error: message });
      throw err;
    }
  }

  localFlags() {
    const m = this.media;
    return { audio: m ? m.audioOn : false, video: m ? m.videoOn : false, stream: m ? m.stream : null };
  }

  addPeer(peerId, userId, polite) {
    if (this.peers.has(peerId)) return this.peers.get(peerId);
    const peer = new Peer(this.config, {
      polite,
      label: `room:${peerId}`,
      signal: ({ sdp, candidate }) => {
        const payload = { callId: this.state.callId, to: peerId };
        if (sdp) this.socket.send('call-sdp-update', { ...payload, sdp });
        else this.socket.send('ice-candidate', { ...payload, candidate });
      },
    });
    const entry = { peerId, userId, peer, sampler: new StatsSampler(peer.pc), stream: null, stats: null, quality: 'unknown', state: 'new', media: { audio: true, video: true } };
    this.peers.set(peerId, entry);
    peer.addEventListener('remote-stream', (e) => { entry.stream = e.detail.stream; this.update(); });
    peer.addEventListener('state', (e) => { entry.state = e.detail.state; this.update(); });
    peer.addEventListener('error', (e) => console.warn('room peer error', peerId, e.detail.error));
    if (!polite) {
      peer.addLocal(this.media.stream, { video: true });
      peer.startOffering();
    }
    this.update();
    return entry;
  }

  removePeer(peerId) {
    const entry = this.peers.get(peerId);
    if (!entry) return;
    entry.peer.close();
    this.peers.delete(peerId);
    this.update();
  }

  /** Routes one /rtc message. Returns true when it was about this room. */
  handle(msg) {
    if (!this.active) return false;
    switch (msg.type) {
      case 'room-peer-joined':
        if (msg.roomId !== this.state.roomId || msg.peerId === this.state.peerId) return false;
        // Wait for its offer; a tile shows it is coming.
        this.pendingJoin(msg.peerId, msg.userId);
        return true;
      case 'room-peer-left':
        if (msg.roomId !== this.state.roomId) return false;
        this.removePeer(msg.peerId);
        return true;
      case 'call-sdp-update':
      case 'ice-candidate': {
        if (msg.callId !== this.state.callId || !msg.fromPeer) return false;
        let entry = this.peers.get(msg.fromPeer);
        if (msg.type === 'call-sdp-update') {
          if (!entry || (entry.placeholder && msg.sdp.type === 'offer')) {
            entry = this.answerPeer(msg.fromPeer, msg.from, msg.sdp);
          } else {
            entry.peer.handleDescription(msg.sdp);
          }
        } else if (entry) {
          entry.peer.handleCandidate(msg.candidate);
        }
        return true;
      }
      case 'media-state': {
        if (msg.callId !== this.state.callId) return false;
        for (const e of this.peers.values()) {
          if (e.userId === msg.from && (!msg.fromPeer || msg.fromPeer === e.peerId)) {
            e.media = { ...e.media, audio: msg.audio ?? e.media.audio, video: msg.video ?? e.media.video };
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

  pendingJoin(peerId, userId) {
    if (this.peers.has(peerId)) return;
    const peer = new Peer(this.config, {
      polite: true,
      label: `room:${peerId}`,
      signal: ({ sdp, candidate }) => {
        const payload = { callId: this.state.callId, to: peerId };
        if (sdp) this.socket.send('call-sdp-update', { ...payload, sdp });
        else this.socket.send('ice-candidate', { ...payload, candidate });
      },
    });
    peer.close();
    this.peers.set(peerId, { peerId, userId, peer, placeholder: true, sampler: null, stream: null, stats: null, quality: 'unknown', state: 'waiting', media: { audio: true, video: true } });
    this.update();
  }

  answerPeer(peerId, userId, offer) {
    const old = this.peers.get(peerId);
    if (old) this.peers.delete(peerId);
    const entry = this.addPeer(peerId, userId || (old && old.userId), true);
    entry.peer.acceptOffer(offer, this.media.stream);
    return entry;
  }

  async collectStats() {
    const reports = [];
    for (const e of this.peers.values()) {
      if (!e.sampler || e.peer.closed) continue;
      try {
        e.stats = await e.sampler.sample();
        e.quality = grade(e.stats);
        if (e.stats.connectionState === 'connected') reports.push({ peerId: e.peerId, userId: e.userId, ...e.stats });
      } catch { /* closed */ }
    }
    this.update();
    if (reports.length && this.state.callId) {
      const avg = (k) => {
        const v = reports.map((r) => r[k]).filter((x) => typeof x === 'number');
        return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
      };
      this.socket.send('call-stats', {
        callId: this.state.callId,
        stats: { rttMs: avg('rttMs'), jitterMs: avg('jitterMs'), packetLoss: avg('packetLoss'), bitrateKbps: avg('bitrateKbps'), peers: reports },
      });
    }
  }

  sendMediaState() {
    if (!this.state.callId || !this.media) return;
    const l = this.localFlags();
    this.update({ local: l });
    this.socket.send('media-state', { callId: this.state.callId, audio: l.audio, video: l.video });
  }

  toggleAudio() { if (this.media) { this.media.setAudio(!this.media.audioOn); this.sendMediaState(); } }
  toggleVideo() { if (this.media) { this.media.setVideo(!this.media.videoOn); this.sendMediaState(); } }

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
    this.statsTimer = null;
    for (const e of this.peers.values()) e.peer.close();
    this.peers.clear();
    if (this.media) this.media.close();
    this.media = null;
  }
}
