'use strict';
// The built-in demo site, as `pagewire serve` shows it with no --root.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { REPO } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until } = require('./lib/wait');
const { POLL, registered, listed, textIs } = require('./lib/pages');

const OUTPUT = process.env.PAGEWIRE_TEST_OUTPUT || path.join(REPO, 'test-output');

let daemon;
let context;

browserSuite({}, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

/** Opens the demo page and presses "Open WebSocket". */
async function openDemo() {
  const page = await context.newPage();
  await page.goto(daemon.url + '/');
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);
  return { page, index };
}

test('the demo opens and closes its WebSocket with its buttons', async () => {
  const page = await context.newPage();
  await page.goto(daemon.url + '/');
  assert.equal(await page.title(), 'pagewire');
  assert.equal(await page.getAttribute('#conn', 'data-state'), 'closed');

  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);
  // The page shows its connection index, the one the CLI lists.
  await page.waitForFunction(
    (index) => document.getElementById('conn-text').textContent.includes('#' + index),
    index,
    POLL
  );
  assert.equal(await page.getAttribute('#status', 'data-ws-state'), 'open');

  await daemon.ok('ws', 'write', 'status', 'hello from a shell');
  await textIs(page, 'status', 'hello from a shell');

  await daemon.ok('ws', 'exec', 'status', 'highlight', 'rgb(255, 224, 138)');
  await page.waitForFunction(
    () => document.getElementById('status').style.backgroundColor === 'rgb(255, 224, 138)',
    null,
    POLL
  );

  await page.getByRole('button', { name: 'Close WebSocket' }).click();
  await until('the demo page to leave the listing', async () => !(await listed(daemon, index)));
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'closed', null, POLL);
  assert.equal(await page.getAttribute('#status', 'data-ws-state'), 'closed');
});

test('"Display on all pages" reaches every page with an open WebSocket', async () => {
  const a = await openDemo();
  const b = await openDemo();
  // A page without a WebSocket is not reached.
  const idle = await context.newPage();
  await idle.goto(daemon.url + '/');
  const idleText = await idle.textContent('#status');

  const text = 'Deploy "v2" done \\ all green';
  await a.page.fill('#message', text);
  await a.page.getByRole('button', { name: 'Display on all pages' }).click();

  await textIs(a.page, 'status', text);
  await textIs(b.page, 'status', text);
  // The daemon's answer is shown under the form.
  await a.page.waitForFunction(() => {
    const el = document.getElementById('result');
    return el.textContent !== '' && el.textContent !== '…';
  }, null, POLL);
  assert.equal(await a.page.getAttribute('#result', 'class'), 'result');
  assert.equal(await idle.textContent('#status'), idleText);
});

test('screenshot of the demo page', async () => {
  const { page } = await openDemo();
  await daemon.ok('ws', 'write', 'status', 'VPN up');
  await textIs(page, 'status', 'VPN up');
  fs.mkdirSync(OUTPUT, { recursive: true });
  const file = path.join(OUTPUT, 'demo.png');
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 0);
});
