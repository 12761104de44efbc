'use strict';
// The admin console (/admin) in Chromium against the real daemon: the live
// table, the command line and its history, the Monitor, picking a row, the
// daemon going away and coming back, who may open it (another site is
// refused; with a token the console asks for it), and how it looks wide and
// narrow (screenshots in test-output/).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { Daemon, REPO } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { POLL, registered } = require('./lib/pages');

const OUTPUT = process.env.PAGEWIRE_TEST_OUTPUT || path.join(REPO, 'test-output');
// "Appears within a second": the console's own deadline, whatever the
// machine's load did to the steps before it.
const WITHIN_A_SECOND = { ...POLL, timeout: 1000 };

let daemon;
let context;

browserSuite({}, (d, c) => {
  daemon = d;
  context = c;
  context.addInitScript(() => {
    window.violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.violations.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
    });
  });
}, { clean: true, browserArgs: ['--host-resolver-rules=MAP evil.test 127.0.0.1'] });

/** Opens the console and waits until it is connected. */
async function openConsole(viewport) {
  const page = await context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const response = await page.goto(daemon.url + '/admin');
  assert.equal(response.status(), 200);
  await connected(page);
  return page;
}

function connected(page) {
  return page.waitForFunction(() => document.getElementById('conn').dataset.state === 'open', null, POLL);
}

/** Opens the demo page and its WebSocket; resolves to { page, index }. */
async function openDemo() {
  const page = await context.newPage();
  await page.goto(daemon.url + '/');
  await page.getByRole('button', { name: 'Open WebSocket' }).click();
  const index = await registered(daemon, page, ['status']);
  return { page, index };
}

function row(page, index) {
  return page.locator(`#rows tr[data-id="${index}"]`);
}

function rowShown(page, index, options = POLL) {
  return page.waitForFunction((i) => document.querySelector(`#rows tr[data-id="${i}"]`) !== null, index, options);
}

test('a page that connects appears within a second and disappears when it closes', async () => {
  const admin = await openConsole();
  assert.equal(await admin.locator('#count').textContent(), '0 live');
  const demo = await openDemo();
  await rowShown(admin, demo.index, WITHIN_A_SECOND);
  const cells = await row(admin, demo.index).locator('td').allTextContents();
  assert.equal(cells[0], String(demo.index));
  assert.equal(cells[1], 'status');
  assert.equal(cells[2], `${daemon.url}/`);
  assert.match(cells[3], /^127\.0\.0\.1:\d+$/);
  assert.equal(cells[4], 'this daemon');
  assert.match(cells[6], /^\d+s$/);
  assert.equal(await admin.locator('#count').textContent(), '1 live');
  // ws.js reports the page shown; the table follows within its sample.
  await admin.waitForFunction((i) => document.querySelector(`#rows tr[data-id="${i}"] td.vis`)?.textContent === 'visible', demo.index, POLL);

  await demo.page.close();
  await admin.waitForFunction((i) => document.querySelector(`#rows tr[data-id="${i}"]`) === null, demo.index, WITHIN_A_SECOND);
  assert.equal(await admin.locator('#count').textContent(), '0 live');
  assert.deepEqual(await admin.evaluate(() => window.violations), []);
});

