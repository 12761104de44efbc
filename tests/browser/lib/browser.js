'use strict';
// Headless Debian Chromium through playwright-core, in a fresh profile.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic',
];

/**
 * Launches Chromium with a throwaway user-data dir. The returned context
 * has close(), which also removes that dir, and newPage() which records
 * uncaught page errors in page.errors.
 *
 * @param {object} [opts]
 * @param {string[]} [opts.args] extra Chromium flags, e.g.
 *   `--host-resolver-rules=MAP evil.test 127.0.0.1`
 */
async function launch({ args = [] } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pagewire-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...ARGS, ...args],
    viewport: { width: 1100, height: 900 },
  });
  context.setDefaultTimeout(20000);
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  const newPage = context.newPage.bind(context);
  context.newPage = async () => {
    const page = await newPage();
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    return page;
  };
  // A persistent context opens with one blank tab; it is not needed.
  for (const page of context.pages()) await page.close();
  return context;
}

module.exports = { launch };
