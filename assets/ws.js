/* pagewire ws.js: a page's live wire to the pagewire daemon.
 *
 * Include with <script src="/ws.js"></script>; no modules, no dependencies.
 *
 *   wsInit('status')   open the WebSocket to this host's /ws (wss: on https)
 *                      and register element #status; on an open socket,
 *                      register one more element. Every registered name is
 *                      registered again after a reconnect.
 *   wsInit(0)          close (code 1000); no reconnect until the page calls
 *                      wsInit('name') again.
 *   wsSend(line)       send one command line, e.g. wsSend('run build');
 *                      returns false when the socket is not open.
 *   wsState()          'connecting' | 'open' | 'closed'
 *   wsInfo()           a snapshot: { state, index, names, attempts,
 *                      retryIn, lastClose: { code, reason } | null }
 *   wsQuote(text)      text as one double-quoted token of a command line.
 *
 *   wsInit.onstate = function (state) {}   called on every state change
 *   wsInit.onframe = function (frame) {}   called with every server frame
 *                                          (after ws.js has handled it)
 *
 * Every registered element carries data-ws-state="connecting|open|closed"
 * for styling. Server text only ever lands in textContent, never as HTML:
 * `write` replaces the element's text; an action's output lines are
 * appended as <div class="ws-line"> (plus "ws-stderr"), its end as
 * <div class="ws-done"> (plus "ws-failed" unless it exited with 0).
 * Frames follow docs/PROTOCOL.md; unknown types and fields are ignored.
 *
 * A dropped connection is retried with exponential backoff: the ceiling
 * starts at 250 ms and doubles up to 10 s, and each wait is a random time
 * between half the ceiling and the ceiling. A close by the operator
 * (1000), by wsInit(0), or for too many names (4002) is final.
 */
