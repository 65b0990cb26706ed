// call.js — the 1:1 call controller: one call at a time, from dialing or ringing to the end.
// Owns the call's phase, the Peer, the LocalMedia, buffering of signals sent before the call id
// is known, remote media state, periodic `call-stats`, and resuming after a signaling reconnect
// (ICE restart). No DOM: the call view renders `state` on every 'change' event.

import { rtcConfiguration } from './ice.js';
import { LocalMedia } from './media.js';
import { Peer } from './peer.js';
import { StatsSampler, grade } from './stats.js';

const STATS_EVERY_MS = 4000;

const END_TEXT = {
  hangup: (who) => `${who} hung up.`,
  rejected: (who) => `${who} declined the call.`,
  timeout: (who) => `${who} did not answer.`,
  disconnect: () => 'The call ended because the connection was lost.',
  cancelled: (who) => `${who} cancelled the call.`,
  unavailable: (who) => `${who} is not online right now. Try again later.`,
};

function initialState() {
  return {
    phase: 'idle', // idle | outgoing | incoming | connecting | active | ended
    callId: null,
    direction: null, // 'out' | 'in'
    peerUserId: null,
    peerName: null,
    callType: 'video',
    answeredAt: null,
    endMessage: null,
    warning: null,
    remote: { audio: true, video: true, screen: false, camera: null },
    remoteStream: null,
    remoteScreen: null,
    localStream: null,
    local: { audio: true, video: true, screen: false },
    media: 'new', // RTCPeerConnection state
    stats: null,
    quality: 'unknown',
    signaling: 'open',
    restarting: false,
  };
}

export class CallController extends EventTarget {
  constructor(socket) {
    super();
    this.socket = socket;
    this.state = initialState();
    this.peer = null;
    this.media = null;
    this.offer = null; // the incoming offer while ringing
    this.early = []; // signals to send once the call id is known
    this.earlyCandidates = []; // candidates received before the Peer exists
    this.statsTimer = null;
    this.sampler = null;
  }

  get busy() { return this.state.phase !== 'idle' && this.state.phase !== 'ended'; }