test('a command typed there reaches the page picked in the table, shows its reply, and the Monitor shows it', async () => {
  const admin = await openConsole();
  const demo = await openDemo();
  await rowShown(admin, demo.index);

  // Picking the row makes it the target.
  await row(admin, demo.index).click();
  assert.equal(await admin.locator('#line').inputValue(), `ws write ${demo.index} `);
  assert.equal(await row(admin, demo.index).getAttribute('aria-selected'), 'true');
  await admin.locator('#line').pressSequentially('"from the console"');
  await admin.locator('#line').press('Enter');

  await demo.page.waitForFunction(() => document.getElementById('status').textContent === 'from the console', null, POLL);
  const reply = admin.locator('#replies li').first();
  await admin.waitForFunction(() => document.querySelector('#replies li').dataset.state === 'ok', null, POLL);
  assert.equal(await reply.locator('.cmd').textContent(), `ws write ${demo.index} "from the console"`);
  assert.equal(await reply.locator('pre').textContent(), 'sent to 1 connection');

  // The Monitor pane shows the command, from its own door.
  const wanted = `admin: ws write ${demo.index} "from the console" -> ok`;
  await admin.waitForFunction((w) => [...document.querySelectorAll('#monitor li')].some((li) => li.textContent.includes(w)), wanted, POLL);
  // The filter keeps only what matches.
  await admin.locator('#filter').fill('admin:');
  const shown = await admin.locator('#monitor li:visible').allTextContents();
  assert.ok(shown.length >= 1 && shown.every((l) => l.includes('admin:')), JSON.stringify(shown));
  await admin.locator('#filter').fill('');

  // A failing command shows its error under it.
  await admin.locator('#line').fill('ws frobnicate');
  await admin.locator('#line').press('Enter');
  await admin.waitForFunction(() => document.querySelector('#replies li').dataset.state === 'failed', null, POLL);
  assert.match(await admin.locator('#replies li pre').first().textContent(), /frobnicate/);

  // Picking the row again replaces the target of the line being written.
  await admin.locator('#line').fill('ws exec 999 highlight gold');
  await row(admin, demo.index).click();
  assert.equal(await admin.locator('#line').inputValue(), `ws exec ${demo.index} highlight gold`);

  // History: ↑ brings back earlier lines, newest first; ↓ goes back to
  // what was being written.
  await admin.locator('#line').fill('draft');
  await admin.locator('#line').press('ArrowUp');
  assert.equal(await admin.locator('#line').inputValue(), 'ws frobnicate');
  await admin.locator('#line').press('ArrowUp');
  assert.equal(await admin.locator('#line').inputValue(), `ws write ${demo.index} "from the console"`);
  await admin.locator('#line').press('ArrowDown');
  await admin.locator('#line').press('ArrowDown');
  assert.equal(await admin.locator('#line').inputValue(), 'draft');
  // ...and it outlives the page.
  await admin.reload();
  await connected(admin);
  await admin.locator('#line').press('ArrowUp');
  assert.equal(await admin.locator('#line').inputValue(), 'ws frobnicate');
  assert.deepEqual(await admin.evaluate(() => window.violations), []);
});

test('a large table comes a hundred rows at a time, with a pager', async () => {
  const admin = await openConsole();
  // One page holding 105 sockets of its own (plain WebSockets to /ws).
  const holder = await context.newPage();
  await holder.goto(daemon.url + '/');
  await holder.evaluate(() => new Promise((resolve) => {
    window.held = [];
    let open = 0;
    for (let i = 0; i < 105; i++) {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.onopen = () => { if (++open === 105) resolve(); };
      window.held.push(ws);
    }
  }));
  await admin.waitForFunction(() => document.getElementById('count').textContent === '105 live', null, POLL);
  assert.equal(await admin.locator('#pager').isVisible(), true);
  assert.equal(await admin.locator('#range').textContent(), '1–100 of 105');
  assert.equal(await admin.locator('#rows tr[data-id]').count(), 100);
  assert.equal(await admin.locator('#prev').isDisabled(), true);

  await admin.locator('#next').click();
  await admin.waitForFunction(() => document.getElementById('range').textContent === '101–105 of 105', null, POLL);
  assert.equal(await admin.locator('#rows tr[data-id]').count(), 5);
  assert.equal(await admin.locator('#next').isDisabled(), true);

  // The last page empties as its connections go; the console steps back.
  await holder.evaluate(() => window.held.slice(100).forEach((ws) => ws.close()));
  await admin.waitForFunction(() => document.getElementById('range').textContent === '1–100 of 100', null, POLL);
  await holder.close();
  await admin.waitForFunction(() => document.getElementById('count').textContent === '0 live', null, POLL);
});

