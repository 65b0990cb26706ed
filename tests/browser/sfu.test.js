// sfu.test.js — rooms through the server's SFU, on one server and one browser: five users in an
// `sfu` room created in the UI (one of them relay-only through the embedded TURN) each hold
// exactly one connection, to the SFU, and decode the four others on the right tiles; a leaver
// disappears from everyone's grid; a screen share reaches the others as a second video track of
// its publisher; and a two-person `auto` room goes from peer-to-peer to the SFU when a third
// joins, and back when that one leaves, without any tile going a second without a new frame.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, peerStats, eventually, until, screenshot, startDecodeWatch, readDecodeWatch } from './lib/harness.js';

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Publisher peerId → frames decoded of its camera, on an SFU connection's peerStats entry. */
function cameras(link, role = 'camera') {
  const out = {};
  for (const i of link.inbound) if (i.role === role && i.peerId) out[i.peerId] = i.framesDecoded;
  return out;
}

/** The page holds exactly one connection, to the SFU, and it decodes each of `peerIds`' cameras, more and more. */
async function decodesThroughSfu(page, peerIds, what) {
  const connected = async () => {
    const s = await peerStats(page);
    const link = s.length === 1 && s[0].kind === 'sfu' && s[0].connectionState === 'connected' ? s[0] : null;
    const f = link ? cameras(link) : {};
    return { ok: !!link && peerIds.every((p) => f[p] > 0), value: link, info: s.map((x) => ({ kind: x.kind, state: x.connectionState, cameras: x.inbound && cameras(x), remote: x.remote })) };
  };
  const first = await until(connected, { timeout: 60000, what: `${what}: one connected SFU connection decoding ${peerIds.length} cameras` });
  const f0 = cameras(first);
  return until(async () => {
    const r = await connected();
    const f = r.value ? cameras(r.value) : {};
    return { ok: !!r.value && peerIds.every((p) => f[p] > f0[p] + 5), value: r.value, info: { before: f0, now: f } };
  }, { timeout: 30000, what: `${what}: framesDecoded grows on each of the ${peerIds.length} cameras` });
}

/** The page holds exactly one connection, a mesh link to `peerId`, connected and decoding more and more. */
async function decodesOverMesh(page, peerId, what) {
  const link = async () => {
    const s = await peerStats(page);
    const ok = s.length === 1 && s[0].kind === 'room' && s[0].peerId === peerId && s[0].connectionState === 'connected';
    return { ok: ok && s[0].framesDecoded > 0, value: s[0], info: s.map((x) => ({ kind: x.kind, peerId: x.peerId, state: x.connectionState, frames: x.framesDecoded })) };
  };
  const first = await until(link, { timeout: 45000, what: `${what}: one connected mesh link to ${peerId}, decoding` });
  return until(async () => {
    const r = await link();
    return { ok: r.ok && r.value.framesDecoded > first.framesDecoded + 5, value: r.value, info: r.info };
  }, { timeout: 20000, what: `${what}: mesh framesDecoded grows` });
}

async function joined(page, what) {
  await page.getByTestId('room-screen').and(page.locator('[data-phase="joined"]')).waitFor({ timeout: 20000 });
  return eventually(() => page.evaluate(() => window.signalbox.room.peerId), { what: `${what}: peerId known` });
}

const topologyOf = (page) => page.evaluate(() => window.signalbox.room.topology);

function dumpLogs(pages) {
  if (!process.env.DEBUG_BROWSER) return;
  for (const [n, p] of Object.entries(pages)) console.log(`--- ${n}\n${p.logs.join('\n')}`);
}

