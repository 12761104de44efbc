'use strict';
// A page runs a configured action and its output streams back into it.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { POLL, openRegistered } = require('./lib/pages');

// /bin/sh is the program; the daemon starts it directly, with these arguments.
const CONFIG = `
[actions.report]
program = "/bin/sh"
args = ["-c", "echo 'step <b>1</b>'; echo 'a warning' >&2; echo 'step 2'; exit 3"]

[actions.ok]
program = "/bin/sh"
args = ["-c", "echo fine"]
`;

let daemon;
let context;

browserSuite({ root: SITE, config: CONFIG }, (d, c) => {
  daemon = d;
  context = c;
});

/** The lines appended to element `id`: [className, text] each. */
function lines(page, id) {
  return page.evaluate(
    (id) => [...document.getElementById(id).children].map((el) => [el.className, el.textContent]),
    id
  );
}

/** Waits until element `id` has its `done` line. */
function finished(page, id) {
  return page.waitForFunction(
    (id) => document.querySelector('#' + id + ' .ws-done') !== null,
    id,
    POLL
  );
}

test('a page runs an action with wsSend and its output lines arrive as text', async () => {
  const { page } = await openRegistered(context, daemon, ['status']);

  assert.equal(await page.evaluate(() => wsSend('run report')), true);
  await finished(page, 'status');

  const got = await lines(page, 'status');
  // stdout and stderr are two pipes: their relative order is not fixed.
  const output = got.slice(0, -1);
  assert.deepEqual(
    [...output].sort(),
    [['ws-line', 'step <b>1</b>'], ['ws-line', 'step 2'], ['ws-line ws-stderr', 'a warning']].sort()
  );
  assert.deepEqual(
    output.filter(([cls]) => cls === 'ws-line').map(([, text]) => text),
    ['step <b>1</b>', 'step 2']
  );
  assert.deepEqual(got[got.length - 1], ['ws-done ws-failed', 'report: exited with 3']);
  assert.equal(await page.evaluate(() => document.querySelectorAll('#status b').length), 0);

  const reply = await page.evaluate(() => window.frames.find((f) => f.type === 'reply' && /report/.test(f.output)));
  assert.ok(reply, 'the run was acknowledged with a reply frame');
});

test('the operator runs an action into a named element of a page', async () => {
  const { page } = await openRegistered(context, daemon, ['status', 'other']);

  await daemon.ok('run', '--to', 'other', 'ok');
  await finished(page, 'other');
  assert.deepEqual(await lines(page, 'other'), [
    ['ws-line', 'fine'],
    ['ws-done', 'ok: exited with 0'],
  ]);
  assert.equal(await page.evaluate(() => document.getElementById('status').children.length), 0);
});

test('a page may not run what is not configured', async () => {
  const { page } = await openRegistered(context, daemon, ['status']);

  await page.evaluate(() => wsSend('run nosuch'));
  await page.waitForFunction(() => window.frames.some((f) => f.type === 'error'), null, POLL);
  await page.evaluate(() => wsSend('ws write * "from a page"'));
  await page.waitForFunction(() => window.frames.filter((f) => f.type === 'error').length === 2, null, POLL);
  assert.equal(await page.evaluate(() => document.getElementById('status').textContent), '');
  assert.equal(await page.evaluate(() => wsState()), 'open');
});
