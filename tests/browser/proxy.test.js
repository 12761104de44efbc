'use strict';
// The daemon at a subpath behind Debian's nginx, configured with the
// snippets the docs and the package ship (packaging/nginx/): the demo page
// at /status/ in Chromium gets its ws.js, its WebSocket and its
// broadcast's POST through nginx, and receives an operator's write; the
// admin console at /status/admin works through it too.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { Daemon } = require('./lib/daemon');
const { launch } = require('./lib/browser');
const { Nginx } = require('./lib/nginx');
const { until } = require('./lib/wait');
const { POLL, registered, textIs } = require('./lib/pages');

let daemon;
let nginx;
let context;

before(async () => {
  daemon = await new Daemon({
    config: 'base_path = "/status"\ntrusted_proxies = ["127.0.0.1/32"]\n',
  }).start();
  assert.match(daemon.url, /\/status\/$/, daemon.output);
  nginx = await new Nginx(`127.0.0.1:${daemon.port}`).start();
  context = await launch();
});

after(async () => {
  if (context) await context.close();
  if (nginx) await nginx.dispose();
  if (daemon) await daemon.dispose();
});

test('a page at /status/ behind nginx receives a write', async () => {
  const page = await context.newPage();
  const response = await page.goto(`${nginx.url}/status/`);
  assert.equal(response.status(), 200);
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);

  await daemon.ok('ws', 'write', 'status', 'through nginx');
  await textIs(page, 'status', 'through nginx');

  // The listing shows the page, and the client nginx named (a trusted
  // proxy: port 0, as X-Forwarded-For carries none), not nginx's socket.
  const line = (await daemon.connections()).find((c) => c.index === index).line;
  assert.match(line, /page=\S*\/status\/( |$)/, line);
  assert.match(line, /remote=127\.0\.0\.1:0 /, line);

  // The broadcast button's POST goes to the relative api/command, through
  // nginx, as a same-origin request of a loopback client.
  await page.fill('#message', 'broadcast through nginx');
  await page.getByRole('button', { name: 'Display on all pages' }).click();
  await textIs(page, 'status', 'broadcast through nginx');
  await page.waitForFunction(() => /^sent to 1 connection/.test(document.getElementById('result').textContent), null, POLL);
  assert.match(nginx.accessLog(), /"POST \/status\/api\/command HTTP\/1\.1" 200 /);

  await page.close();
  assert.deepEqual(page.errors, []);

  // ws.js took its WebSocket from where it was loaded: /status/ws, through
  // nginx, which answered 101 (logged when the WebSocket ends).
  const log = await until('the upgrade in nginx access log', async () => {
    const text = nginx.accessLog();
    return /"GET \/status\/ws\?page=%2Fstatus%2F HTTP\/1\.1" 101 /.test(text) && text;
  });
  assert.match(log, /"GET \/status\/ws\.js HTTP\/1\.1" 200 /);
});

test('the admin console at /status/admin behind nginx shows the page and runs a command', async () => {
  const page = await context.newPage();
  await page.goto(`${nginx.url}/status/`);
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);

  const admin = await context.newPage();
  const response = await admin.goto(`${nginx.url}/status/admin`);
  assert.equal(response.status(), 200);
  await admin.waitForFunction(() => document.getElementById('conn').dataset.state === 'open', null, POLL);
  await admin.waitForFunction((i) => document.querySelector(`#rows tr[data-id="${i}"]`) !== null, index, POLL);
  await admin.fill('#line', 'ws write status "from the admin console"');
  await admin.press('#line', 'Enter');
  await textIs(page, 'status', 'from the admin console');

  await admin.close();
  await page.close();
  assert.deepEqual([...admin.errors, ...page.errors], []);
  await until('the admin socket in nginx access log', () =>
    /"GET \/status\/admin\/ws HTTP\/1\.1" 101 /.test(nginx.accessLog())
  );
});
