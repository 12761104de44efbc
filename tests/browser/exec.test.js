'use strict';
// `ws exec` reaches only functions the page made (or gave to wsExpose),
// never what the browser provides: an operator command must not become
// arbitrary script in a page. Runs on site/exec.html.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE, lineHasName } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until, holds } = require('./lib/wait');
const { POLL, openRegistered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

/**
 * Opens site/exec.html registered as `status`, and watches for what a
 * call that must not happen would leave behind: a dialog, a new page, a
 * request for a /pwned URL.
 */
async function openWatched(query = '') {
  const seen = [];
  const { page, index } = await openRegistered(context, daemon, ['status'], '/exec.html' + query);
  const onPage = (p) => seen.push(`popup ${p.url()}`);
  context.on('page', onPage);
  page.on('dialog', async (dialog) => {
    seen.push(`${dialog.type()} dialog: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('request', (req) => {
    if (req.url().includes('/pwned')) seen.push(`request ${req.method()} ${req.url()}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /getter ran/.test(msg.text())) seen.push(`console: ${msg.text()}`);
  });
  const stop = () => context.off('page', onPage);
  return { page, index, seen, stop };
}

/**
 * Execs FUNC ARG and waits until the page shows `FUNC:ARG` instead of
 * calling it, or until a call shows up: `window.pwned` set (the code an
 * eval'd ARG would run) or a call to the page's `record`.
 */
async function refused(page, func, arg) {
  await daemon.ok('ws', 'exec', 'status', func, arg);
  const expected = `${func}:${arg}`;
  const outcome = await until(`#status to show ${expected}`, async () => {
    const seen = await page.evaluate(() => ({
      text: document.getElementById('status').textContent,
      pwned: String(window.pwned),
      calls: window.calls.length,
    }));
    return (seen.text === expected || seen.pwned !== 'undefined' || seen.calls > 0) && seen;
  });
  assert.deepEqual(outcome, { text: expected, pwned: 'undefined', calls: 0 }, `ws exec status ${func} ${arg}`);
}

/** Fails if anything a refused call would do shows up within a short window. */
async function nothingRan(page, seen) {
  const state = () => page.evaluate(() => ({ pwned: String(window.pwned), calls: window.calls }));
  const quiet = { pwned: 'undefined', calls: [] };
  try {
    await holds('no call, global, dialog, popup or request', async () => {
      const now = await state();
      return now.pwned === 'undefined' && now.calls.length === 0 && seen.length === 0;
    }, 750);
  } finally {
    assert.deepEqual({ ...(await state()), seen }, { ...quiet, seen: [] });
  }
}

test('ws exec of eval shows FUNC:ARG and runs nothing', async () => {
  const { page, seen, stop } = await openWatched();
  try {
    await refused(page, 'eval', "window.pwned = 'eval'");
    await refused(page, 'evalAlias', "window.pwned = 'evalAlias'");
    await nothingRan(page, seen);
  } finally {
    stop();
  }
});

test('ws exec of browser functions, inherited names, ws.js itself and bound functions runs nothing', async () => {
  const { page, seen, stop } = await openWatched();
  try {
    for (const [func, arg] of [
      ['Function', "window.pwned = 'Function'"],
      ['setTimeout', "window.pwned = 'setTimeout'"],
      ['setInterval', "window.pwned = 'setInterval'"],
      ['fetch', '/pwned-fetch'],
      ['open', '/pwned-open'],
      ['alert', 'pwned by alert'],
      ['confirm', 'pwned by confirm'],
      ['constructor', 'x'],
      ['__proto__', 'x'],
      ['toString', 'x'],
      ['hasOwnProperty', 'x'],
      ['valueOf', 'x'],
      ['addEventListener', 'x'],
      ['wsSend', 'ws register pwned'],
      ['wsInit', 'pwned'],
      ['wsExpose', 'pwned'],
      ['sendAlias', 'ws register pwned'],
      ['boundRecord', 'bound'],
      ['proxiedRecord', 'proxied'],
      ['throwingGetter', 'x'],
      ['getterRecord', 'x'],
      ['status', 'a string property'],
    ]) {
      await refused(page, func, arg);
    }
    await nothingRan(page, seen);
    // wsSend and wsInit did not register anything on the page's behalf.
    const listing = await daemon.connections();
    assert.ok(listing.every((c) => !lineHasName(c.line, 'pwned')), listing.map((c) => c.line).join('\n'));
    assert.deepEqual(await page.evaluate(() => wsInfo().names), ['status']);
  } finally {
    stop();
  }
});

test('ws exec calls functions the page defined and functions it gave to wsExpose', async () => {
  const { page, index } = await openWatched();
  await daemon.ok('ws', 'write', 'status', 'unchanged');
  await textIs(page, 'status', 'unchanged');

  await daemon.ok('ws', 'exec', 'status', 'record', '42');
  await daemon.ok('ws', 'exec', String(index), 'declared', 'by index');
  await daemon.ok('ws', 'exec', 'status', 'disguised', 'own toString');
  await daemon.ok('ws', 'exec', 'status', 'exposedName', 'not a global');
  await daemon.ok('ws', 'exec', '*', 'shadowed', 'exposed wins');
  await page.waitForFunction(() => window.calls.length >= 5, null, POLL);

  assert.deepEqual(await page.evaluate(() => window.calls), [
    '42',
    'declared:by index',
    'disguised:own toString',
    'exposed:not a global',
    'exposed shadowed:exposed wins',
  ]);
  assert.equal(await page.textContent('#status'), 'unchanged');
});

test('with wsInit.exposedOnly a page global is no longer called, an exposed function still is', async () => {
  const { page } = await openWatched();
  await page.evaluate(() => { wsInit.exposedOnly = true; });

  await refused(page, 'record', 'global');
  await refused(page, 'declared', 'global');
  await daemon.ok('ws', 'exec', 'status', 'exposedName', 'still called');
  await daemon.ok('ws', 'exec', 'status', 'shadowed', 'exposed one');
  await page.waitForFunction(() => window.calls.length >= 2, null, POLL);
  assert.deepEqual(await page.evaluate(() => window.calls), ['exposed:still called', 'exposed shadowed:exposed one']);

  // Switched off again, page globals are back.
  await page.evaluate(() => { wsInit.exposedOnly = false; });
  await daemon.ok('ws', 'exec', 'status', 'record', 'global again');
  await page.waitForFunction(() => window.calls.length >= 3, null, POLL);
  assert.equal(await page.evaluate(() => window.calls[2]), 'global again');
});

test('a page script that replaces Function.prototype.toString after ws.js cannot make eval callable', async () => {
  const { page, seen, stop } = await openWatched('?disguise');
  try {
    await refused(page, 'eval', "window.pwned = 'disguised eval'");
    await refused(page, 'setTimeout', "window.pwned = 'disguised setTimeout'");
    await nothingRan(page, seen);
    // The page's own functions still work.
    await daemon.ok('ws', 'exec', 'status', 'record', 'ok');
    await page.waitForFunction(() => window.calls.length === 1, null, POLL);
  } finally {
    stop();
  }
});

test('wsExpose refuses what exec would refuse: built-ins, bound functions, ws.js itself, non-functions', async () => {
  const page = await context.newPage();
  await page.goto(daemon.url + '/exec.html');
  const outcomes = await page.evaluate(() => {
    const attempt = (name, fn) => {
      try {
        wsExpose(name, fn);
        return 'accepted';
      } catch (err) {
        return err instanceof TypeError ? 'TypeError' : String(err);
      }
    };
    return {
      eval: attempt('e', window.eval),
      fetch: attempt('f', window.fetch),
      bound: attempt('b', window.record.bind(null)),
      proxy: attempt('p', new Proxy(window.record, {})),
      wsSend: attempt('s', window.wsSend),
      string: attempt('x', 'record'),
      emptyName: attempt('', window.record),
      pageFunction: attempt('ok', function () {}),
    };
  });
  assert.deepEqual(outcomes, {
    eval: 'TypeError',
    fetch: 'TypeError',
    bound: 'TypeError',
    proxy: 'TypeError',
    wsSend: 'TypeError',
    string: 'TypeError',
    emptyName: 'TypeError',
    pageFunction: 'accepted',
  });
});
