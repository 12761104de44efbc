'use strict';
// Pages that remember, in Chromium: ws.js keeps the resume token of its
// tab and comes back to its index after the daemon restarts; a retained
// text is shown at once on a page that opens or reloads after the write;
// the daemon's `ws` listing shows what ws.js reports of the page's
// visibility.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { POLL, listed, openRegistered, registered, textIs } = require('./lib/pages');
const { until } = require('./lib/wait');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

test('a page the daemon restart dropped comes back with its old index, and ws write OLD reaches it', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status']);
  await page.evaluate(() => { window.marker = 'same document'; });
  const token = await page.evaluate(() => sessionStorage.getItem('pagewire.resume'));
  assert.match(token, new RegExp(`^${index}\\.`));

  await daemon.stop('SIGKILL');
  await page.waitForFunction(() => wsState() === 'connecting', null, POLL);
  await daemon.start();
  const back = await registered(daemon, page, ['status']);
  assert.equal(back, index, 'the old index');
  await daemon.ok('ws', 'write', String(index), 'by the old index');
  await textIs(page, 'status', 'by the old index');
  assert.equal(await page.evaluate(() => window.marker), 'same document', 'not reloaded');
});

test('a retained text is shown on a page that opens, and reopens, after the write', async () => {
  await daemon.ok('ws', 'write', '--retain', 'status', 'kept for later');
  const { page } = await openRegistered(context, daemon, ['status']);
  await textIs(page, 'status', 'kept for later');
  await daemon.ok('ws', 'write', 'status', 'passing');
  await textIs(page, 'status', 'passing');

  await page.reload();
  await page.evaluate(() => wsInit('status'));
  await textIs(page, 'status', 'kept for later');
  await daemon.ok('ws', 'forget', 'status');
});

test('ws shows a hidden tab as hidden and a frozen one as frozen, and visible again', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status']);
  const shows = (word) => until(`connection ${index} shown ${word}`, async () => {
    const conn = await listed(daemon, index);
    return conn && conn.line.includes(` visibility=${word} `);
  });
  await shows('visible');

  // Headless Chromium neither hides a tab put behind another nor freezes
  // a visible one, so the page is told what a browser tells a background
  // tab: visibilityState 'hidden' and visibilitychange, then the Page
  // Lifecycle's freeze and resume, then visible again.
  await page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await shows('hidden');
  await page.evaluate(() => document.dispatchEvent(new Event('freeze')));
  await shows('frozen');
  await page.evaluate(() => document.dispatchEvent(new Event('resume')));
  await shows('hidden');
  await page.evaluate(() => {
    delete document.visibilityState;
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await shows('visible');

  // Only changes are reported: a second event with no change sends nothing.
  const sent = await daemon.connections();
  const before = /in=(\d+)msg/.exec(sent.find((c) => c.index === index).line)[1];
  await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await daemon.ok('ws', 'write', String(index), 'sync');
  await textIs(page, 'status', 'sync');
  const after = /in=(\d+)msg/.exec((await listed(daemon, index)).line)[1];
  assert.equal(after, before, 'no report without a change');
});
