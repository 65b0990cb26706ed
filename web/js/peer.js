// peer.js — one RTCPeerConnection to one remote party, used by both 1:1 calls and room mesh.
// Owns negotiation with the "perfect negotiation" pattern (the polite side yields on offer
// glare), buffering of ICE candidates that arrive before the remote description, the remote
// camera and screen streams, screen-share renegotiation, and ICE restart when the path fails.
// It never touches the socket: `signal({sdp}|{candidate})` is supplied by its owner.

import { scheduleIceRestart } from './ice-restart.js';

export class Peer extends EventTarget {
  /**
   * @param {RTCConfiguration} config
   * @param {{polite: boolean, signal: (msg: {sdp?: object, candidate?: object|null}) => void, label?: string}} opts
   */
  constructor(config, { polite, signal, label = 'peer' }) {
    super();
    this.pc = new RTCPeerConnection(config);
    this.polite = polite;
    this.signal = signal;
    this.label = label;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.negotiating = false; // set once the first offer/answer may be exchanged
    this.queue = Promise.resolve();
    this.pendingCandidates = [];
    this.mainStream = null;
    this.screenStream = null;
    this.screenSender = null;
    this.closed = false;
    this.restartTimer = null;

    const pc = this.pc;
    pc.onicecandidate = (e) => this.signal({ candidate: e.candidate ? e.candidate.toJSON() : null });
    pc.onnegotiationneeded = () => this.negotiate();
    pc.ontrack = (e) => this.onTrack(e);
    pc.onconnectionstatechange = () => this.onStateChange();
    pc.oniceconnectionstatechange = () => this.onStateChange();
  }

  get state() { return this.pc.connectionState; }

  emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /** Adds the local tracks (or receive-only transceivers when there are none). */
  addLocal(stream, { video = true, answering = false } = {}) {
    const audio = stream.getAudioTracks()[0];
    const cam = stream.getVideoTracks()[0];
    if (audio) this.pc.addTrack(audio, stream);
    else if (!answering) this.pc.addTransceiver('audio', { direction: 'recvonly' });
    if (cam) this.pc.addTrack(cam, stream);
    else if (video && !answering) this.pc.addTransceiver('video', { direction: 'recvonly' });
  }

  /** The offering side: allow negotiationneeded to send offers (the first one included). */
  startOffering() {
    this.negotiating = true;
    this.negotiate();
  }

  negotiate() {
    if (!this.negotiating || this.closed) return;
    this.run(async () => {
      if (this.pc.signalingState !== 'stable') return;
      try {
        this.makingOffer = true;
        await this.pc.setLocalDescription();
        if (this.pc.localDescription.type === 'offer') this.signal({ sdp: this.pc.localDescription.toJSON() });
      } finally {
        this.makingOffer = false;
      }
    });
  }

  /** Serializes every operation on the connection. */
  run(fn) {
    this.queue = this.queue.then(fn).catch((err) => {
      if (!this.closed) this.emit('error', { error: err });
    });
    return this.queue;
  }

  /** The answering side of the first exchange: apply the remote offer, add our tracks, answer. */
  acceptOffer(offer, stream) {
    return this.run(async () => {
      await this.pc.setRemoteDescription(offer);
      this.addLocal(stream, { answering: true });
      await this.pc.setLocalDescription();
      this.signal({ sdp: this.pc.localDescription.toJSON() });
      this.negotiating = true;
      await this.flushCandidates();
    });
  }

  /** Any later description (answer to our offer, renegotiation, ICE restart). */
  handleDescription(desc) {
    return this.run(async () => {
      if (this.closed) return;
      const collision = desc.type === 'offer' && (this.makingOffer || this.pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (desc.type === 'answer' && this.pc.signalingState !== 'have-local-offer') return; // stale
      await this.pc.setRemoteDescription(desc);
      await this.flushCandidates();
      if (desc.type === 'offer') {
        await this.pc.setLocalDescription();
        this.signal({ sdp: this.pc.localDescription.toJSON() });
      }
      this.negotiating = true;
    });
  }

  handleCandidate(candidate) {
    return this.run(async () => {
      if (!this.pc.remoteDescription) {
        this.pendingCandidates.push(candidate);
        return;
      }
      await this.addCandidate(candidate);
    });
  }

  async flushCandidates() {
    const list = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of list) await this.addCandidate(c);
  }

  async addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate || undefined);
    } catch (err) {
      if (!this.ignoreOffer) console.warn(`[${this.label}] addIceCandidate`, err);
    }
  }

  onTrack(e) {
    const stream = e.streams[0] || new MediaStream([e.track]);
    if (!this.mainStream || stream.id === this.mainStream.id) {
      this.mainStream = stream;
      this.emit('remote-stream', { stream });
    } else {
      // A second stream from the same peer is its screen share.
      this.screenStream = stream;
      const ended = () => {
        if (this.screenStream === stream && stream.getVideoTracks().every((t) => t.readyState === 'ended' || t.muted)) {
          this.screenStream = null;
          this.emit('remote-screen', { stream: null });
        }
      };
      stream.onremovetrack = ended;
      e.track.addEventListener('mute', () => setTimeout(ended, 500));
      e.track.addEventListener('unmute', () => {
        if (this.screenStream !== stream) {
          this.screenStream = stream;
          this.emit('remote-screen', { stream });
        }
      });
      this.emit('remote-screen', { stream });
    }
  }

  onStateChange() {
    this.emit('state', { state: this.pc.connectionState, ice: this.pc.iceConnectionState });
    this.restartTimer = scheduleIceRestart(this.pc, this.restartTimer, () => this.restartIce());
  }

  /** Asks for new ICE credentials; the offer goes out through negotiationneeded. */
  restartIce() {
    if (this.closed || !this.negotiating) return;
    this.emit('restarting');
    this.pc.restartIce();
  }

  /** Puts a new track on the sender of that kind (camera switch): no renegotiation. */
  async replaceTrack(kind, track) {
    const sender = this.pc.getSenders().find((s) => s !== this.screenSender && s.track && s.track.kind === kind)
      || this.pc.getTransceivers().find((t) => t.sender !== this.screenSender && t.receiver.track.kind === kind)?.sender;
    if (sender) await sender.replaceTrack(track);
  }

  /** Screen share: a second video stream, added with renegotiation. */
  addScreen(track, stream) {
    if (this.screenSender) return this.screenSender.replaceTrack(track);
    this.screenSender = this.pc.addTrack(track, stream);
    return Promise.resolve();
  }

  removeScreen() {
    if (!this.screenSender) return;
    try { this.pc.removeTrack(this.screenSender); } catch { /* closed */ }
    this.screenSender = null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    this.pc.close();
    this.emit('closed');
  }
}
