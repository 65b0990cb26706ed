// sfu-link.js — a room participant's one RTCPeerConnection to the server's SFU (the reserved
// peer "sfu" of the room's call). Owns: publishing the local audio, camera (in simulcast
// layers, simulcast.js; turned on and off by the SFU's `sfu-layers`) and screen share (one
// encoding) on send-only transceivers of our own (never addTrack, which could take over a
// transceiver the SFU offered for someone else's track), our offers and the SFU's offers handled one at a time
// (an SFU offer that crosses ours is ignored: the SFU offers again after answering), rolling
// back an offer the server refused, trickling our candidates (the SFU is ICE-lite and trickles
// none), ICE restart when the path fails, the forwarded tracks grouped by publisher (stream id
// = the publisher's peerId; its first video track is the camera, a second one its screen), and
// per-publisher stats. It never touches the socket: `signal({candidate})` and `sendSdp(sdp)`
// (a promise: the ack, or the server's error) are supplied by its owner.

import { scheduleIceRestart } from './ice-restart.js';
import { addSimulcastCamera, applyLayers, keepResolution } from './simulcast.js';
import { GroupedStatsSampler } from './stats.js';

function sameTracks(stream, tracks) {
  if (!stream) return tracks.length === 0;
  const have = stream.getTracks();
  return have.length === tracks.length && tracks.every((t) => have.includes(t));
}

export class SfuLink extends EventTarget {
  /**
   * @param {RTCConfiguration} config
   * @param {{signal: (m: {candidate: object|null}) => void, sendSdp: (sdp: object) => Promise<unknown>, label?: string}} opts
   */
  constructor(config, { signal, sendSdp, label = 'sfu' }) {
    super();
    this.pc = new RTCPeerConnection(config);
    this.signal = signal;
    this.sendSdp = sendSdp;
    this.label = label;
    this.queue = Promise.resolve();
    this.own = new Set(); // transceivers we publish on
    this.owner = new WeakMap(); // transceiver -> publisher peerId (its stream id)
    this.publishers = new Map(); // peerId -> {audio, camera, screen, stream, screenStream}
    this.screenTransceiver = null;
    this.started = false;
    this.closed = false;
    this.restartTimer = null;
    this.sampler = new GroupedStatsSampler(this.pc, (trackId) => this.ownerOfTrack(trackId));

    const pc = this.pc;
    pc.onicecandidate = (e) => this.signal({ candidate: e.candidate ? e.candidate.toJSON() : null });
    pc.onnegotiationneeded = () => this.negotiate();
    pc.ontrack = (e) => this.onTrack(e);
    pc.onconnectionstatechange = () => this.onStateChange();
    pc.oniceconnectionstatechange = () => this.onStateChange();
  }

  get state() { return this.pc.connectionState; }

  emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /** Serializes every operation on the connection. */
  run(fn) {
    this.queue = this.queue.then(fn).catch((err) => {
      if (!this.closed) this.emit('error', { error: err });
    });
    return this.queue;
  }

