// console.test.js — the admin console in one headless page: calls made over the REST API from
// node appear in the live view without a reload, show their quality charts, and go away when
// they end — ended by a participant, and ended with the console's own End call button (reason
// `admin`); a room in use shows, End call empties it (the room stays) and Close room deletes
// it; accounts are added (a duplicate is refused with a message), reset and removed; the
// webhook deliveries section renders its list (answered in the page, as this server has no
// webhooks yet) or says it is not available. A non-admin gets 403 from the admin API and no
// console in the page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openAs, eventually, screenshot } from './lib/harness.js';

let server;
let browser;
before(async () => {
  server = await startServer({ sfu: false });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Waits for a locator's state within `timeout`; a timeout says what was awaited. */
async function waitFor(locator, what, { state = 'visible', timeout = 10000 } = {}) {
  try {
    await locator.waitFor({ state, timeout });
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what} (${state}): ${e.message.split('\n')[0]}`);
  }
}

/** An active 1:1 call from `caller` to `callee`, made over REST; returns its id. */
async function activeCall(caller, callee, calleeToken, callerToken) {
  const created = await server.api(callerToken, 'POST', '/calls', { calleeId: callee, callType: 'audio' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.callSession.id;
  const accepted = await server.api(calleeToken, 'PUT', `/calls/${id}/accept`);
  assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
  return id;
}

async function openConsole(token) {
  const page = await openAs(browser, server, token, { relayOnly: false });
  await page.evaluate(() => { location.hash = '#/console'; });
  return page;
}

test('an admin sees calls appear and end in the console, and ends one with End call', async () => {
  const admin = server.token('root', { admin: true, name: 'Root' });
  const alice = server.token('alice', { name: 'Alice' });
  const bob = server.token('bob');
  const page = await openConsole(admin);
  try {
    await waitFor(page.getByTestId('nav-console'), 'the Console tab for an admin');
    await waitFor(page.getByTestId('console'), 'the console section');
    await waitFor(page.getByTestId('console-calls-empty'), '"No calls right now."');
    await eventually(async () => ['unavailable', 'loaded'].includes(await page.getByTestId('console-webhooks').getAttribute('data-state')),
      { timeout: 10000, what: 'the webhook deliveries to load or be reported unavailable' });
    const hooks = await page.getByTestId('console-webhooks').getAttribute('data-state');
    const note = await page.getByTestId('console-webhooks-note').textContent();
    if (hooks === 'unavailable') assert.match(note, /not available/, note);

    // A call made elsewhere shows up without a reload, with both participants.
    const first = await activeCall('alice', 'bob', bob, alice);
    for (const [rtt, loss] of [[30, 0], [45, 0.02], [38, 0.01]]) {
      const r = await server.api(alice, 'POST', `/calls/${first}/stats`, { stats: { rttMs: rtt, jitterMs: 4, packetLoss: loss, bitrateKbps: 600 } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    const row = page.locator(`[data-testid="console-call"][data-call-id="${first}"]`);
    await waitFor(row, `the call ${first} in the live view`);
    assert.equal(await row.getAttribute('data-status'), 'active');
    const people = await row.getByTestId('console-participant').evaluateAll((ps) => ps.map((p) => p.dataset.userId).sort());
    assert.deepEqual(people, ['alice', 'bob']);
    assert.match(await row.textContent(), /audio, p2p/);

    // Its quality reports as charts.
    await row.getByTestId('console-quality').click();
    const rtt = page.getByTestId('console-chart-rtt');
    await waitFor(rtt, 'the round-trip-time chart');
    assert.equal(await rtt.getAttribute('data-points'), '3');
    assert.equal(await page.locator('[data-testid="console-chart-rtt"] path.lc-line').count(), 1, 'one line: alice reported');
    await screenshot(page, 'console-live');

    // Ended by a participant: it leaves the live view.
    const hung = await server.api(alice, 'PUT', `/calls/${first}/hangup`);
    assert.equal(hung.status, 200, JSON.stringify(hung.body));
    await waitFor(row, `the ended call ${first} to leave the live view`, { state: 'detached' });

    // Ended with the console's button: for everyone, with reason admin.
    const second = await activeCall('alice', 'bob', bob, alice);
    const row2 = page.locator(`[data-testid="console-call"][data-call-id="${second}"]`);
    await waitFor(row2, `the call ${second} in the live view`);
    await row2.getByTestId('console-end-call').click();
    await waitFor(row2, `the call ${second} to leave the live view after End call`, { state: 'detached' });
    const after = await server.api(alice, 'GET', `/calls/${second}`);
    assert.equal(after.body.callSession.status, 'ended');
    assert.equal(after.body.callSession.endReason, 'admin');
    await waitFor(page.getByTestId('console-calls-empty'), '"No calls right now." again');

    // A room in use shows with its people, and Close room ends it.
    const room = await server.api(alice, 'POST', '/rooms', { name: 'Standup', mode: 'mesh' });
    assert.equal(room.status, 201, JSON.stringify(room.body));
    const roomId = room.body.room.id;
    for (const t of [alice, bob]) assert.equal((await server.api(t, 'POST', `/rooms/${roomId}/join`)).status, 200);
    const roomRow = page.locator(`[data-testid="console-room"][data-room-id="${roomId}"]`);
    await waitFor(roomRow, `the room ${roomId} in the live view`);
    assert.equal(await roomRow.getByTestId('console-participant').count(), 2);
    assert.match(await roomRow.textContent(), /Standup/);
    await roomRow.getByTestId('console-end-room-call').click();
    await waitFor(roomRow, 'the room to leave the live view after End call', { state: 'detached' });
    const kept = await server.api(alice, 'GET', `/rooms/${roomId}`);
    assert.equal(kept.status, 200, 'End call keeps the room');
    assert.equal(kept.body.room.participantCount, 0);
    // In use again, then closed for good.
    assert.equal((await server.api(bob, 'POST', `/rooms/${roomId}/join`)).status, 200);
    await waitFor(roomRow, `the room ${roomId} in use again`);
    await roomRow.getByTestId('console-close-room').click();
    await waitFor(roomRow, 'the closed room to leave the live view', { state: 'detached' });
    assert.equal((await server.api(alice, 'GET', `/rooms/${roomId}`)).status, 404, 'Close room deletes it');
  } catch (e) {
    await screenshot(page, 'console-failure').catch(() => {});
    throw new Error(`${e.message}\npage log:\n${page.logs.join('\n')}`);
  } finally {
    await page.context().close();
  }
});

test('an admin adds, resets and removes an account in the console', async () => {
  const admin = server.token('root2', { admin: true });
  const page = await openConsole(admin);
  const login = (password) => fetch(`${server.url}/api/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username: 'dana', password }),
  }).then((r) => r.status);
  try {
    await waitFor(page.getByTestId('console-user-add'), 'the add-account form');
    await page.getByTestId('console-new-username').fill('dana');
    await page.getByTestId('console-new-name').fill('Dana');
    await page.getByTestId('console-new-password').fill('first password');
    await page.getByTestId('console-user-submit').click();
    const row = page.locator('[data-testid="console-user"][data-user-id="dana"]');
    await waitFor(row, 'the new account dana in the list');
    assert.match(await row.textContent(), /Dana/);
    assert.equal(await login('first password'), 200);

    // The same username again is refused, with a message.
    await page.getByTestId('console-new-username').fill('dana');
    await page.getByTestId('console-new-password').fill('other password');
    await page.getByTestId('console-user-submit').click();
    await waitFor(page.getByTestId('console-user-error').filter({ hasText: 'already exists' }), 'the duplicate-account error');

    await row.getByTestId('console-user-newpass').fill('second password');
    await row.getByTestId('console-user-reset').click();
    await eventually(async () => (await login('second password')) === 200, { timeout: 10000, what: 'the new password to work' });
    assert.equal(await login('first password'), 401);

    // Remove asks once more, then removes.
    await row.getByTestId('console-user-remove').click();
    await waitFor(page.locator('[data-testid="console-user"][data-user-id="dana"] [data-testid="console-user-remove"]').filter({ hasText: 'Really remove?' }), 'the remove confirmation');
    await page.locator('[data-testid="console-user"][data-user-id="dana"] [data-testid="console-user-remove"]').click();
    await waitFor(page.locator('[data-testid="console-user"][data-user-id="dana"]'), 'dana to leave the list', { state: 'detached' });
    assert.equal(await login('second password'), 401);
  } catch (e) {
    await screenshot(page, 'console-users-failure').catch(() => {});
    throw new Error(`${e.message}\npage log:\n${page.logs.join('\n')}`);
  } finally {
    await page.context().close();
  }
});

