// ui.test.js — the parts of the client around a call: signing in with an account or a pasted
// token and out again, expired tokens, a callee who is offline, denied or missing camera, the
// plain-HTTP-from-another-host warning, reconnecting after the server comes back, and the
// page at phone width with labelled, keyboard-reachable controls.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, openAs, eventually, screenshot, freeDualPort } from './lib/harness.js';

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

test('sign in with an account, see who I am, sign out; a wrong password says so', async () => {
  server.addUser('gina', 'correct horse battery', 'Gina');
  const page = await newPage(browser, server);
  await page.getByTestId('signin').waitFor();
  await screenshot(page, 'ui-signin');
  await page.getByTestId('login-user').fill('gina');
  await page.getByTestId('login-pass').fill('wrong password');
  await page.getByTestId('login-submit').click();
  await page.getByTestId('login-error').filter({ hasText: 'Wrong username or password' }).waitFor();
  await page.getByTestId('login-pass').fill('correct horse battery');
  await page.getByTestId('login-pass').press('Enter');
  await page.getByTestId('whoami').filter({ hasText: 'Gina' }).waitFor();
  await page.getByTestId('signal-status').and(page.locator('[data-status="open"]')).waitFor();
  // Still signed in after a reload (the token is kept).
  await page.reload();
  await page.getByTestId('whoami').filter({ hasText: 'Gina' }).waitFor();
  await page.getByTestId('signout').click();
  await page.getByTestId('signin').waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('signalbox.token')), null);
});

test('sign in with a pasted token; a token link is taken out of the address bar', async () => {
  const page = await newPage(browser, server);
  await page.getByTestId('token-input').fill('not-a-token');
  await page.getByTestId('token-submit').click();
  await page.getByTestId('token-error').filter({ hasText: 'does not look like a token' }).waitFor();
  await page.getByTestId('token-input').fill(server.token('hank', { name: 'Hank' }));
  await page.getByTestId('token-submit').click();
  await page.getByTestId('whoami').filter({ hasText: 'Hank' }).waitFor();

  const linked = await newPage(browser, server, { path: `/#token=${server.token('ivy', { name: 'Ivy' })}` });
  await linked.getByTestId('whoami').filter({ hasText: 'Ivy' }).waitFor();
  assert.ok(!linked.url().includes('token='), `token removed from ${linked.url()}`);
});

test('an expired token gives a clear message, at start and during a session', async () => {
  const stale = server.token('jack', { ttl: '1s' });
  await new Promise((r) => setTimeout(r, 2100));
  const page = await newPage(browser, server, { path: `/#token=${stale}` });
  await page.getByTestId('signin-reason').filter({ hasText: /expired/i }).waitFor();

  // During a session the page signs out when the token's exp passes, with nothing clicked. The
  // token lives long enough for a slow sign-in; the wait is measured from its exp, not a sleep.
  const ttlSeconds = 12;
  const expiresAt = Date.now() + ttlSeconds * 1000;
  const page2 = await newPage(browser, server, { path: `/#token=${server.token('jack', { ttl: `${ttlSeconds}s` })}` });
  await page2.getByTestId('whoami').waitFor({ timeout: ttlSeconds * 1000 });
  const left = expiresAt - Date.now();
  assert.ok(left > 0, 'signed in before the token expired');
  await page2.getByTestId('signin-reason').filter({ hasText: /expired/i }).waitFor({ timeout: left + 15000 });
  assert.equal(await page2.evaluate(() => localStorage.getItem('signalbox.token')), null, 'the expired token is forgotten');
  await screenshot(page2, 'ui-expired');
});

test('the relay-only setting is a labelled checkbox that sticks', async () => {
  const page = await openAs(browser, server, server.token('rose'), { relayOnly: false });
  await page.getByTestId('nav-settings').click();
  const box = page.getByLabel('Relay all media through the TURN server (relay-only)');
  assert.equal(await box.isChecked(), false);
  await box.check();
  assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem('signalbox.settings')).relayOnly), true);
  await page.reload();
  await page.getByTestId('nav-settings').click();
  assert.equal(await page.getByTestId('setting-relay-only').isChecked(), true);
  await screenshot(page, 'ui-settings');
});

test('calling someone who is offline says so', async () => {
  const page = await openAs(browser, server, server.token('kate'));
  await page.getByTestId('dial-to').fill('nobody-home');
  await page.getByTestId('call-video').click();
  await page.getByTestId('call-state').filter({ hasText: 'nobody-home is not online right now' }).waitFor({ timeout: 10000 });
  await screenshot(page, 'ui-callee-offline');
});

