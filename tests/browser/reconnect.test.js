// reconnect.test.js — the server goes away in the middle of a call (signaling and the TURN relay
// both) and comes back on the same ports: both pages show that they are reconnecting, the
// signaling socket comes back with backoff, the call is resumed with an ICE restart over fresh
// relay allocations, and remote video is decoded again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, peerStats, eventually, screenshot, freeDualPort } from './lib/harness.js';

const ufrag = (page) => page.evaluate(() => /a=ice-ufrag:(\S+)/.exec(window.signalbox.peerConnections()[0].pc.localDescription.sdp)[1]);

test('a call survives the server restarting: reconnect, ICE restart, video again', async (t) => {
  const port = await freeDualPort();
  let server = await startServer({ listen: `127.0.0.1:${port}` });
  const browser = await launchBrowser();
  t.after(async () => { await browser.close(); await server.stop(); });

  const alice = await openAs(browser, server, server.token('alice', { name: 'Alice' }));
  const bob = await openAs(browser, server, server.token('bob', { name: 'Bob' }));
  await alice.getByTestId('dial-to').fill('bob');
  await alice.getByTestId('call-video').click();
  await bob.getByTestId('accept').click();
  for (const page of [alice, bob]) {
    await eventually(async () => (await peerStats(page))[0]?.framesDecoded > 0, { timeout: 30000, what: 'decoding before the restart' });
  }
  const before = { alice: await ufrag(alice), bob: await ufrag(bob) };

  await server.stop({ keepData: true });
  await alice.getByTestId('call-state').filter({ hasText: /reconnecting/i }).waitFor({ timeout: 10000 });
  await alice.getByTestId('signal-status').and(alice.locator('[data-status="reconnecting"]')).waitFor();
  await screenshot(alice, 'reconnect-1-server-down');

  server = await startServer({ listen: `127.0.0.1:${port}`, dataDir: server.dataDir, turnPort: server.turnPort });
  for (const [name, page] of [['alice', alice], ['bob', bob]]) {
    await page.getByTestId('signal-status').and(page.locator('[data-status="open"]')).waitFor({ timeout: 40000 });
    const resumed = await eventually(async () => {
      const s = (await peerStats(page))[0];
      return s && s.connectionState === 'connected' ? s : null;
    }, { timeout: 40000, what: `${name}: media connected again` });
    await eventually(async () => (await peerStats(page))[0].framesDecoded > resumed.framesDecoded + 20, { timeout: 20000, what: `${name}: decoding again` });
    assert.equal((await peerStats(page))[0].localType, 'relay');
    assert.notEqual(await ufrag(page), before[name], `${name}: ICE was restarted (new ufrag)`);
    await page.getByTestId('call-state').filter({ hasText: 'Connected' }).waitFor();
  }
  await screenshot(bob, 'reconnect-2-resumed');
  await alice.getByTestId('hangup').click();
  await bob.getByTestId('call-state').filter({ hasText: /hung up/ }).waitFor({ timeout: 10000 });
});
