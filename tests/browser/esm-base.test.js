'use strict';
// The npm package's ES module under a base path: a module has no
// document.currentScript to find the daemon beside, so the application
// sets wsInit.base; the page at /status/esm-base.html then connects to
// /status/ws, registers, and takes a write.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { lineHasName, siteWithPackage } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until } = require('./lib/wait');
const { POLL, listed, textIs } = require('./lib/pages');

const root = siteWithPackage();

let daemon;
let context;

browserSuite({ root, config: 'base_path = "/status"\n' }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

test('a module under a base path finds the daemon through wsInit.base', async () => {
  assert.match(daemon.url, /\/status\/$/, daemon.output);
  const page = await context.newPage();
  const response = await page.goto(`${daemon.url}esm-base.html`);
  assert.equal(response.status(), 200);
  const handle = await page.waitForFunction(
    () => window.client && client.wsState() === 'open' && client.wsInfo().index,
    null,
    POLL
  );
  const index = await handle.jsonValue();
  await until(`connection ${index} listed with status`, async () => {
    const conn = await listed(daemon, index);
    return conn && lineHasName(conn.line, 'status');
  });
  await daemon.ok('ws', 'write', 'status', 'under a base path');
  await textIs(page, 'status', 'under a base path');
});
