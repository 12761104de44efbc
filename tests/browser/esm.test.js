'use strict';
// ws.js as the npm package's ES module (client/index.js) in Chromium,
// against the real daemon: a page imports wsInit and wsExpose from
// 'pagewire' (an import map stands in for the bundler), connects,
// registers, and takes a write and an exec. The daemon serves a copy of
// site/ with the module at /pagewire/index.js.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { lineHasName, siteWithPackage } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until, holds } = require('./lib/wait');
const { POLL, listed, textIs } = require('./lib/pages');

const root = siteWithPackage();

let daemon;
let context;

browserSuite({ root }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

/**
 * Like pages.registered(), for a page whose API is not on window: site/esm.js
 * hands it to the test as window.client. Resolves to the connection's index.
 */
async function moduleRegistered(page, names) {
  const handle = await page.waitForFunction(
    () => window.client && client.wsState() === 'open' && client.wsInfo().index,
    null,
    POLL
  );
  const index = await handle.jsonValue();
  await until(`connection ${index} listed with ${names.join(', ')}`, async () => {
    const conn = await listed(daemon, index);
    return conn && names.every((name) => lineHasName(conn.line, name));
  });
  return index;
}

test('the ES module connects, registers, takes a write and an exec, and puts no API on window', async () => {
  const page = await context.newPage();
  await page.goto(`${daemon.url}/esm.html`);
  const index = await moduleRegistered(page, ['status']);

  // Importing set no globals: the only ws.js name on window is the one
  // esm.js put there itself.
  assert.deepEqual(await page.evaluate(() => window.found), { classic: false, sameClient: false });
  assert.deepEqual(
    await page.evaluate(() => ['wsSend', 'wsState', 'wsInfo', 'wsQuote', 'wsExpose'].filter((n) => n in window)),
    []
  );

  await daemon.ok('ws', 'write', 'status', 'written to a module');
  await textIs(page, 'status', 'written to a module');
  await daemon.ok('ws', 'exec', 'status', 'record', 'an exposed function');
  await page.waitForFunction(() => window.calls.length === 1, null, POLL);

  // Refused and shown as text: a browser built-in, and ws.js's own
  // function even though the page put it on window.
  await daemon.ok('ws', 'exec', 'status', 'eval', 'window.pwned = 1');
  await textIs(page, 'status', 'eval:window.pwned = 1');
  await daemon.ok('ws', 'exec', 'status', 'wsInit', '0');
  await textIs(page, 'status', 'wsInit:0');
  assert.equal(await page.evaluate(() => client.wsState()), 'open');
  assert.ok(await listed(daemon, index), 'the connection is still listed');
  assert.deepEqual(await page.evaluate(() => [window.calls, window.pwned]), [['an exposed function'], undefined]);
  assert.equal(
    await page.evaluate(() => {
      try {
        client.wsExpose('closer', client.wsInit);
        return 'accepted';
      } catch (err) {
        return err.name;
      }
    }),
    'TypeError'
  );

  // onframe saw the daemon's frames, after ws.js handled them.
  const frames = await page.evaluate(() => window.frames);
  for (const type of ['hello', 'reply', 'write', 'exec']) assert.ok(frames.includes(type), `${type} in ${frames}`);
});

test('a page with both the classic script and the module has one client and one connection', async () => {
  const page = await context.newPage();
  await page.goto(`${daemon.url}/esm-both.html`);
  const index = await moduleRegistered(page, ['status']);
  assert.deepEqual(await page.evaluate(() => window.found), { classic: true, sameClient: true });

  // The classic script's wsInit registers one more name on the same connection.
  await page.evaluate(() => window.wsInit('other'));
  await until('both names on one connection', async () => {
    const conn = await listed(daemon, index);
    return conn && lineHasName(conn.line, 'status') && lineHasName(conn.line, 'other');
  });
  assert.deepEqual((await daemon.connections()).map((c) => c.index), [index]);
  assert.equal(await page.evaluate(() => wsInfo().attempts), 1);

  // And the module's wsExpose'd function is the page's, whatever name addressed it.
  await daemon.ok('ws', 'exec', 'other', 'record', 'through the classic name');
  await page.waitForFunction(() => window.calls.length === 1, null, POLL);
  assert.deepEqual(await page.evaluate(() => window.calls), ['through the classic name']);
});

test('a copy of another version warns on the console and hands out the client already there', async () => {
  const page = await context.newPage();
  const warnings = [];
  page.on('console', (msg) => {
    if (msg.type() === 'warning') warnings.push(msg.text());
  });
  // The page's client, as an older copy of ws.js would have left it.
  await page.addInitScript(() => {
    const noop = function () {};
    const api = { wsInit: noop, wsSend: noop, wsState: noop, wsInfo: noop, wsQuote: noop, wsExpose: noop };
    Object.defineProperty(window, Symbol.for('pagewire ws.js'), { value: { version: '0.0.1', api } });
    window.older = api;
  });
  await page.goto(`${daemon.url}/esm-both.html`);
  await page.waitForFunction(() => window.found, null, POLL);

  assert.equal(await page.evaluate(() => window.wsInit === window.older.wsInit && window.client.wsInit === window.older.wsInit), true);
  const message = /^ws\.js \d+\.\d+\.\d+: this page already runs ws\.js 0\.0\.1; both use that one$/;
  await until('a warning from each copy', () => warnings.filter((w) => message.test(w)).length === 2);
  // The older copy's wsInit, a no-op here, is the one esm.js called: no
  // second client connects behind its back.
  await holds('no connection', async () => (await daemon.connections()).length === 0, 1000);
});
