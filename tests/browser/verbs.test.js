'use strict';
// The verbs that wait for an answer from ws.js in a real browser: `ws
// call` (a value, a Promise, a throw, a missing function, a refused
// built-in), `ws write --wait` / `ws exec --wait` (confirmed once
// applied) and `ws read` (what the page shows). Runs on site/call.html.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { openRegistered } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, { clean: true });

async function closeAll() {
  for (const p of context.pages()) await p.close();
}

test('ws call answers with a value, an awaited Promise, a throw, or no such function', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status'], '/call.html');
  try {
    const cases = [
      [['double', '21'], 0, '{"doubled":42}'],
      [['later', 'soon'], 0, '"soon!"'],
      [['record', 'x'], 0, 'null'],
      [['boom', 'now'], 1, 'error: threw: boom now'],
      [['rejects', 'too'], 1, 'error: threw: rejected too'],
      [['missing', 'x'], 1, 'error: no such function'],
      [['eval', "window.pwned = 'eval'"], 1, 'error: no such function'],
      [['setTimeout', "window.pwned = 'setTimeout'"], 1, 'error: no such function'],
      [['wsSend', 'ws register pwned'], 1, 'error: no such function'],
    ];
    for (const [[func, arg], code, line] of cases) {
      const res = await daemon.cli('ws', 'call', 'status', func, arg);
      assert.deepEqual(
        { code: res.code, stdout: res.stdout, stderr: res.stderr },
        { code, stdout: `${index} ${line}\n`, stderr: '' },
        `ws call status ${func} ${arg}`
      );
    }
    // The refused built-ins ran nothing; `record` ran once.
    assert.deepEqual(
      await page.evaluate(() => ({ pwned: String(window.pwned), calls: window.calls })),
      { pwned: 'undefined', calls: ['x'] }
    );
    assert.deepEqual(await page.evaluate(() => wsInfo().names), ['status']);

    // Over HTTP: the same answers as a JSON array.
    const resp = await fetch(daemon.url + '/api/command', { method: 'POST', body: 'ws call * double 2' });
    assert.equal(resp.status, 200);
    const body = await resp.json();
    assert.deepEqual(body.results, [{ index, ok: true, value: { doubled: 4 } }]);
  } finally {
    await closeAll();
  }
});

test('ws write --wait and ws exec --wait return once the page applied the frame', async () => {
  const { page: one } = await openRegistered(context, daemon, ['status'], '/call.html');
  const { page: two } = await openRegistered(context, daemon, ['status'], '/call.html');
  try {
    let out = await daemon.ok('ws', 'write', '--wait', 'status', 'VPN up');
    assert.equal(out, 'sent to 2 connections; all confirmed\n');
    // Confirmed means shown: no waiting needed after the command returns.
    for (const p of [one, two]) assert.equal(await p.textContent('#status'), 'VPN up');

    out = await daemon.ok('ws', 'exec', '--wait', 'status', 'record', '7');
    assert.equal(out, 'sent to 2 connections; all confirmed\n');
    for (const p of [one, two]) assert.deepEqual(await p.evaluate(() => window.calls), ['7']);

    // A function that throws is applied but not confirmed: the page says why.
    const res = await daemon.cli('ws', 'exec', '--wait', 'status', 'boom', 'x');
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stdout, /^sent to 2 connections; 0 confirmed; not confirmed within 5s: \d+ \(threw: boom x\), \d+ \(threw: boom x\)\n$/);
  } finally {
    await closeAll();
  }
});

test('ws read prints what the page shows, escaped', async () => {
  const { page, index } = await openRegistered(context, daemon, ['status'], '/call.html');
  try {
    await daemon.ok('ws', 'write', '--wait', 'status', 'from the operator');
    assert.equal(await daemon.ok('ws', 'read', 'status'), `${index} from the operator\n`);

    // The page changes its own text; read shows it, control characters escaped.
    await page.evaluate(() => { document.getElementById('status').textContent = 'line one\nline \u001b[2J two'; });
    assert.equal(await daemon.ok('ws', 'read', String(index)), `${index} line one\\nline \\u{1b}[2J two\n`);

    const res = await daemon.cli('ws', 'read', 'status', 'nowhere');
    assert.deepEqual({ code: res.code, stdout: res.stdout }, { code: 1, stdout: `${index} error: no element nowhere\n` });
  } finally {
    await closeAll();
  }
});