test('denied camera and missing devices give clear messages', async () => {
  const strict = await launchBrowser({ fakeUi: false });
  try {
    const denied = await newPage(strict, server, { path: `/#token=${server.token('liam')}`, grant: false });
    await denied.getByTestId('signal-status').and(denied.locator('[data-status="open"]')).waitFor();
    await denied.getByTestId('dial-to').fill('bob');
    await denied.getByTestId('call-video').click();
    await denied.getByTestId('call-state').filter({ hasText: /denied/ }).waitFor({ timeout: 10000 });
    await screenshot(denied, 'ui-camera-denied');
  } finally {
    await strict.close();
  }
  const none = await newPage(browser, server, {
    path: `/#token=${server.token('mia')}`,
    initScript: () => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));
    },
  });
  await none.getByTestId('signal-status').and(none.locator('[data-status="open"]')).waitFor();
  await none.getByTestId('dial-to').fill('bob');
  await none.getByTestId('call-audio').click();
  await none.getByTestId('call-state').filter({ hasText: /No microphone was found/ }).waitFor({ timeout: 10000 });
});

test('plain HTTP from another host: the page explains why the camera is unavailable', async () => {
  const port = new URL(server.url).port;
  const remote = await launchBrowser({ extraArgs: ['--host-resolver-rules=MAP signalbox.test 127.0.0.1'] });
  try {
    const context = await remote.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await context.newPage();
    await page.goto(`http://signalbox.test:${port}/#token=${server.token('noah')}`);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    const banner = page.getByTestId('insecure-warning');
    await banner.waitFor();
    const text = await banner.textContent();
    assert.match(text, /HTTPS/);
    assert.match(text, /--tls-cert/);
    assert.match(text, /reverse proxy/);
    await page.getByTestId('whoami').waitFor();
    await screenshot(page, 'ui-insecure-warning');
    // Localhost is a secure context: no warning there.
    const local = await newPage(browser, server);
    assert.equal(await local.getByTestId('insecure-warning').isVisible(), false);
  } finally {
    await remote.close();
  }
});

test('the client reconnects when the server comes back', async () => {
  const port = await freeDualPort();
  let own = await startServer({ listen: `127.0.0.1:${port}` });
  try {
    const token = own.token('olga');
    const page = await openAs(browser, own, token);
    await own.stop({ keepData: true });
    await page.getByTestId('signal-status').and(page.locator('[data-status="reconnecting"]')).waitFor({ timeout: 10000 });
    await page.getByTestId('notice').filter({ hasText: 'Lost the connection to the server' }).waitFor();
    await screenshot(page, 'ui-reconnecting');
    own = await startServer({ listen: `127.0.0.1:${port}`, dataDir: own.dataDir, turnPort: own.turnPort });
    await page.getByTestId('signal-status').and(page.locator('[data-status="open"]')).waitFor({ timeout: 40000 });
  } finally {
    await own.stop();
  }
});

test('phone width: the app and the call screen fit, controls are labelled and reachable by keyboard', async () => {
  const phone = { width: 390, height: 844 };
  const caller = await openAs(browser, server, server.token('pia', { name: 'Pia' }), { viewport: phone });
  const callee = await openAs(browser, server, server.token('quinn', { name: 'Quinn' }), { viewport: phone });
  await screenshot(caller, 'ui-phone-home');
  const overflow = await caller.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at phone width (${overflow}px)`);

  // Keyboard only: type the id and press Enter (the default button is "Video call").
  await caller.getByTestId('dial-to').focus();
  await caller.keyboard.type('quinn');
  await caller.keyboard.press('Enter');
  await callee.getByTestId('incoming').waitFor();
  // Focus starts on Accept: Enter answers.
  assert.equal(await callee.evaluate(() => document.activeElement?.dataset.testid), 'accept');
  await callee.keyboard.press('Enter');
  await caller.getByTestId('call-state').filter({ hasText: 'Connected' }).waitFor({ timeout: 30000 });
  await screenshot(callee, 'ui-phone-call');
  const unlabelled = await caller.evaluate(() => [...document.querySelectorAll('button, input, select, textarea')]
    .filter((e) => e.offsetParent !== null)
    .filter((e) => !(e.getAttribute('aria-label') || e.labels?.[0]?.textContent.trim() || e.textContent.trim()))
    .map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, [], 'every visible control has a name');
  // Tab reaches the call controls; Enter on "Mute" mutes.
  await caller.getByTestId('toggle-mic').focus();
  await caller.keyboard.press('Enter');
  await callee.getByTestId('remote-muted').waitFor();
  await caller.getByTestId('hangup').focus();
  await caller.keyboard.press('Enter');
  await callee.getByTestId('call-state').filter({ hasText: /hung up/ }).waitFor();
});
