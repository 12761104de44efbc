'use strict';
// ws.js against the real daemon, on the test pages of site/.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until, holds } = require('./lib/wait');
const { POLL, listed, registered, openRegistered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

test('ws write shows text as text, never as HTML', async () => {
  const { page } = await openRegistered(context, daemon, ['status']);

  await daemon.ok('ws', 'write', 'status', 'VPN up');
  await textIs(page, 'status', 'VPN up');

  await daemon.ok('ws', 'write', 'status', '<b>x</b> & <img src=x onerror=record(1)>');
  await textIs(page, 'status', '<b>x</b> & <img src=x onerror=record(1)>');
  const dom = await page.evaluate(() => ({
    children: document.getElementById('status').children.length,
    calls: window.calls.length,
  }));
  assert.deepEqual(dom, { children: 0, calls: 0 });

  // Quotes and backslashes survive the command language's escapes.
  await daemon.ok('ws', 'write', 'status', 'say "hi" \\ bye');
  await textIs(page, 'status', 'say "hi" \\ bye');
});

test('ws write reaches pages by index, by name and by *', async () => {
  const a = await openRegistered(context, daemon, ['status']);
  const b = await openRegistered(context, daemon, ['status']);
  assert.notEqual(a.index, b.index, 'each connection has its own index');

  // The index from the hello frame addresses that page only.
  await daemon.ok('ws', 'write', String(a.index), 'to a');
  await textIs(a.page, 'status', 'to a');
  await daemon.ok('ws', 'write', String(b.index), 'to b');
  await textIs(b.page, 'status', 'to b');
  assert.equal(await a.page.textContent('#status'), 'to a');

  // And so does the index read from the `ws` listing.
  const listing = await daemon.connections();
  const byNumber = (x, y) => x - y;
  assert.deepEqual(listing.map((c) => c.index).sort(byNumber), [a.index, b.index].sort(byNumber));
  await daemon.ok('ws', 'write', String(listing[0].index), 'from listing');
  const first = listing[0].index === a.index ? a : b;
  await textIs(first.page, 'status', 'from listing');

  await daemon.ok('ws', 'write', 'status', 'by name');
  await textIs(a.page, 'status', 'by name');
  await textIs(b.page, 'status', 'by name');

  await daemon.ok('ws', 'write', '*', 'to everyone');
  await textIs(a.page, 'status', 'to everyone');
  await textIs(b.page, 'status', 'to everyone');
});

test('ws exec calls the page function with its argument', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status']);
  await daemon.ok('ws', 'write', 'status', 'unchanged');
  await textIs(page, 'status', 'unchanged');

  await daemon.ok('ws', 'exec', 'status', 'record', '42');
  await page.waitForFunction(() => window.calls.length === 1, null, POLL);
  await daemon.ok('ws', 'exec', String(index), 'record', 'two words');
  await page.waitForFunction(() => window.calls.length === 2, null, POLL);

  assert.deepEqual(await page.evaluate(() => window.calls), ['42', 'two words']);
  assert.equal(await page.textContent('#status'), 'unchanged');
});

test('ws exec of a missing function shows FUNC:ARG in the element', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status']);

  await daemon.ok('ws', 'exec', 'status', 'noSuchFunction', '7');
  await textIs(page, 'status', 'noSuchFunction:7');

  // Addressed by index the frame carries no name: the first registered element.
  await daemon.ok('ws', 'exec', String(index), 'alsoMissing', '<i>8</i>');
  await textIs(page, 'status', 'alsoMissing:<i>8</i>');
  assert.equal(await page.evaluate(() => document.getElementById('status').children.length), 0);
});

