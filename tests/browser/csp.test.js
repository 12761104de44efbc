'use strict';
// ws.js under `Content-Security-Policy: script-src 'self'`: no eval, no
// inline script, no string timers, so a page with a strict policy can use
// it. Any violation the page reports fails the test.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { POLL, openRegistered, registered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
  // Before any of the page's own scripts: every violation it reports.
  context.addInitScript(() => {
    window.violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.violations.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
});

test('ws.js connects, registers, gets a write and an exec, and reconnects under a strict CSP', async () => {
  const { page } = await openRegistered(context, daemon, ['status'], '/csp.html');

  await daemon.ok('ws', 'write', 'status', 'written under CSP');
  await textIs(page, 'status', 'written under CSP');
  await daemon.ok('ws', 'exec', 'status', 'record', 'exec under CSP');
  await page.waitForFunction(() => window.calls.length === 1, null, POLL);
  // The fallback display of a refused function is text, too.
  await daemon.ok('ws', 'exec', 'status', 'setTimeout', "window.pwned = 'timer'");
  await textIs(page, 'status', "setTimeout:window.pwned = 'timer'");

  // A dropped connection: the backoff timer and the new socket run under the policy too.
  await daemon.stop('SIGKILL');
  await page.waitForFunction(() => window.drops.length > 0 && wsInfo().retryIn !== null, null, POLL);
  await daemon.start();
  await registered(daemon, page, ['status']);
  await daemon.ok('ws', 'write', 'status', 'back under CSP');
  await textIs(page, 'status', 'back under CSP');

  assert.deepEqual(await page.evaluate(() => [window.calls, window.pwned]), [['exec under CSP'], undefined]);
  assert.deepEqual(await page.evaluate(() => window.violations), []);

  // The policy is live and the listener hears it: inline script is refused and reported.
  // (The test's own evaluate() is exempt from the policy, so the probe is
  // an inline script element, as an injection would add one.)
  await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.inlineRan = true;';
    document.body.appendChild(script);
  });
  await page.waitForFunction(() => window.violations.length === 1, null, POLL);
  assert.match(await page.evaluate(() => window.violations[0]), /^script-src/);
  assert.equal(await page.evaluate(() => window.inlineRan), undefined);
});
