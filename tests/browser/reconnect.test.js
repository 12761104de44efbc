'use strict';
// A page outlives its daemon: when the daemon goes away and comes back on
// the same port, ws.js reconnects and registers its names again.

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');

const { Daemon, SITE } = require('./lib/daemon');
const { launch } = require('./lib/browser');
const { POLL, openRegistered, registered, textIs } = require('./lib/pages');

let daemon;
let context;

before(async () => {
  daemon = await new Daemon({ root: SITE }).start();
  context = await launch();
});

after(async () => {
  if (context) await context.close();
  if (daemon) await daemon.dispose();
});

afterEach(async () => {
  const errors = [];
  for (const page of context.pages()) {
    errors.push(...page.errors);
    await page.close();
  }
  assert.deepEqual(errors, [], 'uncaught errors on a page');
});

// Stops the daemon with `signal`, checks the page notices and keeps
// trying, starts the daemon again and checks the page is back as it was.
async function outlive(signal) {
  const { page } = await openRegistered(context, daemon, ['status', 'other']);
  await page.evaluate(() => { window.marker = 'same document'; });
  const before = await page.evaluate(() => wsInfo().attempts);

  await daemon.stop(signal);
  await page.waitForFunction(() => wsState() === 'connecting', null, POLL);
  // While the daemon is away the page keeps knocking, with a backoff.
  await page.waitForFunction((n) => wsInfo().attempts >= n + 2 && wsInfo().retryIn !== null, before, POLL);
  const dropped = await page.evaluate(() => window.drops[0]);
  assert.equal(await page.getAttribute('#status', 'data-ws-state'), 'connecting');

  await daemon.start();
  await registered(daemon, page, ['status', 'other']);

  await daemon.ok('ws', 'write', 'status', 'back again');
  await daemon.ok('ws', 'write', 'other', 'other too');
  await textIs(page, 'status', 'back again');
  await textIs(page, 'other', 'other too');
  assert.equal(await page.evaluate(() => window.marker), 'same document', 'the page was not reloaded');
  assert.equal(await page.getAttribute('#other', 'data-ws-state'), 'open');
  return dropped;
}

test('a daemon killed and started again gets the page back, registered, without a reload', async () => {
  await outlive('SIGKILL');
});

test('a daemon shutting down closes with 1001 and the page comes back after its restart', async () => {
  const code = await outlive('SIGTERM');
  assert.equal(code, 1001);
});