test('the daemon restarted: the console says so and recovers', async () => {
  const admin = await openConsole();
  const demo = await openDemo();
  await rowShown(admin, demo.index);

  await daemon.stop('SIGKILL');
  await admin.waitForFunction(() => document.getElementById('conn').dataset.state === 'gone', null, POLL);
  assert.match(await admin.locator('#banner').textContent(), /not reachable; trying again in \d+ s/);
  assert.equal(await admin.locator('#banner').isVisible(), true);

  await daemon.start();
  await connected(admin);
  assert.match(await admin.locator('#banner').textContent(), /back/);
  // The demo page reconnects (ws.js) with a new index; the table shows it
  // and not the old one.
  const index = await registered(daemon, demo.page, ['status']);
  await rowShown(admin, index);
  assert.equal(await row(admin, demo.index).count(), index === demo.index ? 1 : 0);
  // Commands work again.
  await admin.locator('#line').fill('ws write status back');
  await admin.locator('#line').press('Enter');
  await demo.page.waitForFunction(() => document.getElementById('status').textContent === 'back', null, POLL);
});

test('another site can neither load the console nor open its socket', async () => {
  const evil = `http://evil.test:${daemon.port}`;
  const page = await context.newPage();
  await page.route(`${evil}/`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: '<!doctype html><title>cats</title>' })
  );
  await page.goto(`${evil}/`);
  const target = `127.0.0.1:${daemon.port}`;
  const socket = await page.evaluate((t) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${t}/admin/ws`);
    ws.onopen = () => resolve('open');
    ws.onclose = (e) => resolve(`closed ${e.code}`);
  }), target);
  assert.equal(socket, 'closed 1006');
  // A link from that site to the console: a cross-site navigation.
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.evaluate((t) => { location.href = `http://${t}/admin`; }, target),
  ]);
  assert.equal(response.status(), 403);
  assert.match(await response.text(), /cross-site request refused/);
});

test('with a token, the console asks for it and opens with the right one', async () => {
  const guarded = await new Daemon({ config: 'token = "s3cret"\n' }).start();
  try {
    const page = await context.newPage();
    await page.goto(guarded.url + '/admin');
    await page.locator('#auth').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#conn-text').textContent(), 'token needed');
    assert.equal(await page.locator('#count').textContent(), '–');

    await page.locator('#token').fill('guess');
    await page.locator('#token').press('Enter');
    await page.waitForFunction(() => /Wrong token/.test(document.getElementById('auth-why').textContent), null, POLL);
    assert.equal(await page.locator('#auth').isVisible(), true);

    await page.locator('#token').fill('s3cret');
    await page.locator('#token').press('Enter');
    await connected(page);
    assert.equal(await page.locator('#auth').isVisible(), false);
    assert.equal(await page.locator('#count').textContent(), '0 live');
    // The token is kept for the tab, not in the address.
    assert.ok(!page.url().includes('s3cret'));
    await page.reload();
    await connected(page);
  } finally {
    await guarded.dispose();
  }
});

test('wide and narrow, the console shows everything (screenshots)', async () => {
  const demos = [];
  for (let i = 0; i < 3; i++) demos.push(await openDemo());
  await daemon.ok('ws', 'write', 'status', 'hello from the shell');
  fs.mkdirSync(OUTPUT, { recursive: true });
  for (const [name, viewport] of [['admin-wide.png', { width: 1100, height: 900 }], ['admin-390.png', { width: 390, height: 844 }]]) {
    const admin = await openConsole(viewport);
    for (const d of demos) await rowShown(admin, d.index);
    await row(admin, demos[1].index).click();
    await admin.locator('#line').pressSequentially('"picked from the table"');
    await admin.locator('#line').press('Enter');
    await admin.waitForFunction(() => document.querySelector('#replies li').dataset.state === 'ok', null, POLL);
    // Nothing sticks out sideways.
    const overflow = await admin.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name}: the page is ${overflow} px wider than the window`);
    const file = path.join(OUTPUT, name);
    await admin.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 0);
    assert.deepEqual(await admin.evaluate(() => window.violations), []);
    await admin.close();
  }
});
