'use strict';
// The hooks every browser test file shares: one daemon and one browser for
// the file, and after each test every page closed and none with an
// uncaught error.

const { before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');

const { Daemon } = require('./daemon');
const { launch } = require('./browser');
const { until } = require('./wait');

/**
 * Installs the file's hooks. `ready(daemon, context)` receives the daemon
 * (started with `options`) and the browser context once both are up. With
 * `clean`, each test also starts with no page connected, so `*` and counts
 * are its own. `browserArgs` are extra Chromium flags.
 */
function browserSuite(options, ready, { clean = false, browserArgs = [] } = {}) {
  let daemon;
  let context;

  before(async () => {
    daemon = await new Daemon(options).start();
    context = await launch({ args: browserArgs });
    ready(daemon, context);
  });

  after(async () => {
    if (context) await context.close();
    if (daemon) await daemon.dispose();
  });

  if (clean) {
    beforeEach(async () => {
      await until('no connections left', async () => (await daemon.connections()).length === 0);
    });
  }

  afterEach(async () => {
    const errors = [];
    for (const page of context.pages()) {
      errors.push(...page.errors);
      await page.close();
    }
    assert.deepEqual(errors, [], 'uncaught errors on a page');
  });
}

module.exports = { browserSuite };
