'use strict';
// A page outlives its daemon: when the daemon goes away and comes back on
// the same port, ws.js reconnects and registers its names again.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { POLL, openRegistered, registered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
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