test('five users in an sfu room: one connection each, four remote videos, leave, screen share', async (t) => {
  const names = ['alice', 'bob', 'carol', 'dave', 'erin'];
  const RELAY = 'dave';
  const pages = {};
  t.after(async () => {
    dumpLogs(pages);
    for (const p of Object.values(pages)) await p.context().close().catch(() => {});
  });

  // Alice creates the room in the UI, choosing the SFU.
  const alice = await openAs(browser, server, server.token('alice', { name: 'Alice' }), { relayOnly: false });
  pages.alice = alice;
  await alice.getByTestId('nav-rooms').click();
  await alice.getByTestId('room-name').fill('All hands');
  await alice.getByTestId('room-max').fill('6');
  await alice.getByTestId('room-mode').selectOption('sfu');
  await alice.getByTestId('room-create-submit').click();
  await alice.getByTestId('room-created').waitFor();
  const roomId = decodeURIComponent((await alice.getByTestId('room-link').inputValue()).split('#room=')[1]);
  const { body: view } = await server.api(server.token('alice'), 'GET', `/rooms/${roomId}`);
  assert.equal((view.room || view).mode, 'sfu', `the room was created with mode sfu: ${JSON.stringify(view)}`);
  await alice.getByTestId('room-join-created').click();
  const peerIds = { alice: await joined(alice, 'alice') };
  assert.equal(await topologyOf(alice), 'sfu', 'an sfu room is sfu from the first participant');
  assert.equal(await alice.getByTestId('room-screen').getAttribute('data-topology'), 'sfu');

  for (const name of names.slice(1)) {
    const label = name[0].toUpperCase() + name.slice(1);
    pages[name] = await openAs(browser, server, server.token(name, { name: label }), { relayOnly: name === RELAY, hash: `room=${roomId}` });
    peerIds[name] = await joined(pages[name], name);
  }

  await t.test('every page holds one connection, to the SFU, and decodes the four others on their tiles', async () => {
    for (const [name, page] of Object.entries(pages)) {
      const others = names.filter((n) => n !== name).map((n) => peerIds[n]);
      const link = await decodesThroughSfu(page, others, name);
      assert.equal(link.remote, 'sfu');
      const decoding = Object.entries(cameras(link)).filter(([, f]) => f > 0).map(([p]) => p).sort();
      assert.deepEqual(decoding, [...others].sort(), `${name} decodes exactly the four others' cameras`);
      if (name === RELAY) {
        assert.equal(link.iceTransportPolicy, 'relay', `${name} is relay-only`);
        assert.equal(link.localType, 'relay', `${name} reaches the SFU through the TURN relay (${JSON.stringify(link)})`);
      } else {
        assert.equal(link.iceTransportPolicy, 'all');
      }
      t.diagnostic(`${name}: local candidate ${link.localType}/${link.localProtocol}, remote ${link.remoteType}`);
      // Four remote tiles, each showing its own publisher's camera track from the SFU connection.
      assert.equal(await page.getByTestId('room-tile').count(), 4, `${name} sees four remote tiles`);
      const tiles = await page.evaluate(() => {
        const owners = window.signalbox.peerConnections().find((e) => e.kind === 'sfu').tracks;
        return [...document.querySelectorAll('[data-testid="room-tile"]')].map((tile) => {
          const track = tile.querySelector('video').srcObject?.getVideoTracks()[0];
          return { tile: tile.dataset.peer, shows: track ? owners[track.id] : null };
        });
      });
      for (const { tile, shows } of tiles) assert.deepEqual(shows, { peerId: tile, role: 'camera' }, `${name}: the tile of ${tile} shows that peer's camera`);
      assert.match(await page.getByTestId('room-status').textContent(), /5 people/);
    }
    await screenshot(alice, 'sfu-1-five-people');
  });

  await t.test('a participant leaves: the others are down to three remote tiles', async () => {
    const erin = pages.erin;
    await erin.getByTestId('room-leave').click();
    await erin.getByTestId('room-screen').waitFor({ state: 'hidden' });
    assert.equal((await peerStats(erin)).length, 0, 'erin closed her SFU connection');
    await erin.context().close();
    delete pages.erin;
    for (const [name, page] of Object.entries(pages)) {
      await until(async () => {
        const n = await page.getByTestId('room-tile').count();
        return { ok: n === 3, info: n };
      }, { timeout: 15000, what: `${name}: three remote tiles` });
      assert.match(await page.getByTestId('room-status').textContent(), /4 people/);
      assert.equal(await page.locator(`[data-testid="room-tile"][data-peer="${peerIds.erin}"]`).count(), 0, `${name}: erin's tile is gone`);
      // The SFU's next offer stops erin's tracks; one connection remains.
      await until(async () => {
        const s = await peerStats(page);
        return { ok: s.length === 1 && s[0].kind === 'sfu' && !s[0].inbound.some((i) => i.peerId === peerIds.erin), info: s.map((x) => x.inbound?.map((i) => `${i.peerId}:${i.role}`)) };
      }, { timeout: 15000, what: `${name}: erin's tracks stopped on the SFU connection` });
    }
  });

  await t.test('screen share: alice shares, the others decode it as her second video track', async () => {
    const share = alice.getByTestId('room-share');
    assert.equal(await share.isDisabled(), false, 'screen share is offered in an sfu room');
    await share.click();
    await share.and(alice.locator('[aria-pressed="true"]')).waitFor({ timeout: 15000 });
    for (const name of ['bob', 'carol', 'dave']) {
      const page = pages[name];
      await page.locator(`[data-testid="room-screen-share"][data-peer="${peerIds.alice}"]`).waitFor({ state: 'visible', timeout: 20000 });
      const screenFrames = async () => {
        const s = await peerStats(page);
        const link = s.find((x) => x.kind === 'sfu');
        return link ? cameras(link, 'screen')[peerIds.alice] ?? 0 : 0;
      };
      const first = await until(async () => { const f = await screenFrames(); return { ok: f > 0, value: f, info: f }; }, { timeout: 30000, what: `${name}: alice's screen track decodes` });
      await until(async () => { const f = await screenFrames(); return { ok: f > first + 3, info: { first, now: f } }; }, { timeout: 20000, what: `${name}: framesDecoded of alice's screen grows` });
      const link = (await peerStats(page)).find((x) => x.kind === 'sfu');
      assert.equal(link.inbound.filter((i) => i.peerId === peerIds.alice && i.kind === 'video').length, 2, `${name}: alice sends two video tracks (camera, screen)`);
      assert.equal((await peerStats(page)).length, 1, `${name}: still one connection`);
    }
    await screenshot(pages.bob, 'sfu-2-screen-share');
    await share.click();
    await share.and(alice.locator('[aria-pressed="false"]')).waitFor({ timeout: 15000 });
    for (const name of ['bob', 'carol', 'dave']) {
      await pages[name].locator('[data-testid="room-screen-share"]').waitFor({ state: 'detached', timeout: 15000 });
    }
  });
});

