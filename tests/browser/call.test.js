// call.test.js — a 1:1 video call between two users on separate pages, relay-only through
// signalbox's own TURN: ringing, accept, both decode remote video over a relay candidate pair,
// mute shows on the other side, screen share renegotiates, hang-up ends the call, and the call
// appears in both histories with analytics (quality reports, relay usage).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, peerStats, eventually, screenshot } from './lib/harness.js';

let server;
let browser;
before(async () => {
  server = await startServer();
  // Chromium's fake cameras: device 0 is I420, device 1 Y16 (depth: never encoded), device 2
  // MJPEG. The camera switch goes 0 → 2.
  browser = await launchBrowser({ cameras: 3 });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function framesGrow(page, { minReceivers = 1, what }) {
  const first = await eventually(async () => {
    const s = await peerStats(page);
    return s.length && s[0].connectionState === 'connected' && s[0].framesDecoded > 0 ? s : null;
  }, { timeout: 30000, what: `${what}: connected and decoding` });
  const later = await eventually(async () => {
    const s = await peerStats(page);
    return s[0].framesDecoded > first[0].framesDecoded + 10 && s[0].videoReceivers >= minReceivers ? s : null;
  }, { timeout: 15000, what: `${what}: framesDecoded grows` });
  return later[0];
}

test('two users call, see each other through the relay, mute, share the screen, hang up, and find it in history', async (t) => {
  const alice = await openAs(browser, server, server.token('alice', { name: 'Alice' }));
  const bob = await openAs(browser, server, server.token('bob', { name: 'Bob' }));
  t.after(async () => {
    if (process.env.DEBUG_BROWSER) console.log(alice.logs.join('\n'), '\n---\n', bob.logs.join('\n'));
  });
  await assert.doesNotReject(alice.getByTestId('whoami').filter({ hasText: 'Alice' }).waitFor());

  await t.test('alice calls bob; bob sees who rings and accepts', async () => {
    await alice.getByTestId('dial-to').fill('bob');
    await alice.getByTestId('call-video').click();
    await bob.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await bob.getByTestId('incoming-caller').textContent(), /Alice is calling/);
    await screenshot(bob, 'call-1-ringing');
    await bob.getByTestId('accept').click();
    await bob.getByTestId('incoming').waitFor({ state: 'hidden' });
  });

  await t.test('both decode remote video over a relay candidate pair', async () => {
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const s = await framesGrow(page, { what: name });
      assert.equal(s.localType, 'relay', `${name}: selected local candidate is a relay (${JSON.stringify(s)})`);
      assert.equal(await page.evaluate(() => window.signalbox.peerConnections()[0].pc.getConfiguration().iceTransportPolicy), 'relay');
      await page.getByTestId('call-state').filter({ hasText: 'Connected' }).waitFor();
    }
    await eventually(async () => /\d+:\d\d/.test(await alice.getByTestId('call-duration').textContent()), { what: 'duration shown' });
    await eventually(async () => (await alice.getByTestId('call-quality').getAttribute('data-candidate-type')) === 'relay', { timeout: 10000, what: 'quality indicator knows the path' });
    await screenshot(alice, 'call-2-connected-alice');
    await screenshot(bob, 'call-2-connected-bob');
  });

  await t.test('mute shows on the other side', async () => {
    await alice.getByTestId('toggle-mic').click();
    assert.equal(await alice.getByTestId('toggle-mic').getAttribute('aria-pressed'), 'true');
    await bob.getByTestId('remote-muted').waitFor({ timeout: 10000 });
    await alice.getByTestId('toggle-camera').click();
    await bob.getByTestId('remote-camera-off').waitFor({ timeout: 10000 });
    await screenshot(bob, 'call-3-remote-muted');
    await alice.getByTestId('toggle-mic').click();
    await alice.getByTestId('toggle-camera').click();
    await bob.getByTestId('remote-muted').waitFor({ state: 'detached', timeout: 10000 });
    await bob.getByTestId('remote-camera-off').waitFor({ state: 'detached', timeout: 10000 });
  });

  await t.test('switch camera replaces the track without renegotiation; the other side keeps decoding', async () => {
    const select = alice.getByTestId('switch-camera');
    await select.waitFor({ state: 'visible' });
    const options = await select.locator('option').evaluateAll((os) => os.map((o) => ({ value: o.value, label: o.textContent })));
    assert.equal(options.length, 3, `three cameras offered: ${JSON.stringify(options)}`);
    const before = await alice.evaluate(() => window.signalbox.peerConnections()[0].pc.getTransceivers().length);
    const target = options.find((o) => o.label.includes('fake_device_2'));
    await select.selectOption(target.value);
    await eventually(async () => alice.evaluate(() => {
      const { pc } = window.signalbox.peerConnections()[0];
      const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
      return sender && sender.track.label === 'fake_device_2' && pc.signalingState === 'stable';
    }), { what: 'the video sender carries the new camera' });
    assert.equal(await alice.evaluate(() => window.signalbox.peerConnections()[0].pc.getTransceivers().length), before, 'no new transceiver');
    await eventually(async () => bob.evaluate(() => window.signalbox.call.remote.camera === 'fake_device_2'), { what: 'bob is told the camera' });
    await framesGrow(bob, { what: 'bob after the switch' });
  });

  await t.test('screen share renegotiates: bob receives and decodes a second video track', async () => {
    await alice.getByTestId('toggle-screen').click();
    await alice.getByTestId('toggle-screen').and(alice.locator('[aria-pressed="true"]')).waitFor({ timeout: 10000 });
    await bob.getByTestId('remote-screen-tile').waitFor({ state: 'visible', timeout: 15000 });
    const decoded = await eventually(async () => bob.evaluate(async () => {
      const { pc } = window.signalbox.peerConnections()[0];
      const report = await pc.getStats();
      const video = [];
      report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') video.push(s.framesDecoded || 0); });
      return video.length >= 2 && video.every((f) => f > 0) ? video : null;
    }), { timeout: 20000, what: 'two decoding video receivers on bob' });
    assert.ok(decoded.length >= 2);
    await screenshot(bob, 'call-4-screen-share-bob');
    await alice.getByTestId('toggle-screen').click();
    await bob.getByTestId('remote-screen-tile').waitFor({ state: 'hidden', timeout: 15000 });
  });

  let callId;
  await t.test('call-stats reach the server while the call runs', async () => {
    callId = await alice.evaluate(() => window.signalbox.call.callId);
    let lastBody;
    assert.ok(callId);
    await eventually(async () => {
      const { body } = await server.api(server.token('alice'), 'GET', `/calls/${callId}/analytics`);
      lastBody = body;
      const a = body.analytics || body;
      return a.quality && a.quality.reports >= 2;
    }, { timeout: 20000, what: 'quality reports stored' }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(lastBody)}`); });
  });

  await t.test('hang-up ends the call on both sides', async () => {
    await alice.getByTestId('hangup').click();
    await bob.getByTestId('call-state').filter({ hasText: /hung up|ended/i }).waitFor({ timeout: 10000 });
    await screenshot(bob, 'call-5-ended-bob');
    assert.equal((await peerStats(alice)).length, 0);
    await eventually(async () => (await peerStats(bob)).length === 0, { what: 'bob closed the peer connection' });
  });

  await t.test('the call is in both histories, with analytics', async () => {
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      await page.getByTestId('call-close').click().catch(() => {});
      await page.getByTestId('call-screen').waitFor({ state: 'hidden', timeout: 10000 });
      await page.getByTestId('nav-history').click();
      const row = page.locator(`[data-testid="history-row"][data-call-id="${callId}"]`);
      await row.waitFor({ timeout: 10000 });
      assert.equal(await row.getAttribute('data-status'), 'ended', `${name}: the call ended`);
      await row.getByTestId('history-details').click();
      const box = page.getByTestId('analytics');
      await box.and(page.locator(`[data-call-id="${callId}"]`)).waitFor({ timeout: 10000 });
      assert.ok(Number(await box.getAttribute('data-reports')) >= 2, `${name}: quality reports in analytics`);
      const summary = await page.getByTestId('analytics-summary').textContent();
      assert.match(summary, /Round-trip time\d+ ms avg/);
      assert.match(summary, /TURN relay\d+ allocation/, `${name}: relay usage shown (${summary})`);
      await screenshot(page, `call-6-history-${name}`);
    }
  });
});
