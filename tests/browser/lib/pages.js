'use strict';
// Page-level steps shared by the tests.

const { lineHasName } = require('./daemon');
const { until } = require('./wait');

// Poll on a timer rather than on animation frames, which a page that is
// not in front may not get.
const POLL = { polling: 50 };

/** The connection of `index` in the daemon's listing, or undefined. */
async function listed(daemon, index) {
  return (await daemon.connections()).find((c) => c.index === index);
}

/**
 * Waits until the page's connection is open, knows its index (the hello
 * frame) and the daemon lists it with every name in `names`. Resolves to
 * the index.
 */
async function registered(daemon, page, names) {
  const handle = await page.waitForFunction(
    () => wsState() === 'open' && wsInfo().index != null && wsInfo().index,
    null,
    POLL
  );
  const index = await handle.jsonValue();
  await until(`connection ${index} listed with ${names.join(', ')}`, async () => {
    const conn = await listed(daemon, index);
    return conn && names.every((name) => lineHasName(conn.line, name));
  });
  return index;
}

/** Opens `path` of the daemon's site, calls wsInit for each name, waits for registration. */
async function openRegistered(context, daemon, names, path = '/') {
  const page = await context.newPage();
  await page.goto(daemon.url + path);
  for (const name of names) await page.evaluate((n) => wsInit(n), name);
  const index = await registered(daemon, page, names);
  return { page, index };
}

/** Waits until element `id` of the page shows exactly `text`. */
function textIs(page, id, text) {
  return page.waitForFunction(
    ([id, text]) => document.getElementById(id).textContent === text,
    [id, text],
    POLL
  );
}

module.exports = { POLL, listed, registered, openRegistered, textIs };
