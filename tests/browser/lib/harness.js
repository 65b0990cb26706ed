// harness.js — what every browser test needs: the real signalbox binary started on
// 127.0.0.1 port 0 with a temporary data dir, its TURN relay on a free loopback port (relay
// allowed to reach 127.0.0.0/8) and its SFU on a loopback UDP port, tokens minted with
// `signalbox token`, Debian's headless Chromium (fake camera and microphone) driven by
// playwright-core, in-page probes of the peer connections (peerStats, the room tiles' decode
// watch), and bounded waits that say what they waited for (eventually, until).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import dgram from 'node:dgram';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = join(here, '..', '..', '..');
export const BIN = process.env.SIGNALBOX_BIN || join(REPO, 'target', 'debug', 'signalbox');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS = process.env.SIGNALBOX_ARTIFACTS || join(REPO, 'test-artifacts', 'browser');

/** The lowest port the kernel hands out for port-0 binds (Linux's ip_local_port_range). */
function ephemeralLow() {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

/**
 * A port free on 127.0.0.1 for both UDP and TCP (TURN listens on both), below the kernel's
 * ephemeral range: a port taken from that range and let go could be handed at once to a
 * port-0 bind (the server's own SFU socket, a browser's ICE socket) before the server binds it.
 */
export async function freeDualPort() {
  const from = 10000;
  const span = Math.max(1, Math.min(20000, ephemeralLow() - from));
  const free = (port) => new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => {
      const sock = dgram.createSocket('udp4');
      sock.once('error', () => resolve(false));
      sock.bind(port, '127.0.0.1', () => sock.close(() => resolve(true)));
    }));
  });
  for (let i = 0; i < 50; i++) {
    const port = from + Math.floor(Math.random() * span);
    if (await free(port)) return port;
  }
  throw new Error(`no free port in ${from}-${from + span - 1} after 50 tries`);
}

/** Starts `signalbox serve`; resolves once it prints `listening on http(s)://ADDR`. */
export async function startServer({ extraArgs = [], turn = true, sfu = true, listen = '127.0.0.1:0', dataDir, turnPort, turnListen, env = {} } = {}) {
  dataDir ||= mkdtempSync(join(tmpdir(), 'signalbox-browser-'));
  turnPort ||= await freeDualPort();
  const args = ['serve', '--listen', listen, '--data-dir', dataDir];
  if (turn) args.push('--turn-listen', turnListen || `127.0.0.1:${turnPort}`, '--turn-allow-peer', '127.0.0.0/8', '--relay-ports', `${40000 + (turnPort % 20000)}-${40000 + (turnPort % 20000) + 199}`);
  else args.push('--no-turn');
  // The SFU on loopback: its host candidate is 127.0.0.1 (the TURN relay may reach it too).
  if (sfu) args.push('--sfu-listen', '127.0.0.1:0');
  args.push(...extraArgs);
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...childEnv(), ...env } });
  // Never leave a server behind, whatever happens to this test process.
  const reap = () => { if (child.exitCode === null) child.kill('SIGKILL'); };
  process.once('exit', reap);
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`signalbox did not start in 20 s:\n${log}`)), 20000);
    const onData = (chunk) => {
      log += chunk;
      const m = /listening on (https?:\/\/[^\s]+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(m[1].replace(/\/$/, '')); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => { log += c; });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`signalbox exited with ${code}:\n${log}`)); });
  });
  child.stdout.on('data', (c) => { log += c; });
  const server = {
    url,
    dataDir,
    turnPort,
    child,
    get log() { return log; },
    token(user, { name, ttl, admin } = {}) {
      const a = ['token', '--data-dir', dataDir, '--user', user];
      if (name) a.push('--name', name);
      if (ttl) a.push('--ttl', ttl);
      if (admin) a.push('--admin');
      return execFileSync(BIN, a, { encoding: 'utf8', env: childEnv() }).trim();
    },
    addUser(user, password, name) {
      const a = ['user', 'add', user, '--password-stdin', '--data-dir', dataDir];
      if (name) a.push('--name', name);
      execFileSync(BIN, a, { input: `${password}\n`, encoding: 'utf8', env: childEnv() });
    },
    async api(token, method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => { const t = setTimeout(() => { child.kill('SIGKILL'); r(); }, 5000); child.once('exit', () => { clearTimeout(t); r(); }); });
      }
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * Debian's Chromium, headless, with a fake camera and microphone granted without a prompt;
 * `cameras` fake cameras, at `fps` frames a second (Chromium's own default when not given).
 */
export async function launchBrowser({ extraArgs = [], fakeUi = true, cameras = 1, fps } = {}) {
  const fake = [cameras > 1 && `device-count=${cameras}`, fps && `fps=${fps}`].filter(Boolean).join(',');
  // playwright-core gives every launch a fresh, empty profile directory (it refuses
  // --user-data-dir here), which is what Chromium needs on this machine.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(fakeUi ? ['--use-fake-ui-for-media-stream'] : []),
      fake ? `--use-fake-device-for-media-stream=${fake}` : '--use-fake-device-for-media-stream',
      // Screen capture without a picker in headless mode.
      '--auto-select-desktop-capture-source=Entire screen', '--enable-usermedia-screen-capturing',
      '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
  return browser;
}

/** A fresh context and page at `path` (not signed in), with the camera and microphone granted. */
export async function newPage(browser, server, { path = '/', viewport = { width: 1100, height: 760 }, grant = true, initScript } = {}) {
  const context = await browser.newContext({ viewport });
  if (grant) await context.grantPermissions(['camera', 'microphone'], { origin: server.url });
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  page.logs = logs;
  await page.goto(server.url + path);
  return page;
}

/** A fresh context + page signed in with `token` through the `#token=` link, relay-only if asked. */
export async function openAs(browser, server, token, { relayOnly = true, viewport = { width: 1100, height: 760 }, hash = '', setup } = {}) {
  // An HTTPS server in a test has a self-signed certificate.
  const context = await browser.newContext({ viewport, ignoreHTTPSErrors: server.url.startsWith('https:') });
  if (setup) await setup(context);
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: server.url });
  if (relayOnly) {
    await context.addInitScript(() => {
      if (!localStorage.getItem('signalbox.settings')) localStorage.setItem('signalbox.settings', JSON.stringify({ relayOnly: true }));
    });
  }
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  page.logs = logs;
  await page.goto(`${server.url}/#token=${encodeURIComponent(token)}${hash ? `&${hash}` : ''}`);
  await page.getByTestId('signal-status').and(page.locator('[data-status="open"]')).waitFor({ timeout: 15000 });
  return page;
}