test('an auto room: peer-to-peer for two, through the SFU from three and back, never a second without video', async (t) => {
  const owner = server.token('ann', { name: 'Ann' });
  const created = await server.api(owner, 'POST', '/rooms', { name: 'Pair', maxParticipants: 4 });
  assert.ok(created.status === 200 || created.status === 201, `room created: ${JSON.stringify(created)}`);
  const room = created.body.room || created.body;
  assert.equal(room.mode, 'auto', 'rooms are auto by default');
  const pages = {};
  t.after(async () => {
    dumpLogs(pages);
    for (const p of Object.values(pages)) await p.context().close().catch(() => {});
  });
  const peerIds = {};
  for (const name of ['ann', 'ben']) {
    const token = name === 'ann' ? owner : server.token(name, { name: 'Ben' });
    pages[name] = await openAs(browser, server, token, { relayOnly: false, hash: `room=${room.id}` });
    peerIds[name] = await joined(pages[name], name);
  }
  const { ann, ben } = pages;

  await t.test('two people: one mesh link each, no SFU connection, no screen share', async () => {
    await decodesOverMesh(ann, peerIds.ben, 'ann');
    await decodesOverMesh(ben, peerIds.ann, 'ben');
    for (const page of [ann, ben]) {
      assert.equal(await topologyOf(page), 'mesh');
      assert.equal(await page.getByTestId('room-screen').getAttribute('data-topology'), 'mesh');
      assert.equal(await page.getByTestId('room-share').isDisabled(), true, 'screen share needs the SFU');
    }
  });

  await t.test('a third joins: both switch to the SFU without a gap of over a second', async () => {
    // Cat's page is open (a browser page starting up takes both cores of a small machine for
    // a moment) before the watch starts; what the watch sees is only the join and the switch.
    pages.cat = await openAs(browser, server, server.token('cat', { name: 'Cat' }), { relayOnly: false });
    await pages.cat.getByTestId('nav-rooms').click();
    await pages.cat.getByTestId('room-join-input').fill(room.id);
    await sleep(1000);
    await startDecodeWatch(ann);
    await startDecodeWatch(ben);
    await sleep(1000);
    await pages.cat.getByTestId('room-join-submit').click();
    peerIds.cat = await joined(pages.cat, 'cat');
    assert.equal(await topologyOf(pages.cat), 'sfu', 'the third joins an sfu topology');
    await decodesThroughSfu(ann, [peerIds.ben, peerIds.cat], 'ann');
    await decodesThroughSfu(ben, [peerIds.ann, peerIds.cat], 'ben');
    await decodesThroughSfu(pages.cat, [peerIds.ann, peerIds.ben], 'cat');
    await sleep(1500);
    for (const [name, other] of [['ann', 'ben'], ['ben', 'ann']]) {
      const page = pages[name];
      assert.equal(await topologyOf(page), 'sfu');
      const w = await readDecodeWatch(page, { stop: true });
      t.diagnostic(`${name} mesh → sfu: ${JSON.stringify(w)}`);
      const p = w.peers[peerIds[other]];
      assert.ok(p && p.grew, `${name}: ${other}'s tile decoded during the switch (${JSON.stringify(w)})`);
      assert.ok(p.trackChanges >= 1, `${name}: ${other}'s tile moved to the SFU's track (${JSON.stringify(w)})`);
      assert.ok(p.maxGapMs <= 1000, `${name}: ${other}'s tile went ${p.maxGapMs} ms without a new frame (${JSON.stringify(w)})`);
      assert.ok(w.peers[peerIds.cat]?.grew, `${name}: cat's tile decodes`);
    }
    await screenshot(ann, 'sfu-3-auto-switched');
  });

  await t.test('the third leaves: back to one mesh link each without a gap of over a second', async () => {
    await startDecodeWatch(ann);
    await startDecodeWatch(ben);
    await pages.cat.getByTestId('room-leave').click();
    await pages.cat.getByTestId('room-screen').waitFor({ state: 'hidden' });
    await pages.cat.context().close();
    delete pages.cat;
    // The server waits 5 s before going back to mesh; the switch itself takes at most 8 s more.
    await decodesOverMesh(ann, peerIds.ben, 'ann back in mesh');
    await decodesOverMesh(ben, peerIds.ann, 'ben back in mesh');
    await sleep(1500);
    for (const [name, other] of [['ann', 'ben'], ['ben', 'ann']]) {
      const page = pages[name];
      assert.equal(await topologyOf(page), 'mesh');
      const w = await readDecodeWatch(page, { stop: true });
      t.diagnostic(`${name} sfu → mesh: ${JSON.stringify(w)}`);
      const p = w.peers[peerIds[other]];
      assert.ok(p && p.trackChanges >= 1, `${name}: ${other}'s tile moved to the mesh track (${JSON.stringify(w)})`);
      assert.ok(p.maxGapMs <= 1000, `${name}: ${other}'s tile went ${p.maxGapMs} ms without a new frame (${JSON.stringify(w)})`);
      assert.match(await page.getByTestId('room-status').textContent(), /2 people/);
    }
  });
});