(function () {
  'use strict';

  var MIN_DELAY = 250;
  var MAX_DELAY = 10000;
  // A connection that lived this long counts as healthy: the next drop
  // starts the backoff from the beginning again.
  var STABLE_MS = 5000;
  // Close codes after which reconnecting would undo someone's decision.
  var FINAL_CODES = { 1000: true, 4002: true };

  var sock = null;      // the current WebSocket, or null
  var names = [];       // registered element ids, in registration order
  var state = 'closed';
  var index = null;     // this connection's index, from the hello frame
  var attempts = 0;     // sockets opened since the page loaded
  var failures = 0;     // consecutive drops, drives the backoff
  var openedAt = 0;
  var retryTimer = null;
  var retryAt = 0;
  var lastClose = null;

  function quote(text) {
    return '"' + String(text).replace(/[\\"]/g, '\\$&') + '"';
  }

  // Names are usually plain ids; quote only when the command language needs it.
  function token(text) {
    return /^[^\s"\\]+$/.test(text) ? text : quote(text);
  }

  function element(name) {
    return name == null ? null : document.getElementById(name);
  }

  function applyState() {
    for (var i = 0; i < names.length; i++) {
      var el = element(names[i]);
      if (el) el.setAttribute('data-ws-state', state);
    }
  }

  function setState(next) {
    if (next === state) return;
    state = next;
    applyState();
    notify(wsInit.onstate, state);
  }

  // A page callback that throws must not break the connection handling.
  function notify(callback, value) {
    if (typeof callback !== 'function') return;
    try {
      callback(value);
    } catch (err) {
      reportError(err);
    }
  }

  function reportError(err) {
    if (window.console && console.error) console.error('ws.js:', err);
  }

  // The element a frame is for: the one it names, else the first registered.
  function target(frame) {
    return element(typeof frame.name === 'string' ? frame.name : names[0]);
  }

  function str(value) {
    return value == null ? '' : String(value);
  }

  function appendLine(el, text, className) {
    if (!el) return;
    var line = document.createElement('div');
    line.className = className;
    line.textContent = text;
    el.appendChild(line);
  }

  function handle(frame) {
    var el;
    switch (frame.type) {
      case 'hello':
        if (typeof frame.index === 'number') index = frame.index;
        break;
      case 'write':
        el = target(frame);
        if (el) el.textContent = str(frame.text);
        break;
      case 'exec':
        var fn = typeof frame.func === 'string' ? window[frame.func] : null;
        if (typeof fn === 'function') {
          try {
            fn.call(window, frame.arg);
          } catch (err) {
            reportError(err);
          }
        } else {
          el = target(frame);
          if (el) el.textContent = str(frame.func) + ':' + str(frame.arg);
        }
        break;
      case 'line':
        appendLine(target(frame), str(frame.text),
          frame.stream === 'stderr' ? 'ws-line ws-stderr' : 'ws-line');
        break;
      case 'done':
        // "deploy: exited with 0": the message does not name the action.
        var outcome = frame.message ? str(frame.message) :
          frame.status == null ? 'killed' : 'exited with ' + frame.status;
        appendLine(target(frame), (frame.action ? frame.action + ': ' : '') + outcome,
          frame.status === 0 ? 'ws-done' : 'ws-done ws-failed');
        break;
      case 'error':
        reportError(str(frame.message));
        break;
      // 'reply' needs no default action, and unknown types are skipped so
      // that newer servers can add frames.
    }
  }

  function onMessage(event) {
    if (typeof event.data !== 'string') return;
    var frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (!frame || typeof frame !== 'object' || Array.isArray(frame)) return;
    handle(frame);
    notify(wsInit.onframe, frame);
  }

  // ?page= tells the daemon which page this is, for its `ws` listing.
  function url() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
      '/ws?page=' + encodeURIComponent(location.pathname);
  }

  function connect() {
    clearRetry();
    index = null;
    attempts++;
    setState('connecting');
    var ws;
    try {
      ws = new WebSocket(url());
    } catch (err) {
      // Only a malformed URL throws here; retrying the same URL won't help.
      reportError(err);
      setState('closed');
      return;
    }
    sock = ws;
    ws.onopen = function () {
      if (ws !== sock) return;
      openedAt = Date.now();
      for (var i = 0; i < names.length; i++) ws.send('ws register ' + token(names[i]));
      setState('open');
    };
    ws.onmessage = function (event) {
      if (ws === sock) onMessage(event);
    };
    ws.onclose = function (event) {
      // A socket we already let go of (wsInit(0), or replaced) is not news.
      if (ws !== sock) return;
      sock = null;
      index = null;
      lastClose = { code: event.code, reason: event.reason };
      if (FINAL_CODES[event.code]) {
        setState('closed');
        return;
      }
      if (openedAt && Date.now() - openedAt >= STABLE_MS) failures = 0;
      openedAt = 0;
      scheduleRetry();
    };
    // onerror is always followed by onclose, which does the work.
  }

  function scheduleRetry() {
    var ceiling = Math.min(MAX_DELAY, MIN_DELAY * Math.pow(2, failures));
    failures++;
    // Jitter in [ceiling/2, ceiling): many pages dropped by one restart
    // must not all knock again in the same instant.
    var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    retryAt = Date.now() + delay;
    retryTimer = setTimeout(connect, delay);
    setState('connecting');
  }

  function clearRetry() {
    if (retryTimer !== null) clearTimeout(retryTimer);
    retryTimer = null;
    retryAt = 0;
  }

  function close() {
    clearRetry();
    failures = 0;
    openedAt = 0;
    var ws = sock;
    sock = null;
    index = null;
    if (ws) {
      lastClose = { code: 1000, reason: 'closed by page' };
      try {
        ws.close(1000, 'closed by page');
      } catch (err) {
        reportError(err);
      }
    }
    setState('closed');
  }

  function wsInit(name) {
    if (!name) {
      close();
      return;
    }
    name = String(name);
    if (state === 'closed') {
      // A fresh start after a final close: only this name is wanted now.
      names = [name];
      failures = 0;
      connect();
      return;
    }
    if (names.indexOf(name) < 0) {
      names.push(name);
      if (sock && sock.readyState === WebSocket.OPEN) sock.send('ws register ' + token(name));
    }
    applyState();
    // The page asked for a connection now: don't make it wait out a backoff.
    if (retryTimer !== null) connect();
  }

  function wsSend(line) {
    if (!sock || sock.readyState !== WebSocket.OPEN) return false;
    sock.send(String(line));
    return true;
  }

  function wsState() {
    return state;
  }

  function wsInfo() {
    return {
      state: state,
      index: index,
      names: names.slice(),
      attempts: attempts,
      retryIn: retryTimer === null ? null : Math.max(0, retryAt - Date.now()),
      lastClose: lastClose && { code: lastClose.code, reason: lastClose.reason }
    };
  }

  // wsInit() may run in <head>, before its elements exist.
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', applyState);
  }

  window.wsInit = wsInit;
  window.wsSend = wsSend;
  window.wsState = wsState;
  window.wsInfo = wsInfo;
  window.wsQuote = quote;
})();
