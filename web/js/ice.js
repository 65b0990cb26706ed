// ice.js — the RTCConfiguration for a call: fresh ICE servers and TURN credentials from
// GET /ice-config before every call (credentials expire), and relay-only when the setting says so.

import { api } from './api.js';
import { settings } from './settings.js';

export async function rtcConfiguration() {
  const cfg = await api.iceConfig();
  return {
    iceServers: cfg.iceServers || [],
    iceTransportPolicy: settings.get('relayOnly') ? 'relay' : 'all',
  };
}
