// selftest.test.js — the connection self-test page against the running server: candidates are
// gathered and listed, and the verdict says STUN and TURN (UDP and TCP) are reachable.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, screenshot } from './lib/harness.js';

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

test('the self-test reports STUN and TURN reachable', async () => {
  const page = await openAs(browser, server, server.token('frank'), { relayOnly: false });
  await page.getByTestId('nav-selftest').click();
  await page.getByTestId('selftest-run').click();
  const verdict = page.getByTestId('selftest-verdict');
  await verdict.and(page.locator('[data-done="true"]')).waitFor({ timeout: 30000 });
  await screenshot(page, 'selftest');
  const servers = await page.getByTestId('selftest-server').evaluateAll((els) => els.map((e) => ({ url: e.dataset.url, ok: e.dataset.ok })));
  assert.ok(servers.length >= 3, `stun + turn udp + turn tcp listed: ${JSON.stringify(servers)}`);
  assert.equal(await verdict.getAttribute('data-stun'), 'reachable', 'STUN reachable');
  assert.equal(await verdict.getAttribute('data-turn-udp'), 'reachable', 'TURN UDP reachable');
  assert.equal(await verdict.getAttribute('data-turn-tcp'), 'reachable', 'TURN TCP reachable');
  // No certificate in this test: TURN over TLS is not offered, and the page says so.
  assert.equal(await verdict.getAttribute('data-turn-tls'), 'not-offered');
  const types = await page.getByTestId('candidate-row').evaluateAll((rows) => rows.map((r) => r.dataset.type));
  assert.ok(types.includes('relay'), `a relay candidate is listed: ${types}`);
  assert.ok(types.includes('host'), `a host candidate is listed: ${types}`);
});
