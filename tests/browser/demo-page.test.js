'use strict';
// The built-in demo page under its own strict Content-Security-Policy, the
// request its broadcast button sends, what its status box and badge say,
// and how it looks in a phone-sized window.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { REPO } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { until } = require('./lib/wait');
const { POLL, registered, listed, textIs } = require('./lib/pages');

const OUTPUT = process.env.PAGEWIRE_TEST_OUTPUT || path.join(REPO, 'test-output');

let daemon;
let context;

browserSuite({}, (d, c) => {
  daemon = d;
  context = c;
  // Before any of the page's own scripts: every violation it reports.
  context.addInitScript(() => {
    window.violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.violations.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
}, { clean: true });

/** Opens the demo page and presses "Open WebSocket". */
async function openDemo(viewport) {
  const page = await context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const response = await page.goto(daemon.url + '/');
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);
  return { page, index, response };
}

function violations(page) {
  return page.evaluate(() => window.violations);
}

test('the demo page is served with a strict CSP and works under it', async () => {
  const { page, response } = await openDemo();
  const policy = response.headers()['content-security-policy'] || '';
  const directives = Object.fromEntries(
    policy.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([k, ...v]) => [k, v.join(' ')])
  );
  assert.equal(directives['default-src'], "'self'", policy);
  assert.equal(directives['script-src'], "'self'", policy);
  assert.equal(directives['frame-ancestors'], "'self'", policy);
  assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval|\*/, policy);
  // The page's script and style are files of the same origin, not inline.
  assert.equal(await page.locator('script:not([src])').count(), 0);
  assert.equal(await page.locator('style').count(), 0);

  await daemon.ok('ws', 'write', 'status', 'under the policy');
  await textIs(page, 'status', 'under the policy');
  await daemon.ok('ws', 'exec', 'status', 'highlight', 'rgb(255, 224, 138)');
  await page.waitForFunction(
    () => document.getElementById('status').style.backgroundColor === 'rgb(255, 224, 138)',
    null,
    POLL
  );
  await page.fill('#message', 'broadcast under the policy');
  await page.getByRole('button', { name: 'Display on all pages' }).click();
  await textIs(page, 'status', 'broadcast under the policy');
  await page.getByRole('button', { name: 'Close WebSocket' }).click();
  await page.waitForFunction(() => wsState() === 'closed', null, POLL);
  assert.deepEqual(await violations(page), []);

  // The header's policy is the one in force: inline script is refused and reported.
  // (The test's own evaluate() is exempt from the policy, so the probe is
  // an inline script element, as an injection would add one.)
  await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.inlineRan = true;';
    document.body.appendChild(script);
  });
  await page.waitForFunction(() => window.violations.length === 1, null, POLL);
  assert.equal(await page.evaluate(() => window.inlineRan), undefined);
});

test('"Display on all pages" sends a JSON POST to /api/command that shows its Origin', async () => {
  const { page } = await openDemo();
  const requests = [];
  page.on('request', (req) => {
    if (/\/(api\/command|shell)\b/.test(new URL(req.url()).pathname)) requests.push(req);
  });

  const text = 'say "hi" \\ bye';
  await page.fill('#message', text);
  await page.getByRole('button', { name: 'Display on all pages' }).click();
  await textIs(page, 'status', text);
  // The daemon's answer is shown under the form.
  await page.waitForFunction(() => /^sent to 1 connection/.test(document.getElementById('result').textContent), null, POLL);
  assert.equal(await page.getAttribute('#result', 'class'), 'result');

  assert.equal(requests.length, 1, requests.map((r) => `${r.method()} ${r.url()}`).join('\n'));
  const [req] = requests;
  assert.equal(req.method(), 'POST');
  assert.equal(new URL(req.url()).pathname, '/api/command');
  const headers = await req.allHeaders();
  assert.match(headers['content-type'], /^application\/json/);
  assert.equal(headers.origin, new URL(daemon.url).origin);
  assert.deepEqual(req.postDataJSON(), { cmd: 'ws write * "say \\"hi\\" \\\\ bye"' });
});

test('the status box shows the connection state, not the old prompt or an old text', async () => {
  const page = await context.newPage();
  await page.goto(daemon.url + '/');
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const first = await registered(daemon, page, ['status']);
  await textIs(page, 'status', `connected as #${first}, waiting for text`);

  await daemon.ok('ws', 'write', 'status', 'an old text');
  await textIs(page, 'status', 'an old text');
  await page.getByRole('button', { name: 'Close WebSocket' }).click();
  await until('the demo page to leave the listing', async () => !(await listed(daemon, first)));

  // A new connection does not keep showing what the last one was sent.
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const second = await registered(daemon, page, ['status']);
  assert.notEqual(second, first);
  await textIs(page, 'status', `connected as #${second}, waiting for text`);
});

test('a highlight clears by itself, and a new write clears it at once', async () => {
  const { page } = await openDemo();
  const background = () => page.evaluate(() => document.getElementById('status').style.backgroundColor);

  await daemon.ok('ws', 'write', 'status', 'fresh');
  await daemon.ok('ws', 'exec', 'status', 'highlight', 'gold');
  await page.waitForFunction(() => document.getElementById('status').style.backgroundColor === 'gold', null, POLL);
  await until('the highlight to clear', async () => (await background()) === '');

  await daemon.ok('ws', 'exec', 'status', 'highlight', 'gold');
  await page.waitForFunction(() => document.getElementById('status').style.backgroundColor === 'gold', null, POLL);
  await daemon.ok('ws', 'write', 'status', 'newer');
  await textIs(page, 'status', 'newer');
  assert.equal(await background(), '');
});

test('a close by the operator shows its reason', async () => {
  const { page } = await openDemo();
  await daemon.ok('ws', 'close');
  await page.waitForFunction(() => wsState() === 'closed', null, POLL);
  await textIs(page, 'conn-text', 'closed by operator');
  await textIs(page, 'status', 'closed by operator');
  assert.equal(await page.getAttribute('#conn', 'data-state'), 'closed');
  // A page can open again after an operator's close.
  assert.equal(await page.getByRole('button', { name: 'Open WebSocket' }).isEnabled(), true);
});

test('at 390 px wide nothing is clipped: code and frame lines wrap (screenshot)', async () => {
  const { page } = await openDemo({ width: 390, height: 844 });
  await daemon.ok('ws', 'write', 'status', 'VPN up on wg0 since 09:41, 3 peers, 12.4 MiB in / 3.1 MiB out');
  await textIs(page, 'status', 'VPN up on wg0 since 09:41, 3 peers, 12.4 MiB in / 3.1 MiB out');

  const overflowing = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
      // Inline boxes have no clientWidth; their block container is checked.
      if (el.clientWidth === 0) continue;
      if (el.scrollWidth > el.clientWidth + 1) {
        out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''} ${el.scrollWidth} > ${el.clientWidth}`);
      }
    }
    return { page: document.documentElement.scrollWidth, out };
  });
  assert.deepEqual(overflowing, { page: 390, out: [] });

  fs.mkdirSync(OUTPUT, { recursive: true });
  const file = path.join(OUTPUT, 'demo-390.png');
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 0);
  assert.deepEqual(await violations(page), []);
});
