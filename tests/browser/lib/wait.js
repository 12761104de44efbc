'use strict';
// Polling instead of sleeping: wait until a condition holds, or check that
// it keeps holding over a window.

const DEFAULT_TIMEOUT_MS = 15000;
const INTERVAL_MS = 50;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Calls `probe` until it returns a truthy value and resolves to that value.
 * On timeout it fails with `what` and the last value or error seen.
 */
async function until(what, probe, timeout = DEFAULT_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${seen})`);
    }
    await pause(INTERVAL_MS);
  }
}

/**
 * Checks `probe` repeatedly for `window` ms and fails as soon as it returns
 * something falsy: for promises of the form "this does not happen".
 */
async function holds(what, probe, window) {
  const end = Date.now() + window;
  let checks = 0;
  while (Date.now() < end || checks < 2) {
    const value = await probe();
    checks++;
    if (!value) throw new Error(`${what} stopped holding after ${checks} checks`);
    await pause(INTERVAL_MS);
  }
}

module.exports = { until, holds };
