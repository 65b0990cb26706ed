// media.js — the local camera, microphone and screen: acquiring them with readable errors
// (denied permission, no devices, insecure page, device busy), listing devices, muting by
// track.enabled, switching camera and starting/stopping a screen share. Peers get a new camera
// track through the `replace` callback of switchCamera; nothing here talks to the network.

import { settings } from './settings.js';

export class MediaError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'MediaError';
    this.code = code;
  }
}

/** True when this page may use the camera at all (HTTPS or localhost). */
export function mediaAvailable() {
  return window.isSecureContext && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

export function explain(err, what = 'camera and microphone') {
  if (err instanceof MediaError) return err;
  const name = err && err.name;
  if (!mediaAvailable()) {
    return new MediaError('insecure', `This page is not served over HTTPS, so the browser blocks the ${what}. See the notice at the top of the page.`);
  }
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return new MediaError('denied', `Permission to use the ${what} was denied. Allow it in your browser's site settings (the icon next to the address bar) and try again.`);
    case 'NotFoundError':
    case 'OverconstrainedError':
      return new MediaError('no-device', `No ${what} was found. Plug one in, or check that it is enabled.`);
    case 'NotReadableError':
    case 'AbortError':
      return new MediaError('busy', `The ${what} could not be started: another application may be using it.`);
    default:
      return new MediaError('unknown', `The ${what} could not be started (${name || err}).`);
  }
}

export async function listDevices() {
  if (!mediaAvailable()) return { cameras: [], mics: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  const label = (d, i, kind) => d.label || `${kind} ${i + 1}`;
  return {
    cameras: all.filter((d) => d.kind === 'videoinput').map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Camera') })),
    mics: all.filter((d) => d.kind === 'audioinput').map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Microphone') })),
  };
}

function constraint(deviceId) {
  return deviceId ? { deviceId: { ideal: deviceId } } : true;
}

/**
 * The local stream of one call or room. `warning` is set when we had to fall back (e.g. no
 * camera: audio only). Always holds one MediaStream (possibly with no tracks: receive-only).
 */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream();
    this.screenTrack = null;
    this.screenStream = null;
    this.warning = null;
  }

  get audioTrack() { return this.stream.getAudioTracks()[0] || null; }
  get videoTrack() { return this.stream.getVideoTracks()[0] || null; }
  get audioOn() { return !!(this.audioTrack && this.audioTrack.enabled); }
  get videoOn() { return !!(this.videoTrack && this.videoTrack.enabled); }
  get cameraLabel() { return this.videoTrack ? this.videoTrack.label : ''; }

  /** Opens the microphone (and camera when `video`), falling back gracefully. Throws MediaError when nothing at all is usable. */
  async open({ video }) {
    if (!mediaAvailable()) throw explain(new Error('insecure'));
    const audio = constraint(settings.get('micId'));
    const cam = video ? constraint(settings.get('cameraId')) : false;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio, video: cam });
      return this.stream;
    } catch (err) {
      const first = explain(err, video ? 'camera and microphone' : 'microphone');
      if (first.code === 'denied' || first.code === 'insecure') throw first;
      // One of the two devices is missing or busy: try each alone.
      const tries = video ? [{ audio, video: false }, { audio: false, video: cam }] : [];
      for (const c of tries) {
        try {
          this.stream = await navigator.mediaDevices.getUserMedia(c);
          this.warning = c.video ? 'No microphone could be used: the other side will not hear you.' : 'No camera could be used: continuing with audio only.';
          return this.stream;
        } catch { /* try the next */ }
      }
      throw first;
    }
  }

  setAudio(on) {
    if (this.audioTrack) this.audioTrack.enabled = on;
    this.dispatchEvent(new CustomEvent('state'));
  }

  setVideo(on) {
    if (this.videoTrack) this.videoTrack.enabled = on;
    this.dispatchEvent(new CustomEvent('state'));
  }

  /**
   * Switches to another camera. `replace(kind, track)` puts the new track on every sender
   * (RTCRtpSender.replaceTrack: no renegotiation); the old camera is stopped only after that,
   * since a sender whose track ended before the swap may never encode the new one.
   */
  async switchCamera(deviceId, replace = async () => {}) {
    let fresh;
    try {
      fresh = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: deviceId } } });
    } catch (err) {
      throw explain(err, 'camera');
    }
    const track = fresh.getVideoTracks()[0];
    const old = this.videoTrack;
    if (old) track.enabled = old.enabled;
    await replace('video', track);
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(track);
    settings.set('cameraId', deviceId);
    this.dispatchEvent(new CustomEvent('state'));
    return track;
  }

  async startScreen() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      throw new MediaError('unsupported', 'This browser cannot share the screen.');
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      if (err && err.name === 'NotAllowedError') throw new MediaError('denied', 'Screen sharing was cancelled or not allowed.');
      throw explain(err, 'screen');
    }
    this.screenStream = stream;
    this.screenTrack = stream.getVideoTracks()[0];
    // The browser's own "Stop sharing" button ends the track.
    this.screenTrack.addEventListener('ended', () => this.stopScreen());
    this.dispatchEvent(new CustomEvent('screen', { detail: { on: true } }));
    return this.screenTrack;
  }

  stopScreen() {
    if (!this.screenTrack) return;
    this.screenTrack.stop();
    this.screenTrack = null;
    this.screenStream = null;
    this.dispatchEvent(new CustomEvent('screen', { detail: { on: false } }));
  }

  close() {
    this.stopScreen();
    for (const t of this.stream.getTracks()) t.stop();
    this.stream = new MediaStream();
  }
}
