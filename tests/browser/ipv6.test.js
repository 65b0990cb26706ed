// ipv6.test.js — issue #16: a relay-only call whose selected relay candidates are IPv6. The
// TURN server listens on 127.0.0.1 and ::1 and hands out IPv6 relayed addresses by default
// (turn_default_relay_family = ipv6), so Chromium, which never names a family, gets an IPv6
// relay candidate over its IPv4 connection to the server; the self-test lists it as IPv6.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, peerStats, eventually, screenshot, freeDualPort } from './lib/harness.js';

let server;
let browser;
before(async () => {
  const turnPort = await freeDualPort();
  server = await startServer({
    turnPort,
    turnListen: `127.0.0.1:${turnPort},[::1]:${turnPort}`,
    sfu: false,
    extraArgs: ['--no-sfu', '--turn-allow-peer', '::1/128'],
    env: { SIGNALBOX_TURN_DEFAULT_RELAY_FAMILY: 'ipv6' },
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a relay-only call connects over IPv6 relay candidates, and the self-test shows them', async (t) => {
  const alice = await openAs(browser, server, server.token('alice6', { name: 'Alice' }));
  const bob = await openAs(browser, server, server.token('bob6', { name: 'Bob' }));

  await t.test('the call connects and its selected relay candidates are IPv6', async () => {
    await alice.getByTestId('dial-to').fill('bob6');
    await alice.getByTestId('call-audio').click();
    await bob.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10000 });
    await bob.getByTestId('accept').click();
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const s = await eventually(async () => {
        const all = await peerStats(page);
        const c = all[0];
        return c && c.connectionState === 'connected' && c.localAddress && c.inbound.some((i) => i.packetsReceived > 10) ? c : null;
      }, { timeout: 30000, what: `${name}: connected, with audio packets arriving over the selected pair` });
      assert.equal(s.localType, 'relay', `${name}: a relay candidate (${JSON.stringify(s)})`);
      assert.equal(s.localAddress, '::1', `${name}: the selected relay candidate is IPv6 (${JSON.stringify(s)})`);
      assert.equal(s.remoteAddress, '::1', `${name}: the remote candidate is IPv6 too (${JSON.stringify(s)})`);
    }
    await screenshot(alice, 'ipv6-call');
    await alice.getByTestId('hangup').click();
  });

  await t.test('the self-test lists the IPv6 relay candidate as IPv6', async () => {
    await alice.getByTestId('nav-selftest').click();
    await alice.getByTestId('selftest-run').click();
    const verdict = alice.getByTestId('selftest-verdict');
    await verdict.and(alice.locator('[data-done="true"]')).waitFor({ timeout: 30000 });
    const rows = await alice.getByTestId('candidate-row').evaluateAll((els) => els.map((r) => ({ type: r.dataset.type, family: r.dataset.family, text: r.textContent })));
    const relays = rows.filter((r) => r.type === 'relay');
    assert.ok(relays.length > 0, `relay candidates listed: ${JSON.stringify(rows)}`);
    assert.ok(relays.every((r) => r.family === 'IPv6' && r.text.includes('[::1]:')), `IPv6 relay rows, bracketed: ${JSON.stringify(relays)}`);
    assert.equal(await verdict.getAttribute('data-turn-udp'), 'reachable');
    await screenshot(alice, 'ipv6-selftest');
  });
});
