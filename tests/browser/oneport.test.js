// oneport.test.js — issue #14: one TLS port for everything. The server runs HTTPS on one port
// (the page, the REST API and the /rtc WebSocket over wss://), and that same port takes TURN
// over TLS. The pages are offered only the `turns:` URI of that port (the other relay URIs are
// taken out of /ice-config's answer), so a relay-only call that connects has its selected
// candidate relayed over TLS through the HTTPS port.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openAs, peerStats, eventually, screenshot } from './lib/harness.js';

let server;
let browser;
let certDir;
let port;
before(async () => {
  certDir = mkdtempSync(join(tmpdir(), 'signalbox-oneport-'));
  const [cert, key] = [join(certDir, 'tls.crt'), join(certDir, 'tls.key')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  server = await startServer({
    sfu: false,
    extraArgs: ['--no-sfu', '--tls-cert', cert, '--tls-key', key, '--turn-tls-listen', '127.0.0.1:0', '--public-host', 'localhost'],
  });
  port = new URL(server.url).port;
  // Chromium checks the certificate of a TURN server over TLS too; this one is self-signed.
  browser = await launchBrowser({ extraArgs: ['--ignore-certificate-errors'] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

/** Keeps only the `turns:` URI of the HTTPS port in every /ice-config answer the page gets. */
function onlyTheHttpsPort(context) {
  const front = `turns:localhost:${port}?transport=tcp`;
  return context.route('**/ice-config', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    assert.ok(body.uris.includes(front), `/ice-config lists ${front}: ${JSON.stringify(body.uris)}`);
    body.uris = [front];
    body.iceServers = body.iceServers.filter((s) => s.username).map((s) => ({ ...s, urls: [front] }));
    await route.fulfill({ response, json: body });
  });
}

test('a relay-only call over TURN-TLS on the HTTPS port, signaled over wss:// on that port', async (t) => {
  assert.match(server.url, /^https:\/\//, 'the server speaks HTTPS');
  const alice = await openAs(browser, server, server.token('alice443', { name: 'Alice' }), { setup: onlyTheHttpsPort });
  const bob = await openAs(browser, server, server.token('bob443', { name: 'Bob' }), { setup: onlyTheHttpsPort });

  await t.test('the call connects through a relay candidate allocated over TLS on the HTTPS port', async () => {
    await alice.getByTestId('dial-to').fill('bob443');
    await alice.getByTestId('call-audio').click();
    await bob.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10000 });
    await bob.getByTestId('accept').click();
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const s = await eventually(async () => {
        const c = (await peerStats(page))[0];
        return c && c.connectionState === 'connected' && c.inbound.some((i) => i.packetsReceived > 10) ? c : null;
      }, { timeout: 30000, what: `${name}: connected, with audio packets arriving over the selected pair` });
      assert.equal(s.localType, 'relay', `${name}: a relay candidate (${JSON.stringify(s)})`);
      assert.equal(s.relayProtocol, 'tls', `${name}: allocated over TLS (${JSON.stringify(s)})`);
      assert.equal(s.localUrl, `turns:localhost:${port}?transport=tcp`, `${name}: through the HTTPS port (${JSON.stringify(s)})`);
    }
    await screenshot(alice, 'oneport-call');
    await alice.getByTestId('hangup').click();
  });
});
