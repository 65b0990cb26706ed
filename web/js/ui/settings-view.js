// ui/settings-view.js — the Settings tab: relay-only ICE, the preferred camera and microphone
// (device lists from enumerateDevices; labels appear once the browser has granted access), and
// the receive bandwidth limit of rooms through the server (empty: none).

import { listDevices, mediaAvailable } from '../media.js';
import { settings } from '../settings.js';
import { $, el } from './dom.js';

export function initSettingsView() {
  const relay = $('#set-relay');
  relay.checked = !!settings.get('relayOnly');
  relay.addEventListener('change', () => settings.set('relayOnly', relay.checked));
  $('#set-camera').addEventListener('change', (e) => settings.set('cameraId', e.target.value));
  $('#set-mic').addEventListener('change', (e) => settings.set('micId', e.target.value));
  $('#set-devices').addEventListener('click', () => refresh(true));
  const limit = $('#set-receive-limit');
  limit.value = settings.get('receiveLimitKbps') ?? '';
  limit.addEventListener('change', () => {
    const kbps = Math.round(Number(limit.value));
    settings.set('receiveLimitKbps', limit.value.trim() && kbps > 0 ? kbps : null);
    limit.value = settings.get('receiveLimitKbps') ?? '';
  });

  async function refresh(ask = false) {
    const note = $('#devices-note');
    if (!mediaAvailable()) {
      note.textContent = 'Devices are unavailable on this page (not HTTPS).';
      return;
    }
    if (ask) {
      try {
        const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        s.getTracks().forEach((t) => t.stop());
      } catch { /* the lists show what is visible without permission */ }
    }
    const { cameras, mics } = await listDevices();
    const fill = (sel, list, chosen, none) => {
      sel.replaceChildren(el('option', { value: '', text: 'System default' }),
        ...list.map((d) => el('option', { value: d.id, text: d.label, selected: d.id === chosen })));
      sel.disabled = list.length === 0;
      if (!list.length) sel.replaceChildren(el('option', { value: '', text: none }));
    };
    fill($('#set-camera'), cameras, settings.get('cameraId'), 'No camera found');
    fill($('#set-mic'), mics, settings.get('micId'), 'No microphone found');
    note.textContent = cameras.length + mics.length === 0 ? 'No camera or microphone found.' : '';
  }
  return { refresh };
}