/**
 * Samples getStats of every live peer connection of a page: frames decoded, the selected pair,
 * each inbound stream (`inbound`: kind, trackId, framesDecoded, frameWidth; on the SFU
 * connection also the publisher's peerId and the track's role, 'audio' | 'camera' | 'screen'),
 * and each outbound stream (`outbound`: kind, mid, rid (a simulcast layer), active, frameWidth,
 * framesEncoded, bytesSent).
 */
export async function peerStats(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const entry of window.signalbox.peerConnections()) {
      const report = await entry.pc.getStats();
      let framesDecoded = 0; let pair = null; let transport = null;
      const byId = new Map();
      const inbound = [];
      const outbound = [];
      report.forEach((s) => {
        byId.set(s.id, s);
        if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded || 0;
        if (s.type === 'inbound-rtp') {
          const owner = entry.tracks && entry.tracks[s.trackIdentifier];
          inbound.push({ kind: s.kind, trackId: s.trackIdentifier, mid: s.mid ?? null, ssrc: s.ssrc, framesDecoded: s.framesDecoded || 0, framesReceived: s.framesReceived || 0, framesDropped: s.framesDropped || 0, keyFramesDecoded: s.keyFramesDecoded || 0, packetsReceived: s.packetsReceived || 0, bytesReceived: s.bytesReceived || 0, nackCount: s.nackCount || 0, pliCount: s.pliCount || 0, frameWidth: s.frameWidth ?? null, peerId: owner ? owner.peerId : null, role: owner ? owner.role : null });
        }
        if (s.type === 'outbound-rtp') {
          outbound.push({ kind: s.kind, mid: s.mid ?? null, rid: s.rid ?? null, ssrc: s.ssrc, active: s.active ?? null, frameWidth: s.frameWidth ?? null, framesEncoded: s.framesEncoded || 0, keyFramesEncoded: s.keyFramesEncoded || 0, pliCount: s.pliCount || 0, bytesSent: s.bytesSent || 0, limitation: s.qualityLimitationReason ?? null });
        }
        if (s.type === 'transport') transport = s;
      });
      if (transport && transport.selectedCandidatePairId) pair = byId.get(transport.selectedCandidatePairId);
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      out.push({
        kind: entry.kind, remote: entry.remote, peerId: entry.peerId || null,
        connectionState: entry.pc.connectionState, framesDecoded,
        localType: local ? local.candidateType : null, remoteType: remote ? remote.candidateType : null,
        localProtocol: local ? local.protocol : null, relayProtocol: local ? local.relayProtocol || null : null,
        localAddress: local ? local.address || local.ip || null : null, remoteAddress: remote ? remote.address || remote.ip || null : null,
        localUrl: local ? local.url || null : null,
        videoReceivers: entry.pc.getReceivers().filter((r) => r.track && r.track.kind === 'video').length,
        iceTransportPolicy: entry.pc.getConfiguration().iceTransportPolicy,
        inbound,
        outbound,
      });
    }
    return out;
  });
}

