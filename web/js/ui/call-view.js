// ui/call-view.js — the 1:1 call screen and the ringing dialog: renders CallController.state
// (phase, peer, duration, local/remote video, remote mute badges, screen share, quality) and
// turns button presses into controller calls. Also the dial form on the Call tab.

import { listDevices } from '../media.js';
import { describePath } from '../stats.js';
import { $, el, duration, setStream, setPressed, initials } from './dom.js';
import { notify } from './notice.js';

const PHASE_TEXT = {
  outgoing: 'Calling…',
  incoming: 'Ringing…',
  connecting: 'Connecting…',
  active: 'Connected',
  ended: 'Call ended',
};

export function initCallView(call) {
  let tick = null;
  let lastFocus = null;
  let dismissTimer = null;

  $('#dial-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const type = e.submitter && e.submitter.value === 'audio' ? 'audio' : 'video';
    const to = $('#dial-to').value.trim();
    if (!to) return;
    if (call.busy) { notify('You are already in a call.', 'error'); return; }
    call.start(to, type);
  });

  $('#incoming-accept').addEventListener('click', () => call.accept());
  $('#incoming-decline').addEventListener('click', () => call.decline());
  $('#incoming').addEventListener('keydown', (e) => { if (e.key === 'Escape') call.decline(); });
  $('#btn-hangup').addEventListener('click', () => call.hangup());
  $('#btn-close').addEventListener('click', () => call.dismiss());
  $('#btn-mic').addEventListener('click', () => call.toggleAudio());
  $('#btn-cam').addEventListener('click', () => call.toggleVideo());
  $('#btn-screen').addEventListener('click', async () => {
    try { await call.toggleScreen(); } catch (err) { notify(err.message, 'error'); }
  });
  $('#call-camera').addEventListener('change', async (e) => {
    try { await call.switchCamera(e.target.value); } catch (err) { notify(err.message, 'error'); }
  });
  document.addEventListener('keydown', (e) => {
    if (!call.busy || e.target.closest('input, textarea, select')) return;
    if (e.key === 'm' && e.altKey) { e.preventDefault(); call.toggleAudio(); }
    if (e.key === 'v' && e.altKey) { e.preventDefault(); call.toggleVideo(); }
  });

  async function fillCameras() {
    const sel = $('#call-camera');
    const { cameras } = await listDevices().catch(() => ({ cameras: [] }));
    const current = call.state.localStream?.getVideoTracks()[0]?.getSettings().deviceId;
    sel.replaceChildren(...cameras.map((c) => el('option', { value: c.id, text: c.label, selected: c.id === current })));
    sel.parentElement.hidden = cameras.length < 2;
  }

  function render(s) {
    // Ringing dialog.
    const ringing = s.phase === 'incoming';
    const dlg = $('#incoming');
    if (ringing && dlg.hidden) {
      lastFocus = document.activeElement;
      $('#incoming-title').textContent = `${s.peerName} is calling`;
      $('#incoming-type').textContent = s.callType === 'audio' ? 'Audio call' : 'Video call';
      dlg.hidden = false;
      $('#incoming-accept').focus();
    } else if (!ringing && !dlg.hidden) {
      dlg.hidden = true;
      lastFocus?.focus?.();
    }

    // Call screen.
    const screen = $('#call-screen');
    const shown = ['outgoing', 'connecting', 'active', 'ended'].includes(s.phase);
    const wasHidden = screen.hidden;
    screen.hidden = !shown;
    screen.dataset.phase = s.phase;
    document.body.style.overflow = shown ? 'hidden' : '';
    if (!shown) {
      clearInterval(tick); tick = null;
      return;
    }
    if (wasHidden) {
      $('#btn-hangup').focus();
      fillCameras();
    }
    $('#call-peer').textContent = s.peerName || s.peerUserId || '';
    let stateText = PHASE_TEXT[s.phase] || s.phase;
    if (s.phase === 'outgoing' && s.callId) stateText = `Ringing ${s.peerName}…`;
    if (s.phase === 'active' && (s.restarting || s.media === 'disconnected')) stateText = 'Reconnecting media…';
    if (s.signaling === 'reconnecting' && s.phase !== 'ended') stateText = 'Connection to the server lost — reconnecting…';
    if (s.phase === 'ended' && s.endMessage) stateText = s.endMessage;
    $('#call-state').textContent = stateText;
    $('#call-state').dataset.phase = s.phase;

    const warn = $('#call-warning');
    warn.textContent = s.warning || '';
    warn.hidden = !s.warning || s.phase === 'ended';

    // Duration ticks once a second while active.
    const dur = $('#call-duration');
    const paint = () => { dur.textContent = call.state.answeredAt ? duration((Date.now() - call.state.answeredAt) / 1000) : ''; };
    if (s.phase === 'active' && !tick) tick = setInterval(paint, 1000);
    if (s.phase !== 'active') { clearInterval(tick); tick = null; }
    paint();

    // Videos.
    setStream($('#local-video'), s.localStream);
    setStream($('#remote-video'), s.remoteStream);
    const remoteVideoOff = !s.remoteStream || s.remote.video === false || s.callType === 'audio';
    $('#remote-placeholder').textContent = remoteVideoOff ? initials(s.peerName) : '';
    const screenTile = $('#screen-tile');
    const showScreen = !!s.remoteScreen && s.remote.screen !== false;
    screenTile.hidden = !showScreen;
    setStream($('#remote-screen'), showScreen ? s.remoteScreen : null);

    const badges = $('#remote-badges');
    const items = [];
    if (s.phase === 'active' || s.phase === 'connecting') {
      if (s.remote.audio === false) items.push(el('li', { text: 'Muted', 'data-testid': 'remote-muted' }));
      if (s.remote.video === false && s.callType === 'video') items.push(el('li', { text: 'Camera off', 'data-testid': 'remote-camera-off' }));
      if (s.remote.screen) items.push(el('li', { class: 'info', text: 'Sharing screen', 'data-testid': 'remote-sharing' }));
    }
    badges.replaceChildren(...items);
    badges.dataset.audio = String(s.remote.audio !== false);
    badges.dataset.video = String(s.remote.video !== false);
    badges.dataset.screen = String(!!s.remote.screen);

    // Controls.
    const live = s.phase !== 'ended';
    setPressed($('#btn-mic'), !s.local.audio, 'Unmute', 'Mute');
    setPressed($('#btn-cam'), !s.local.video, 'Start video', 'Stop video');
    setPressed($('#btn-screen'), !!s.local.screen, 'Stop sharing', 'Share screen');
    $('#btn-mic').setAttribute('aria-label', s.local.audio ? 'Mute microphone' : 'Unmute microphone');
    $('#btn-cam').setAttribute('aria-label', s.local.video ? 'Turn camera off' : 'Turn camera on');
    $('#btn-mic').disabled = !live || !s.localStream?.getAudioTracks().length;
    $('#btn-cam').disabled = !live || !s.localStream?.getVideoTracks().length;
    $('#btn-screen').disabled = !live || !(s.phase === 'active' || s.phase === 'connecting') || !navigator.mediaDevices?.getDisplayMedia;
    $('#call-camera').disabled = !live;
    for (const id of ['#btn-mic', '#btn-cam', '#btn-screen']) $(id).hidden = !live;
    if (!live) $('#call-camera').parentElement.hidden = true;
    $('#local-video').parentElement.hidden = !s.localStream || !live;
    $('#btn-hangup').hidden = !live;
    $('#btn-hangup').querySelector('.lbl').textContent = s.phase === 'outgoing' ? 'Cancel' : 'Hang up';
    $('#btn-close').hidden = live;
    if (!live && wasHidden === false && document.activeElement?.closest('#call-screen') == null) $('#btn-close').focus();

    // Quality.
    const q = $('#call-quality');
    q.dataset.quality = s.quality;
    const st = s.stats;
    q.dataset.candidateType = st?.localCandidateType || '';
    const text = st && s.quality !== 'unknown'
      ? `${s.quality} · ${st.rttMs ?? '?'} ms · ${describePath(st)}`
      : (s.phase === 'active' ? 'measuring…' : '');
    $('#call-quality-text').textContent = text;
    q.setAttribute('aria-label', `Connection quality: ${text || 'unknown'}`);
    q.hidden = s.phase === 'ended';

    if (s.phase === 'ended') {
      clearTimeout(dismissTimer);
      dismissTimer = setTimeout(() => call.dismiss(), 5000);
      if (document.activeElement === document.body || document.activeElement?.closest('#call-screen')) $('#btn-close').focus();
    }
  }

  call.addEventListener('change', (e) => render(e.detail));
  navigator.mediaDevices?.addEventListener?.('devicechange', () => { if (call.busy) fillCameras(); });
  render(call.state);
}
