// settings.js — the user's preferences, persisted in localStorage: relay-only ICE, preferred
// camera and microphone, a cap on what rooms through the SFU send us (kbit/s, null: none).
// Emits 'change' when one is set.

const KEY = 'signalbox.settings';
const DEFAULTS = { relayOnly: false, cameraId: '', micId: '', receiveLimitKbps: null };

class Settings extends EventTarget {
  constructor() {
    super();
    let stored = {};
    try { stored = JSON.parse(localStorage.getItem(KEY) || '{}') || {}; } catch { stored = {}; }
    this.values = { ...DEFAULTS, ...stored };
  }

  get(name) { return this.values[name]; }

  set(name, value) {
    this.values[name] = value;
    try { localStorage.setItem(KEY, JSON.stringify(this.values)); } catch { /* ignore */ }
    this.dispatchEvent(new CustomEvent('change', { detail: { name, value } }));
  }
}

export const settings = new Settings();