/**
 * Starts watching a room page's remote tiles: every `everyMs` it reads framesDecoded of the
 * video track each tile shows (whichever connection carries it: a mesh link or the SFU link)
 * and notes per tile (peerId) when it last grew. readDecodeWatch gives per peer the longest
 * time without growth (`maxGapMs`, counting the stretch up to now), whether it ever grew, and
 * how often the tile's track changed (a switch of path). The watch starts again on each call.
 */
export async function startDecodeWatch(page, { everyMs = 200 } = {}) {
  await page.evaluate((everyMs) => {
    if (window.__decodeWatch) clearInterval(window.__decodeWatch.timer);
    const w = { peers: {}, samples: 0, maxSampleGapMs: 0, lastSample: null, busy: false };
    window.__decodeWatch = w;
    const tick = async () => {
      if (w.busy) return;
      w.busy = true;
      try {
        const frames = new Map();
        for (const e of window.signalbox.peerConnections()) {
          const report = await e.pc.getStats();
          report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier) frames.set(s.trackIdentifier, s.framesDecoded || 0); });
        }
        const now = performance.now();
        if (w.lastSample !== null) w.maxSampleGapMs = Math.max(w.maxSampleGapMs, now - w.lastSample);
        w.lastSample = now;
        w.samples += 1;
        for (const tile of document.querySelectorAll('[data-testid="room-tile"]')) {
          const peerId = tile.dataset.peer;
          const video = tile.querySelector('video');
          const track = video && video.srcObject ? video.srcObject.getVideoTracks()[0] : null;
          const id = track ? track.id : null;
          const f = id !== null && frames.has(id) ? frames.get(id) : null;
          const p = w.peers[peerId] || (w.peers[peerId] = { lastGrowth: null, maxGapMs: 0, track: null, frames: null, trackChanges: 0, growths: 0 });
          const grew = f !== null && (id !== p.track ? f > 0 : f > p.frames);
          if (id !== p.track && p.track !== null) p.trackChanges += 1;
          (p.history || (p.history = [])).push([Math.round(now), id && id.slice(0, 6), f]);
          if (grew) {
            if (p.lastGrowth !== null && now - p.lastGrowth > p.maxGapMs) p.gapAt = [p.lastGrowth, now];
            if (p.lastGrowth !== null) p.maxGapMs = Math.max(p.maxGapMs, now - p.lastGrowth);
            p.lastGrowth = now;
            p.growths += 1;
          }
          p.track = id;
          p.frames = f;
        }
      } finally {
        w.busy = false;
      }
    };
    w.timer = setInterval(tick, everyMs);
    tick();
  }, everyMs);
}

export async function readDecodeWatch(page, { stop = false } = {}) {
  return page.evaluate((stop) => {
    const w = window.__decodeWatch;
    if (!w) return null;
    if (stop) clearInterval(w.timer);
    const now = performance.now();
    const peers = {};
    for (const [peerId, p] of Object.entries(w.peers)) {
      const open = p.lastGrowth === null ? null : now - p.lastGrowth;
      const gapAt = open !== null && open > p.maxGapMs ? [p.lastGrowth, now] : p.gapAt;
      const around = gapAt ? (p.history || []).filter(([at]) => at >= gapAt[0] - 1000 && at <= gapAt[1] + 1000) : [];
      peers[peerId] = { grew: p.growths > 0, growths: p.growths, trackChanges: p.trackChanges, maxGapMs: Math.round(Math.max(p.maxGapMs, open ?? 0)), around };
    }
    return { samples: w.samples, maxSampleGapMs: Math.round(w.maxSampleGapMs), peers };
  }, stop);
}

/** Waits until `fn()` returns a truthy value (polling), or throws with the last value. */
export async function eventually(fn, { timeout = 20000, interval = 250, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
}

/** eventually() for a check that says what it saw: fn() → {ok, info, value}; a timeout shows the last info. */
export async function until(fn, { timeout = 30000, what }) {
  let info;
  try {
    return await eventually(async () => {
      const r = await fn();
      info = r.info;
      return r.ok ? (r.value ?? true) : null;
    }, { timeout, what });
  } catch (e) {
    throw new Error(`${e.message}\n  last seen: ${JSON.stringify(info)}`);
  }
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** The server's environment: ours minus the test's own SIGNALBOX_* knobs (the server warns on unknown ones). */
function childEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  delete env.SIGNALBOX_BIN;
  delete env.SIGNALBOX_ARTIFACTS;
  return env;
}
