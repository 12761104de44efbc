'use strict';
// permessage-deflate with a real browser: Chromium offers it by default,
// the daemon accepts it (compression is on by default), and ws.js pages
// still get writes, calls and the close, long ones arriving compressed.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until } = require('./lib/wait');
const { POLL, listed, registered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

/**
 * Opens the site's page with the DevTools protocol watching its WebSocket
 * handshakes, registers `names`; resolves to the page, its index and the
 * handshake responses' headers seen so far (an array that fills in).
 */
async function openWatched(names) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  const handshakes = [];
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => handshakes.push(e.response.headers));
  await cdp.send('Network.enable');
  await page.goto(daemon.url + '/');
  for (const name of names) await page.evaluate((n) => wsInit(n), name);
  const index = await registered(daemon, page, names);
  return { page, index, handshakes };
}

/** The value of header `name` (any case) in a CDP headers object. */
function header(headers, name) {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
}

test('Chromium negotiates permessage-deflate and the page gets long writes, calls and the close', async () => {
  const { page, index, handshakes } = await openWatched(['status']);
  await until('the handshake seen by DevTools', async () => handshakes.length > 0);
  const extensions = header(handshakes[0], 'Sec-WebSocket-Extensions');
  assert.match(extensions || '', /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);

  // Long enough to go compressed (short ones go plain, which the
  // extension allows).
  const long = 'status of every node: ' + Array.from({ length: 60 }, (_, i) => `node-${i} up`).join(', ');
  await daemon.ok('ws', 'write', 'status', long);
  await textIs(page, 'status', long);
  await daemon.ok('ws', 'write', 'status', 'short');
  await textIs(page, 'status', 'short');

  await daemon.ok('ws', 'exec', 'status', 'record', long);
  await page.waitForFunction(() => window.calls.length === 1, null, POLL);
  assert.deepEqual(await page.evaluate(() => window.calls), [long]);

  // What the page sends on the compressed connection still runs: a
  // second name it registers reaches the listing.
  await page.evaluate(() => wsInit('other'));
  await until('the second name listed', async () => {
    const conn = await listed(daemon, index);
    return conn && conn.line.includes('other');
  });

  await daemon.ok('ws', 'close');
  await page.waitForFunction(() => wsState() === 'closed', null, POLL);
  const info = await page.evaluate(() => wsInfo());
  assert.equal(info.lastClose.code, 1000);
});