  update(patch) {
    Object.assign(this.state, patch);
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }));
  }

  who() { return this.state.peerName || this.state.peerUserId || 'The other side'; }

  // ---- outgoing ------------------------------------------------------------------------

  async start(to, callType) {
    if (this.busy) throw new Error('You are already in a call.');
    this.reset();
    this.update({ phase: 'outgoing', direction: 'out', peerUserId: to, peerName: to, callType, endMessage: null });
    try {
      const config = await rtcConfiguration();
      await this.openMedia(callType);
      if (this.state.phase !== 'outgoing') return; // cancelled meanwhile
      this.createPeer(config, false);
      this.peer.addLocal(this.media.stream, { video: callType === 'video' });
      this.peer.startOffering();
    } catch (err) {
      this.finish(err.message || String(err));
    }
  }

  // ---- incoming ------------------------------------------------------------------------

  onInvite(msg) {
    if (this.busy) {
      if (msg.callId !== this.state.callId) this.socket.send('call-reject', { callId: msg.callId, reason: 'busy' });
      return;
    }
    this.reset();
    this.offer = msg.sdp || null;
    this.update({
      phase: 'incoming', direction: 'in', callId: msg.callId, peerUserId: msg.from,
      peerName: msg.fromName || msg.from, callType: msg.callType || 'video', endMessage: null,
    });
  }

  async accept() {
    if (this.state.phase !== 'incoming') return;
    const { callId } = this.state;
    this.update({ phase: 'connecting' });
    try {
      const config = await rtcConfiguration();
      await this.openMedia(this.state.callType, { fallbackReceiveOnly: true });
      await this.socket.request('call-accept', { callId });
      if (this.state.callId !== callId || this.state.phase !== 'connecting') return;
      this.createPeer(config, true);
      if (this.offer) {
        await this.peer.acceptOffer(this.offer, this.media.stream);
      } else {
        // The caller sends its offer later (call-sdp-update); we answer it then.
        this.peer.addLocal(this.media.stream, { video: this.state.callType === 'video' });
      }
      for (const c of this.earlyCandidates) this.peer.handleCandidate(c);
      this.earlyCandidates = [];
      this.sendMediaState();
    } catch (err) {
      if (err.code === 'call_ended' || err.code === 'not_found') this.finish('This call has already ended.');
      else this.finish(err.message || String(err));
    }
  }

  decline() {
    if (this.state.phase !== 'incoming') return;
    this.socket.send('call-reject', { callId: this.state.callId, reason: 'declined' });
    this.finish(null);
  }

  // ---- during the call -----------------------------------------------------------------

  async openMedia(callType, { fallbackReceiveOnly = false } = {}) {
    this.media = new LocalMedia();
    try {
      await this.media.open({ video: callType === 'video' });
    } catch (err) {
      if (!fallbackReceiveOnly || err.code === 'insecure') throw err;
      this.update({ warning: `${err.message} You can still see and hear the other side.` });
    }
    if (this.media.warning) this.update({ warning: this.media.warning });
    this.media.addEventListener('screen', (e) => { if (!e.detail.on) this.stopScreen(); });
    this.update({ localStream: this.media.stream, local: this.localFlags() });
  }

  localFlags() {
    const m = this.media;
    return { audio: m ? m.audioOn : false, video: m ? m.videoOn : false, screen: !!(m && m.screenTrack), camera: m ? m.cameraLabel : '' };
  }

  createPeer(config, polite) {
    const peer = new Peer(config, { polite, label: 'call', signal: (m) => this.signal(m) });
    this.peer = peer;
    peer.addEventListener('remote-stream', (e) => this.update({ remoteStream: e.detail.stream }));
    peer.addEventListener('remote-screen', (e) => this.update({ remoteScreen: e.detail.stream }));
    peer.addEventListener('restarting', () => this.update({ restarting: true }));
    peer.addEventListener('error', (e) => console.warn('peer error', e.detail.error));
    peer.addEventListener('state', (e) => {
      const { state } = e.detail;
      const patch = { media: state };
      if (state === 'connected') {
        patch.restarting = false;
        if (this.state.phase === 'connecting' || this.state.phase === 'outgoing') {
          patch.phase = 'active';
          patch.answeredAt = this.state.answeredAt || Date.now();
        }
      }
      this.update(patch);
    });
    this.sampler = new StatsSampler(peer.pc);
    clearInterval(this.statsTimer);
    this.statsTimer = setInterval(() => this.collectStats(), STATS_EVERY_MS);
  }

  /** What the Peer wants sent: the first offer rides on call-initiate, the first answer is call-answer. */
  signal({ sdp, candidate }) {
    const { callId } = this.state;
    if (sdp) {
      if (this.state.direction === 'out' && !this.initiated) {
        this.initiated = true;
        this.initiate(sdp);
        return;
      }
      if (this.state.direction === 'in' && !this.answered && sdp.type === 'answer') {
        this.answered = true;
        this.socket.send('call-answer', { callId, sdp });
        return;
      }
      if (!callId) { this.early.push(['call-sdp-update', { sdp }]); return; }
      this.socket.send('call-sdp-update', { callId, sdp });
    } else {
      if (!callId) { this.early.push(['ice-candidate', { candidate }]); return; }
      this.socket.send('ice-candidate', { callId, candidate });
    }
  }

  async initiate(sdp) {
    const { peerUserId: to, callType } = this.state;
    try {
      const ack = await this.socket.request('call-initiate', { to, callType, sdp });
      if (this.state.phase !== 'outgoing') {
        // Hung up while the invite was in flight.
        this.socket.send('call-hangup', { callId: ack.callId });
        return;
      }
      this.update({ callId: ack.callId });
      for (const [type, payload] of this.early) this.socket.send(type, { callId: ack.callId, ...payload });
      this.early = [];
    } catch (err) {
      this.finish(err.code === 'call_glare' ? `${to} is calling you at the same moment: answer their call instead.` : err.message);
    }
  }

  async collectStats() {
    if (!this.sampler || !this.peer || this.peer.closed) return;
    try {
      const stats = await this.sampler.sample();
      this.update({ stats, quality: grade(stats) });
      if (this.state.callId && stats.connectionState === 'connected') {
        this.socket.send('call-stats', { callId: this.state.callId, stats });
      }
    } catch { /* closed meanwhile */ }
  }

  sendMediaState() {
    if (!this.state.callId || !this.media) return;
    const l = this.localFlags();
    this.update({ local: l });
    this.socket.send('media-state', { callId: this.state.callId, audio: l.audio, video: l.video, screen: l.screen, ...(l.camera ? { camera: l.camera } : {}) });
  }

  toggleAudio() {
    if (!this.media) return;
    this.media.setAudio(!this.media.audioOn);
    this.sendMediaState();
  }

  toggleVideo() {
    if (!this.media) return;
    this.media.setVideo(!this.media.videoOn);
    this.sendMediaState();
  }

  async switchCamera(deviceId) {
    if (!this.media) return;
    await this.media.switchCamera(deviceId, async (kind, track) => { if (this.peer) await this.peer.replaceTrack(kind, track); });
    this.update({ localStream: this.media.stream });
    this.sendMediaState();
  }

  async toggleScreen() {
    if (!this.media || !this.peer) return;
    if (this.media.screenTrack) {
      this.media.stopScreen();
      return;
    }
    const track = await this.media.startScreen();
    await this.peer.addScreen(track, this.media.screenStream);
    this.sendMediaState();
  }

  stopScreen() {
    if (this.peer) this.peer.removeScreen();
    this.sendMediaState();
  }

  hangup() {
    const { phase, callId } = this.state;
    if (phase === 'incoming') return this.decline();
    if (!this.busy) return;
    if (callId) this.socket.send('call-hangup', { callId });
    this.finish(null);
  }

  // ---- messages from the server -------------------------------------------------------

  /** Routes one /rtc message. Returns true when it was about this call. */
  handle(msg) {
    if (msg.type === 'call-initiate') { this.onInvite(msg); return true; }
    if (!msg.callId || msg.callId !== this.state.callId) return false;
    switch (msg.type) {
      case 'call-accept':
        if (this.state.phase === 'outgoing') this.update({ phase: 'connecting' });
        break;
      case 'call-answer':
        if (this.state.phase === 'outgoing') this.update({ phase: 'connecting' });
        if (this.peer && msg.sdp) this.peer.handleDescription(msg.sdp);
        break;
      case 'call-sdp-update':
        if (!msg.sdp) break;
        if (!this.peer && this.state.phase === 'incoming') { this.offer = msg.sdp; break; }
        if (this.peer) this.peer.handleDescription(msg.sdp);
        break;
      case 'ice-candidate':
        if (this.peer) this.peer.handleCandidate(msg.candidate);
        else this.earlyCandidates.push(msg.candidate);
        break;
      case 'media-state':
        this.update({ remote: { ...this.state.remote, ...pick(msg, ['audio', 'video', 'screen', 'camera']) } });
        break;
      case 'call-reject':
        this.finish(msg.reason === 'busy' ? `${this.who()} is busy in another call.` : END_TEXT.rejected(this.who()));
        break;
      case 'call-hangup':
        this.finish(END_TEXT.hangup(this.who()));
        break;
      case 'call-accepted-elsewhere':
        this.finish('You answered this call on another device.');
        break;
      case 'call-ended': {
        const text = END_TEXT[msg.reason];
        let message = text ? text(this.who()) : `The call ended (${msg.reason}).`;
        if (msg.reason === 'cancelled' && this.state.direction === 'in') message = `Missed call from ${this.who()}.`;
        if (msg.reason === 'timeout' && this.state.direction === 'in') message = `Missed call from ${this.who()}.`;
        this.finish(message);
        break;
      }
      default:
        return false;
    }
    return true;
  }

  /** After the signaling socket reconnected: resume our call or learn that it ended. */
  onWelcome(welcome) {
    if (!this.busy || !this.state.callId) return;
    const live = (welcome.activeCalls || []).some((c) => c.id === this.state.callId);
    if (!live) {
      if (this.state.phase !== 'outgoing') this.finish(END_TEXT.disconnect());
      return;
    }
    if (!this.peer) return;
    const pc = this.peer.pc;
    if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
      // Our offer may have been lost with the connection: send it again.
      this.socket.send('call-sdp-update', { callId: this.state.callId, sdp: pc.localDescription.toJSON() });
    } else if (!['connected', 'completed'].includes(pc.iceConnectionState)) {
      this.peer.restartIce();
    }
    this.sendMediaState();
  }

  setSignaling(status) {
    this.update({ signaling: status });
  }

  // ---- the end ---------------------------------------------------------------------------

  finish(message) {
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    if (this.peer) this.peer.close();
    if (this.media) this.media.close();
    this.peer = null;
    this.media = null;
    this.sampler = null;
    this.update({ phase: 'ended', endMessage: message, remoteStream: null, remoteScreen: null, localStream: null, restarting: false });
  }

  /** Back to idle after the ended screen was shown. */
  dismiss() {
    if (this.state.phase === 'ended') {
      this.reset();
      this.update({});
    }
  }

  reset() {
    this.state = initialState();
    this.offer = null;
    this.early = [];
    this.earlyCandidates = [];
    this.initiated = false;
    this.answered = false;
  }
}

function pick(obj, keys) {
  const out = {};
  for (const k of keys) if (obj[k] !== undefined && obj[k] !== null) out[k] = obj[k];
  return out;
}
