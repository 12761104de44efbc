'use strict';
// DNS rebinding, done the way an attacker does it. A page of evil.test was
// served by the attacker's own server; then evil.test is made to resolve to
// 127.0.0.1, where the daemon listens, and the page's further requests go
// to the daemon as same-origin requests for evil.test. Here Chromium maps
// evil.test to 127.0.0.1 for every request, and the test answers the one
// top-level document in the attacker's server's place.
//
// Chromium's own Local Network Access checks would block a page from a
// public address reaching a loopback one; other browsers have no such
// check and a user may allow it, so the daemon must not rely on it. The
// browser here runs without it, as those browsers do.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { SITE } = require('./lib/daemon');
const { browserSuite } = require('./lib/suite');
const { openRegistered, textIs } = require('./lib/pages');

let daemon;
let context;

browserSuite({ root: SITE }, (d, c) => {
  daemon = d;
  context = c;
}, {
  clean: true,
  browserArgs: [
    '--host-resolver-rules=MAP evil.test 127.0.0.1',
    '--disable-features=LocalNetworkAccessChecks',
  ],
});

const ATTACKER_PAGE = '<!doctype html><meta charset="utf-8"><title>cats</title><p>cute cats</p>';
const REFUSAL = 'this host name is not served here\n';

/** What the attacker's script gets from the daemon, run in its page. */
function attack() {
  const answer = async (request) => {
    try {
      const resp = await request;
      return { status: resp.status, body: await resp.text() };
    } catch (err) {
      return { error: String(err) };
    }
  };
  const socket = () =>
    new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.onopen = () => {
        ws.close();
        resolve('open');
      };
      ws.onerror = () => resolve('error');
    });
  return (async () => ({
    listing: await answer(fetch('/shell?cmd=ws')),
    write: await answer(fetch('/shell?cmd=' + encodeURIComponent('ws write * pwned'))),
    post: await answer(fetch('/api/command', { method: 'POST', body: 'ws write * pwned' })),
    json: await answer(
      fetch('/api/command', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ cmd: 'ws close' }),
      })
    ),
    socket: await socket(),
  }))();
}

test('a page on a rebound name can neither read nor change anything', async () => {
  // A real page of the daemon, the one the attacker is after.
  const victim = await openRegistered(context, daemon, ['status']);

  const evil = `http://evil.test:${daemon.port}`;
  const page = await context.newPage();
  // Only the top-level document comes from the attacker's server; every
  // other request of the page reaches the daemon.
  await page.route(`${evil}/`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: ATTACKER_PAGE })
  );
  await page.goto(`${evil}/`);
  assert.equal(await page.title(), 'cats');

  const got = await page.evaluate(attack);

  // What the victim shows: what is written now must be the first text it
  // got, with no frame before it carrying the attacker's.
  await daemon.ok('ws', 'write', 'status', 'after');
  await textIs(victim.page, 'status', 'after');
  const victimTexts = await victim.page.evaluate(() =>
    window.frames.filter((f) => f.type === 'write').map((f) => f.text)
  );

  // Going to the rebound name directly.
  const direct = await context.newPage();
  const resp = await direct.goto(`${evil}/`);

  // Everything at once, so that a failure shows all of it.
  const refused = { status: 403, body: REFUSAL };
  assert.deepEqual(
    {
      ...got,
      victimTexts,
      connections: (await daemon.connections()).length,
      direct: { status: resp.status(), body: await resp.text() },
    },
    {
      listing: refused,
      write: refused,
      post: refused,
      json: refused,
      socket: 'error',
      victimTexts: ['after'],
      connections: 1,
      direct: refused,
    }
  );
});