  /** Publishes the local audio and camera and sends the first offer. */
  publish(stream) {
    const audio = stream.getAudioTracks()[0];
    const cam = stream.getVideoTracks()[0];
    if (audio) this.own.add(this.pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] }));
    if (cam) {
      const camera = addSimulcastCamera(this.pc, cam, stream);
      this.own.add(camera);
      this.run(() => keepResolution(camera.sender)); // queued before the first offer
    }
    // Nothing to send: an offer still needs a media section (the SFU adds the others' later).
    if (!audio && !cam) this.own.add(this.pc.addTransceiver('audio', { direction: 'recvonly' }));
    this.started = true;
    this.negotiate();
  }

  /** Our offer (the first one, a screen track added or removed, an ICE restart). */
  negotiate() {
    if (!this.started || this.closed) return;
    this.run(async () => {
      if (this.closed || this.pc.signalingState !== 'stable') return; // negotiationneeded fires again once stable
      await this.pc.setLocalDescription();
      const offer = this.pc.localDescription.toJSON();
      this.send(offer);
    });
  }

  send(sdp) {
    Promise.resolve(this.sendSdp(sdp)).catch((err) => {
      if (this.closed) return;
      console.warn(`[${this.label}] the server refused our ${sdp.type}: ${err.code || ''} ${err.message}`);
      if (err.code !== 'sdp_rejected') return;
      if (sdp.type === 'offer') {
        // Nothing changed on the server's side: take our offer back.
        this.run(async () => {
          if (this.pc.signalingState === 'have-local-offer' && this.pc.localDescription?.sdp === sdp.sdp) {
            await this.pc.setLocalDescription({ type: 'rollback' });
          }
        });
      }
      this.emit('rejected', { type: sdp.type, code: err.code, message: err.message });
    });
  }

  /** An SDP from the SFU: the answer to our offer, or an offer of its own. */
  handleDescription(desc) {
    return this.run(async () => {
      if (this.closed) return;
      if (desc.type === 'offer') {
        // Crossed our own offer: the SFU drops its offer when it gets ours, and offers again.
        if (this.pc.signalingState === 'have-local-offer') return;
        await this.pc.setRemoteDescription(desc);
        await this.pc.setLocalDescription();
        this.send(this.pc.localDescription.toJSON());
      } else {
        if (this.pc.signalingState !== 'have-local-offer') return; // stale
        await this.pc.setRemoteDescription(desc);
      }
      this.refresh();
    });
  }

  handleCandidate(candidate) {
    return this.run(async () => {
      if (this.closed || !this.pc.remoteDescription) return;
      try { await this.pc.addIceCandidate(candidate || undefined); } catch (err) { console.warn(`[${this.label}] addIceCandidate`, err); }
    });
  }

  onTrack(e) {
    if (this.own.has(e.transceiver)) return;
    const id = e.streams[0] && e.streams[0].id;
    if (!id) return;
    this.owner.set(e.transceiver, id);
    e.track.addEventListener('ended', () => this.refresh());
    e.track.addEventListener('mute', () => this.emit('tracks'));
    e.track.addEventListener('unmute', () => this.emit('tracks'));
    this.refresh();
  }

  /** Rebuilds the publisher map from the live transceivers; emits 'tracks' when it changed. */
  refresh() {
    if (this.closed) return;
    const found = new Map();
    for (const t of this.pc.getTransceivers()) {
      const id = this.owner.get(t);
      if (!id || t.direction === 'stopped' || t.currentDirection === 'stopped' || t.currentDirection === 'inactive') continue;
      const track = t.receiver.track;
      if (!track || track.readyState === 'ended') continue;
      if (!found.has(id)) found.set(id, { audio: null, videos: [] });
      const p = found.get(id);
      if (track.kind === 'audio') p.audio = p.audio || track;
      else p.videos.push(track);
    }
    let changed = found.size !== this.publishers.size;
    const next = new Map();
    for (const [id, p] of found) {
      const prev = this.publishers.get(id);
      const camera = p.videos[0] || null;
      const screen = p.videos[1] || null;
      const main = [p.audio, camera].filter(Boolean);
      const stream = prev && sameTracks(prev.stream, main) ? prev.stream : (main.length ? new MediaStream(main) : null);
      const screenStream = prev && sameTracks(prev.screenStream, screen ? [screen] : []) ? prev.screenStream : (screen ? new MediaStream([screen]) : null);
      if (!prev || prev.stream !== stream || prev.screenStream !== screenStream) changed = true;
      next.set(id, { audio: p.audio, camera, screen, stream, screenStream });
    }
    this.publishers = next;
    if (changed) this.emit('tracks');
  }

  /** Which publisher a received track belongs to, and as what ('audio' | 'camera' | 'screen'). */
  trackOwners() {
    const out = {};
    for (const [peerId, p] of this.publishers) {
      if (p.audio) out[p.audio.id] = { peerId, role: 'audio' };
      if (p.camera) out[p.camera.id] = { peerId, role: 'camera' };
      if (p.screen) out[p.screen.id] = { peerId, role: 'screen' };
    }
    return out;
  }

  ownerOfTrack(trackId) {
    for (const [peerId, p] of this.publishers) {
      if ([p.audio, p.camera, p.screen].some((t) => t && t.id === trackId)) return peerId;
    }
    return null;
  }

  /** Frames decoded so far of `peerId`'s camera (0 while nothing arrived). */
  async cameraFramesDecoded(peerId) {
    const p = this.publishers.get(peerId);
    if (!p || !p.camera || this.closed) return 0;
    const t = this.pc.getTransceivers().find((x) => x.receiver.track === p.camera);
    if (!t) return 0;
    let frames = 0;
    (await t.receiver.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = Math.max(frames, s.framesDecoded || 0); });
    return frames;
  }

  /** Map peerId → stats summary of what we receive from that publisher. */
  sampleByPeer() { return this.sampler.sample(); }

  /** The SFU's `sfu-layers`: which simulcast layers of our track on transceiver `mid` somebody receives. */
  setLayers(mid, layers) {
    return this.run(async () => {
      if (this.closed || !Array.isArray(layers)) return;
      const t = this.pc.getTransceivers().find((x) => this.own.has(x) && x.mid === mid);
      if (!t) {
        console.warn(`[${this.label}] sfu-layers for mid ${mid}, which we do not publish on`);
        return;
      }
      const active = await applyLayers(t.sender, layers);
      console.info(`[${this.label}] mid ${mid}: layers ${active.join(',') || 'none'} on`);
    });
  }

  /** Screen share: a second video track on a send-only transceiver (reused on the next share). */
  addScreen(track, stream) {
    return this.run(async () => {
      if (this.closed) return;
      const t = this.screenTransceiver;
      if (t && t.currentDirection !== 'stopped' && t.direction !== 'stopped') {
        await t.sender.replaceTrack(track); // (the SFU names the stream itself: no setStreams)
        t.direction = 'sendonly'; // negotiationneeded: the offer goes out
      } else {
        this.screenTransceiver = this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
        this.own.add(this.screenTransceiver);
      }
    });
  }

  removeScreen() {
    return this.run(async () => {
      const t = this.screenTransceiver;
      if (this.closed || !t || t.direction === 'stopped') return;
      await t.sender.replaceTrack(null);
      t.direction = 'inactive'; // negotiationneeded: the offer goes out
    });
  }

  onStateChange() {
    if (this.closed) return;
    this.emit('state', { state: this.pc.connectionState, ice: this.pc.iceConnectionState });
    this.restartTimer = scheduleIceRestart(this.pc, this.restartTimer, () => this.restartIce());
  }

  /** New ICE credentials; the offer goes out through negotiationneeded. */
  restartIce() {
    if (this.closed || !this.started) return;
    this.emit('restarting');
    this.pc.restartIce();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    this.pc.close();
    this.publishers = new Map();
    this.emit('closed');
  }
}
