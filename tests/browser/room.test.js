// room.test.js — a 3-user mesh room, relay-only: one user creates a room (peer-to-peer chosen
// in the form: an `auto` room of three would go through the SFU, see sfu.test.js) and copies
// its link, the others join from the link, every pair decodes video, and leaving updates
// everyone.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, peerStats, eventually, screenshot } from './lib/harness.js';

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

test('three users in a room: every pair decodes video, leaving updates the others', async (t) => {
  const users = ['carol', 'dave', 'erin'];
  const carol = await openAs(browser, server, server.token('carol', { name: 'Carol' }));

  // Carol creates the room through the UI and takes its link.
  await carol.getByTestId('nav-rooms').click();
  await carol.getByTestId('room-name').fill('Standup');
  await carol.getByTestId('room-max').fill('4');
  await carol.getByTestId('room-mode').selectOption('mesh');
  await carol.getByTestId('room-create-submit').click();
  await carol.getByTestId('room-created').waitFor();
  const link = await carol.getByTestId('room-link').inputValue();
  assert.match(link, /\/#room=[\w-]+$/);
  const roomId = decodeURIComponent(link.split('#room=')[1]);
  await carol.getByTestId('room-copy').click();
  await carol.getByTestId('room-join-created').click();
  await carol.getByTestId('room-screen').waitFor({ state: 'visible' });
  await carol.getByTestId('room-screen').and(carol.locator('[data-phase="joined"]')).waitFor({ timeout: 15000 });

  // Dave and Erin open the link (signed in through #token= as an app would link them).
  const dave = await openAs(browser, server, server.token('dave', { name: 'Dave' }), { hash: `room=${roomId}` });
  const erin = await openAs(browser, server, server.token('erin', { name: 'Erin' }), { hash: `room=${roomId}` });
  const pages = { carol, dave, erin };
  t.after(() => {
    if (process.env.DEBUG_BROWSER) for (const [n, p] of Object.entries(pages)) console.log(`--- ${n}\n${p.logs.join('\n')}`);
  });

  await t.test('every pair is connected through the relay and decodes video', async () => {
    for (const [name, page] of Object.entries(pages)) {
      const first = await eventually(async () => {
        const s = await peerStats(page);
        return s.length === 2 && s.every((p) => p.connectionState === 'connected' && p.framesDecoded > 0) ? s : null;
      }, { timeout: 40000, what: `${name}: two decoding peers` });
      const others = users.filter((u) => u !== name).sort();
      assert.deepEqual(first.map((p) => p.remote).sort(), others, `${name} is connected to ${others}`);
      for (const p of first) assert.equal(p.localType, 'relay', `${name} → ${p.remote} over a relay`);
      await eventually(async () => {
        const s = await peerStats(page);
        return s.every((p) => p.framesDecoded > (first.find((f) => f.peerId === p.peerId)?.framesDecoded ?? 0) + 5);
      }, { timeout: 15000, what: `${name}: framesDecoded grows on both peers` });
      assert.equal(await page.getByTestId('room-tile').count(), 2, `${name} sees two tiles`);
      assert.equal(await page.getByTestId('room-screen').getAttribute('data-topology'), 'mesh', `${name}: a mesh room stays peer-to-peer`);
      assert.equal(await page.getByTestId('room-share').isDisabled(), true, `${name}: no screen share in a mesh room`);
    }
    await screenshot(carol, 'room-1-three-people');
  });

  await t.test('leaving updates everyone', async () => {
    await erin.getByTestId('room-leave').click();
    await erin.getByTestId('room-screen').waitFor({ state: 'hidden' });
    for (const page of [carol, dave]) {
      await eventually(async () => (await page.getByTestId('room-tile').count()) === 1, { timeout: 10000, what: 'one tile left' });
      await eventually(async () => (await peerStats(page)).length === 1, { what: 'one peer left' });
      assert.match(await page.getByTestId('room-status').textContent(), /2 people/);
    }
    await screenshot(dave, 'room-2-after-leave');
  });
});