test('two names on one page each receive their own writes', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status', 'other']);
  assert.deepEqual(await page.evaluate(() => wsInfo().names), ['status', 'other']);
  assert.equal((await daemon.connections()).length, 1, 'one connection carries both names');

  await daemon.ok('ws', 'write', 'status', 'for status');
  await daemon.ok('ws', 'write', 'other', 'for other');
  await textIs(page, 'status', 'for status');
  await textIs(page, 'other', 'for other');

  await daemon.ok('ws', 'write', 'other', 'other again');
  await textIs(page, 'other', 'other again');
  assert.equal(await page.textContent('#status'), 'for status');

  // By index, without a name: the first registered element.
  await daemon.ok('ws', 'write', String(index), 'by index');
  await textIs(page, 'status', 'by index');
  assert.equal(await page.textContent('#other'), 'other again');

  const states = await page.evaluate(() => [
    document.getElementById('status').dataset.wsState,
    document.getElementById('other').dataset.wsState,
  ]);
  assert.deepEqual(states, ['open', 'open']);
});

test('wsInit(0) closes the connection and it leaves the listing', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status']);

  await page.evaluate(() => wsInit(0));
  await until('the closed connection to leave the listing', async () => !(await listed(daemon, index)));

  const info = await page.evaluate(() => wsInfo());
  assert.equal(info.state, 'closed');
  assert.equal(info.retryIn, null, 'no reconnect is planned');
  assert.equal(await page.getAttribute('#status', 'data-ws-state'), 'closed');
  assert.deepEqual((await daemon.connections()).length, 0);

  // The page can open again when it wants to.
  await page.evaluate(() => wsInit('status'));
  await registered(daemon, page, ['status']);
});

test('ws close is final: the page stays closed and does not reconnect', async () => {
  const { page } = await openRegistered(context, daemon, ['status']);

  await daemon.ok('ws', 'close');
  await page.waitForFunction(() => wsState() === 'closed', null, POLL);
  const info = await page.evaluate(() => wsInfo());
  assert.equal(info.lastClose.code, 1000);
  assert.equal(info.retryIn, null, 'no reconnect is planned');
  assert.equal(await page.getAttribute('#status', 'data-ws-state'), 'closed');

  // Longer than the first two backoff delays (at most 250 + 500 ms): no
  // new attempt from the page, nothing in the daemon's listing.
  await holds('the page staying away', async () => {
    const now = await page.evaluate(() => [wsState(), wsInfo().attempts]);
    const count = (await daemon.connections()).length;
    return now[0] === 'closed' && now[1] === info.attempts && count === 0;
  }, 1500);
});

test('unknown frame types and malformed frames are ignored', async () => {
  const page = await context.newPage();
  // Sit between the page and the real daemon to add frames no daemon sends yet.
  let toPage;
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    ws.connectToServer();
    toPage = ws;
  });
  await page.goto(daemon.url + '/');
  await page.evaluate(() => wsInit('status'));
  await registered(daemon, page, ['status']);
  assert.ok(toPage, "the page's WebSocket goes through the route");
  await daemon.ok('ws', 'write', 'status', 'before');
  await textIs(page, 'status', 'before');

  for (const junk of [
    '{"type":"from-the-future","text":"x","name":"status"}',
    '{"no":"type"}',
    'not json at all',
    '[1, 2, 3]',
    'null',
    '42',
    '"a string"',
    '{"type":"write","name":"no-such-element","text":"x"}',
    '{"type":"line","name":"no-such-element","text":"x"}',
    '{"type":"exec","name":"no-such-element","func":"alsoMissing","arg":"x"}',
    '{"type":"exec","func":{"not":"a string"}}',
    '{"type":"error","message":"refused"}',
    '{"type":"hello"}',
  ]) {
    toPage.send(junk);
  }
  // Unknown fields on a known frame are ignored, the frame still works.
  toPage.send('{"type":"write","name":"status","text":"after junk","future":{"a":1}}');
  await textIs(page, 'status', 'after junk');

  // The connection is still the real one, and still works.
  assert.equal(await page.evaluate(() => wsState()), 'open');
  await daemon.ok('ws', 'write', 'status', 'still alive');
  await textIs(page, 'status', 'still alive');
  assert.deepEqual(page.errors, []);
});

