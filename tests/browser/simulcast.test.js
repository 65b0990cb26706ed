// simulcast.test.js — simulcast through the SFU, on one server and one browser (Chromium's
// legacy simulcast layer limit off, so a 640-px camera may send three layers): four users in an
// `sfu` room; two of them (ann, dan) show tiles wide enough to need the top layer, two (bob, cat)
// small tiles that need no more than the middle one. Each publishes its camera in several layers
// at once; a small tile never gets the top layer; a subscriber that caps what it receives gets a
// lower layer of every camera while another keeps the top one, and gets the top one back when
// the cap goes; the active
// speaker's tile is highlighted on every page and follows the one unmuted microphone; after the
// call, the history shows per participant a chart of what it received.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { startServer, launchBrowser, openAs, peerStats, eventually, until, screenshot } from './lib/harness.js';

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser({ fps: 15, extraArgs: ['--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/'] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const NAMES = ['ann', 'bob', 'cat', 'dan'];
/** Four tiles of this grid are each about 390 px wide: more than the middle layer's 320. */
const WIDE = { width: 1600, height: 900 };
/** ...and of this one at most 320 px wide: the middle layer is as much as they need. */
const SMALL = { width: 640, height: 480 };
const VIEWPORTS = { ann: WIDE, bob: SMALL, cat: SMALL, dan: WIDE };
/**
 * What the capped subscriber takes: three audio tracks (40 kbit/s each, reserved) and the three
 * cameras' lower layers fit, their top layers (several hundred kbit/s each) do not.
 */
const CAP_BPS = 500000;

async function joined(page, what) {
  await page.getByTestId('room-screen').and(page.locator('[data-phase="joined"]')).waitFor({ timeout: 20000 });
  return eventually(() => page.evaluate(() => window.signalbox.room.peerId), { what: `${what}: peerId known` });
}

/** The page's SFU connection's peerStats entry, once connected (else null). */
async function sfuLink(page) {
  return (await peerStats(page)).find((x) => x.kind === 'sfu' && x.connectionState === 'connected') || null;
}

/** Publisher peerId → {frames, width} of its camera as received. */
function camerasIn(link) {
  const out = {};
  for (const i of link?.inbound || []) if (i.role === 'camera' && i.peerId) out[i.peerId] = { frames: i.framesDecoded, width: i.frameWidth, keyframes: i.keyFramesDecoded, plis: i.pliCount };
  return out;
}

/** rid → {frames, bytes, width, active} of our camera's simulcast layers as sent. */
function layersOut(link) {
  const out = {};
  for (const o of link?.outbound || []) if (o.kind === 'video' && o.rid) out[o.rid] = { frames: o.framesEncoded, bytes: o.bytesSent, width: o.frameWidth, active: o.active, limitation: o.limitation, keyframes: o.keyFramesEncoded, plis: o.pliCount };
  return out;
}

function dumpLogs(pages) {
  if (!process.env.DEBUG_BROWSER) return;
  for (const [n, p] of Object.entries(pages)) console.log(`--- ${n}\n${p.logs.join('\n')}`);
  if (process.env.DEBUG_BROWSER_SERVER_LOG) writeFileSync(process.env.DEBUG_BROWSER_SERVER_LOG, server.log);
}

test('simulcast through the SFU: layers, a receive cap, the active speaker, the quality chart', async (t) => {
  const tokens = Object.fromEntries(NAMES.map((n) => [n, server.token(n, { name: n[0].toUpperCase() + n.slice(1) })]));
  const created = await server.api(tokens.ann, 'POST', '/rooms', { name: 'Layers', maxParticipants: 4, mode: 'sfu' });
  assert.ok(created.status === 200 || created.status === 201, `room created: ${JSON.stringify(created)}`);
  const room = created.body.room || created.body;
  const pages = {};
  const peerIds = {};
  t.after(async () => {
    dumpLogs(pages);
    for (const p of Object.values(pages)) await p.context().close().catch(() => {});
  });
  for (const name of NAMES) {
    pages[name] = await openAs(browser, server, tokens[name], { relayOnly: false, viewport: VIEWPORTS[name], hash: `room=${room.id}` });
    peerIds[name] = await joined(pages[name], name);
  }
  const callId = await pages.ann.evaluate(() => window.signalbox.room.callId);
  const nameOf = Object.fromEntries(NAMES.map((n) => [peerIds[n], n]));
  const named = (byPeer) => Object.fromEntries(Object.entries(byPeer).map(([p, v]) => [nameOf[p] || p, v]));
  const othersOf = (name) => NAMES.filter((n) => n !== name).map((n) => peerIds[n]);
  const topWidth = {}; // publisher peerId → the width of its `f` layer, from its outbound stats

  /** What the server made of each subscriber lately (its last quality sample), to explain a failure. */
  async function serverSide() {
    const { body } = await server.api(tokens.ann, 'GET', `/calls/${callId}/analytics`);
    return Object.fromEntries(((body.analytics || body).sfu || []).map((p) => {
      const last = (p.quality || []).at(-1);
      return [p.userId, last && { estimateKbps: last.estimateKbps, layers: last.layers.map((l) => `${nameOf[l.fromPeerId]}:${l.paused ? 'paused' : l.layer}`).join(' ') }];
    }));
  }

  /** Fills topWidth: each publisher's `f` layer width, once it encodes (Chrome gives no width while a layer is off). */
  async function topWidthsKnown() {
    await explained(until(async () => {
      for (const name of NAMES) {
        const f = layersOut(await sfuLink(pages[name])).f;
        if (f?.width > 0) topWidth[peerIds[name]] = f.width;
      }
      return { ok: NAMES.every((n) => topWidth[peerIds[n]] > 0), info: named(topWidth) };
    }, { timeout: 30000, what: 'every publisher encoding its top layer (its width is what a wide tile should receive)' }));
    for (const [p, w] of Object.entries(topWidth)) assert.ok(w > 320, `${nameOf[p]}'s top layer is wider than the 320 px the tiles exceed (${w})`);
  }

  /** `page` decodes every camera of `from`, more and more, at widths `fits(peerId, width)` accepts. */
  async function receivesAt(page, from, fits, what, timeout = 30000) {
    let prev = null;
    return explained(until(async () => {
      const now = camerasIn(await sfuLink(page));
      const grew = !!prev && from.every((p) => now[p] && prev[p] && now[p].frames > prev[p].frames);
      const before = prev;
      prev = now;
      const widths = Object.fromEntries(from.map((p) => [p, now[p]?.width ?? null]));
      return { ok: grew && from.every((p) => fits(p, widths[p])), value: widths, info: { before: before && named(before), now: named(now), top: named(topWidth) } };
    }, { timeout, what }));
  }

  /** A failed wait, with what the server's last quality samples say appended. */
  async function explained(waiting) {
    try {
      return await waiting;
    } catch (e) {
      const sent = {};
      const received = {};
      for (const name of NAMES) {
        const link = await sfuLink(pages[name]).catch(() => null);
        sent[name] = layersOut(link);
        received[name] = (link?.inbound || []).filter((i) => i.kind === 'video');
      }
      throw new Error(`${e.message}\n  the server's last samples: ${JSON.stringify(await serverSide().catch((err) => err.message))}\n  what each page sends: ${JSON.stringify(sent)}\n  peer ids: ${JSON.stringify(peerIds)}\n  what each page receives: ${JSON.stringify(received)}`);
    }
  }

  await t.test('every page publishes its camera in two or more simulcast layers at once', async () => {
    for (const [name, page] of Object.entries(pages)) {
      const tiles = await until(async () => {
        const widths = await page.evaluate(() => [...document.querySelectorAll('[data-testid="room-tile"]')].map((el) => Math.round(el.getBoundingClientRect().width * devicePixelRatio)));
        return { ok: widths.length === 3, value: widths, info: widths };
      }, { timeout: 15000, what: `${name}: three remote tiles` });
      if (VIEWPORTS[name] === WIDE) assert.ok(tiles.every((w) => w > 320), `${name}: every remote tile is wider than 320 device px, so it needs the top layer (${tiles})`);
      else assert.ok(tiles.every((w) => w > 0 && w <= 320), `${name}: every remote tile is at most 320 device px wide, so it needs no more than the middle layer (${tiles})`);
      let prev = null;
      const layers = await explained(until(async () => {
        const now = layersOut(await sfuLink(page));
        const growing = prev ? Object.keys(now).filter((rid) => prev[rid] && now[rid].frames > prev[rid].frames && now[rid].bytes > prev[rid].bytes) : [];
        prev = now;
        return { ok: growing.length >= 2, value: now, info: { growing, layers: now } };
      }, { timeout: 30000, what: `${name}: two or more camera layers encoding at once` }));
      const rids = (await sfuLink(page)).outbound.filter((o) => o.kind === 'video' && o.rid).map((o) => o.rid);
      assert.deepEqual([...rids].sort(), ['f', 'h', 'q'], `${name}: one outbound stream per layer, each with its own rid (${rids})`);
      t.diagnostic(`${name} sends ${JSON.stringify(layers)}`);
    }
    await screenshot(pages.ann, 'simulcast-1-four-people');
  });

  await t.test('a small tile gets a lower layer than the top one, with no cap', async () => {
    await topWidthsKnown();
    for (const name of ['bob', 'cat']) {
      const widths = await receivesAt(pages[name], othersOf(name), (p, w) => w !== null && w < topWidth[p], `${name}, small tiles: a lower layer than the top of every camera`);
      t.diagnostic(`${name} receives widths ${JSON.stringify(named(widths))}`);
    }
  });

  await t.test('a subscriber capped at 500 kbit/s gets a lower layer of every camera; another keeps the top; the cap lifted, the top comes back', async () => {
    const { ann, dan } = pages;
    const top = (p, w) => w === topWidth[p];
    await receivesAt(ann, othersOf('ann'), top, 'ann: the top layer of every camera');
    await receivesAt(dan, othersOf('dan'), top, 'dan, before the cap: the top layer of every camera');
    await dan.evaluate((bps) => window.__signalbox.setReceiveCap(bps), CAP_BPS);
    const capped = await receivesAt(dan, othersOf('dan'), (p, w) => w !== null && w < topWidth[p], `dan, capped at ${CAP_BPS} bit/s: a lower layer of every camera`, 20000);
    t.diagnostic(`dan capped receives widths ${JSON.stringify(named(capped))}`);
    await receivesAt(ann, othersOf('ann'), top, 'ann, while dan is capped: still the top layer of every camera', 10000);
    await dan.evaluate(() => window.__signalbox.setReceiveCap(null));
    await receivesAt(dan, othersOf('dan'), top, 'dan, cap lifted: the top layer of every camera again', 30000);
  });

  await t.test('the active speaker is highlighted on every page and the highlight follows the unmuted microphone', async () => {
    const setMic = async (name, on) => {
      const button = pages[name].getByTestId('room-toggle-mic');
      await button.click();
      await button.and(pages[name].locator(`[aria-pressed="${!on}"]`)).waitFor({ timeout: 5000 });
    };
    /** On every page, the one highlighted tile is `who`'s (its own tile on `who`'s page), and none is made big (4 tiles). */
    const highlighted = async (who) => {
      for (const [name, page] of Object.entries(pages)) {
        const want = name === who ? 'me' : peerIds[who];
        await until(async () => {
          const seen = await page.evaluate(() => ({
            speaking: [...document.querySelectorAll('#room-grid .tile[data-speaking="true"]')].map((el) => el.dataset.peer),
            outlined: [...document.querySelectorAll('#room-grid .tile.speaking')].map((el) => el.dataset.peer),
            featured: document.querySelectorAll('#room-grid .tile.featured').length,
            activeSpeaker: window.signalbox.room.activeSpeaker,
          }));
          const ok = seen.speaking.length === 1 && seen.speaking[0] === want && seen.outlined.length === 1 && seen.outlined[0] === want && seen.featured === 0;
          return { ok, info: { ...seen, speaking: seen.speaking.map((p) => nameOf[p] || p), activeSpeaker: nameOf[seen.activeSpeaker] || seen.activeSpeaker } };
        }, { timeout: 20000, what: `${name}: only ${who}'s tile is highlighted as the speaker` });
      }
    };
    for (const name of ['ann', 'cat', 'dan']) await setMic(name, false);
    await highlighted('bob');
    await screenshot(pages.ann, 'simulcast-2-active-speaker');
    await setMic('bob', false);
    await setMic('cat', true);
    await highlighted('cat');
  });

  await t.test('after the call, the history shows a chart of what each participant received', async () => {
    for (const [name, page] of Object.entries(pages)) {
      await page.getByTestId('room-leave').click();
      await page.getByTestId('room-screen').waitFor({ state: 'hidden', timeout: 10000 });
      assert.equal((await peerStats(page)).length, 0, `${name} closed its SFU connection`);
    }
    const analytics = await until(async () => {
      const { body } = await server.api(tokens.ann, 'GET', `/calls/${callId}/analytics`);
      const a = body.analytics || body;
      const samples = (a.sfu || []).map((p) => [p.userId, Array.isArray(p.quality) ? p.quality.length : p.quality]);
      return { ok: a.status === 'ended' && samples.some(([, n]) => n > 0), value: a, info: { status: a.status, samples } };
    }, { timeout: 15000, what: 'the ended call\'s analytics, with SFU quality samples' });
    const ann = pages.ann;
    await ann.getByTestId('nav-history').click();
    const row = ann.locator(`[data-testid="history-row"][data-call-id="${callId}"]`);
    await row.waitFor({ timeout: 10000 });
    await row.getByTestId('history-details').click();
    await ann.getByTestId('analytics').and(ann.locator(`[data-call-id="${callId}"]`)).waitFor({ timeout: 10000 });
    const charts = ann.getByTestId('sfu-quality-chart');
    await charts.first().waitFor({ timeout: 10000 });
    const sampled = analytics.sfu.filter((p) => p.quality?.length);
    assert.equal(await charts.count(), sampled.length, `one chart per participant with samples (${sampled.map((p) => p.userId)})`);
    const drawn = await charts.first().evaluate((svg) => ({ line: (svg.querySelector('.qc-estimate')?.getAttribute('d') || '').length, bands: svg.querySelectorAll('.qc-layer').length }));
    assert.ok(drawn.bands > 0, `the chart draws the received layers (${JSON.stringify(drawn)})`);
    if (sampled[0].quality.some((s) => typeof s.estimateKbps === 'number')) assert.ok(drawn.line > 0, `the chart draws the bandwidth estimate (${JSON.stringify(drawn)})`);
    await charts.first().scrollIntoViewIfNeeded();
    await screenshot(ann, 'simulcast-3-quality-chart');
  });
});
