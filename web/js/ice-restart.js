// ice-restart.js — when a peer connection restarts ICE: at once when its path failed, after a
// grace period when it is only disconnected (it often comes back by itself). Shared by the 1:1
// call's Peer and a room's SfuLink.

export const RESTART_AFTER_DISCONNECTED_MS = 4000;

/**
 * Call on every ICE state change of `pc`: clears `timer` (the one this returned last time) and
 * runs `restart` now, or returns a new timer that runs it if the path stays disconnected.
 */
export function scheduleIceRestart(pc, timer, restart) {
  clearTimeout(timer);
  const ice = pc.iceConnectionState;
  if (ice === 'failed') {
    restart();
    return null;
  }
  if (ice !== 'disconnected') return null;
  return setTimeout(() => {
    if (pc.iceConnectionState === 'disconnected') restart();
  }, RESTART_AFTER_DISCONNECTED_MS);
}