test('webhook deliveries are listed when the server has them', async () => {
  // This server has no webhooks yet (another branch adds GET /api/admin/webhooks/deliveries):
  // answer for it in the page, with the documented shape.
  const admin = server.token('root3', { admin: true });
  const context = await browser.newContext();
  await context.route('**/api/admin/webhooks/deliveries', (route) => route.fulfill({
    status: 200,
    contentType: 'application/json',
    body: JSON.stringify({ deliveries: [
      { id: 'd1', event: 'call.ended', url: 'https://hooks.example/a', status: 'delivered', attempts: 1, lastError: null, lastStatus: 204, createdAt: new Date().toISOString(), deliveredAt: new Date().toISOString(), nextAttemptAt: null },
      { id: 'd2', event: 'call.started', url: 'https://hooks.example/b', status: 'failed', attempts: 3, lastError: 'connection refused', lastStatus: null, createdAt: new Date().toISOString(), deliveredAt: null, nextAttemptAt: new Date().toISOString() },
    ] }),
  }));
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/#token=${encodeURIComponent(admin)}`);
    await waitFor(page.getByTestId('nav-console'), 'the Console tab');
    await page.evaluate(() => { location.hash = '#/console'; });
    const rows = page.getByTestId('console-delivery');
    await eventually(async () => (await rows.count()) === 2, { timeout: 10000, what: 'two webhook deliveries listed' });
    assert.equal(await page.getByTestId('console-webhooks').getAttribute('data-state'), 'loaded');
    assert.match(await rows.nth(0).textContent(), /call\.ended.*hooks\.example\/a.*delivered \(HTTP 204\)/);
    assert.match(await rows.nth(1).textContent(), /failed.*3.*connection refused/);
  } finally {
    await context.close();
  }
});

test('a non-admin gets 403 from the admin API and no console in the page', async () => {
  const token = server.token('mallory');
  const live = await server.api(token, 'GET', '/api/admin/live');
  assert.equal(live.status, 403);
  assert.equal(live.body.error.code, 'forbidden');
  const page = await openConsole(token);
  try {
    await waitFor(page.locator('#view-call'), 'the call page instead of the console');
    assert.equal(await page.getByTestId('nav-console').isHidden(), true, 'no Console tab');
    assert.equal(await page.getByTestId('console').isHidden(), true, 'no console section');
    assert.equal(await page.getByTestId('console-call').count(), 0);
  } finally {
    await page.context().close();
  }
});