test('action output lines and the final status are appended as text', async () => {
  const page = await context.newPage();
  let toPage;
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    ws.connectToServer();
    toPage = ws;
  });
  await page.goto(daemon.url + '/');
  await page.evaluate(() => { wsInit('status'); wsInit('other'); });
  await registered(daemon, page, ['status', 'other']);
  assert.ok(toPage, "the page's WebSocket goes through the route");

  const frames = [
    { type: 'line', action: 'build', stream: 'stdout', text: '<b>compiling</b>' },
    { type: 'line', action: 'build', stream: 'stderr', text: 'warning: unused' },
    { type: 'done', action: 'build', status: 0, message: 'exited with 0' },
    { type: 'line', action: 'build', stream: 'stdout', name: 'other', text: 'to other' },
    { type: 'done', action: 'build', status: null, name: 'other' },
  ];
  for (const frame of frames) toPage.send(JSON.stringify(frame));

  const lines = (id) =>
    page.evaluate((id) => [...document.getElementById(id).children].map((el) => [el.className, el.textContent]), id);
  await page.waitForFunction(() => document.getElementById('other').children.length === 2, null, POLL);
  assert.deepEqual(await lines('status'), [
    ['ws-line', '<b>compiling</b>'],
    ['ws-line ws-stderr', 'warning: unused'],
    ['ws-done', 'build: exited with 0'],
  ]);
  assert.deepEqual(await lines('other'), [
    ['ws-line', 'to other'],
    ['ws-done ws-failed', 'build: killed'],
  ]);
  // Text only: the <b> is not an element.
  assert.equal(await page.evaluate(() => document.querySelectorAll('#status b').length), 0);
});

test('close codes: a slow-consumer close (4001) reconnects, too many names (4002) is final', async () => {
  const page = await context.newPage();
  // Sit between the page and the daemon to close the page's side with
  // codes that are hard to provoke from a test.
  let route;
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    route = { page: ws, server: ws.connectToServer() };
  });
  await page.goto(daemon.url + '/');
  await page.evaluate(() => wsInit('status'));
  await registered(daemon, page, ['status']);
  assert.ok(route, "the page's WebSocket goes through the route");
  const first = route;

  await first.page.close({ code: 4001, reason: 'slow consumer' });
  await first.server.close();
  await page.waitForFunction(() => window.drops.includes(4001), null, POLL);
  await until('a new route for the reconnect', async () => route !== first);
  await registered(daemon, page, ['status']);

  await route.page.close({ code: 4002, reason: 'too many names' });
  await route.server.close();
  await page.waitForFunction(() => wsState() === 'closed', null, POLL);
  const info = await page.evaluate(() => wsInfo());
  assert.deepEqual(info.lastClose, { code: 4002, reason: 'too many names' });
  assert.equal(info.retryIn, null, 'no reconnect is planned');
});

test('set notify status sends Monitor lines to the status element until set notify off', async () => {
  const { page } = await openRegistered(context, daemon, ['status']);
  await daemon.ok('ws', 'write', 'status', 'quiet');
  await textIs(page, 'status', 'quiet');

  try {
    await daemon.ok('set', 'notify', 'status');
    // Any command run is a Monitor event, e.g. this listing.
    await until('a Monitor line on the page', async () => {
      await daemon.ok('ws');
      return /^\d\d:\d\d:\d\d\.\d{3} /.test(await page.textContent('#status'));
    });
  } finally {
    await daemon.ok('set', 'notify', 'off');
  }

  await daemon.ok('ws', 'write', 'status', 'quiet again');
  await textIs(page, 'status', 'quiet again');
  await holds('the element staying quiet while events happen', async () => {
    await daemon.ok('ws');
    return (await page.textContent('#status')) === 'quiet again';
  }, 1000);
});
