// The one source of ws.js. client/build.mjs wraps it into the classic script
// the daemon serves (assets/ws.js) and the npm package's ES module
// (client/index.js): edit this file, never those, then run
// `node client/build.mjs`. The build keeps the header comment below and
// everything after it.
/* pagewire ws.js: a page's live wire to the pagewire daemon.
 *
 * Include with <script src="/ws.js"></script>, which puts the functions
 * below on window, or import them from the npm package `pagewire` as an
 * ES module (import { wsInit, wsExpose } from 'pagewire'), which puts
 * nothing on window. No dependencies, no build step for the page.
 *
 *   wsInit('status')   open the WebSocket to the daemon's /ws beside ws.js
 *                      (wss: on https; so /status/ws for /status/ws.js)
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
 *   wsExpose(name, fn) let `ws exec TARGET name ARG` call fn(ARG), whatever
 *                      the page's globals; fn must be a function the page
 *                      wrote (else a TypeError). wsExpose(name, null)
 *                      takes it back.
 *
 *   wsInit.onstate = function (state) {}   called on every state change
 *   wsInit.onframe = function (frame) {}   called with every server frame
 *                                          (after ws.js has handled it)
 *   wsInit.exposedOnly = true              `ws exec` reaches wsExpose'd
 *                                          functions only, no globals
 *   wsInit.base = '/status/'               where the daemon is (a path or
 *                                          URL): its socket is BASE + 'ws'.
 *                                          Needed by a module or bundle
 *                                          under a base path; a script tag
 *                                          finds it beside ws.js
 *
 * `ws call TARGET FUNC ARG` calls FUNC(ARG) the same way and answers the
 * daemon with what it returned (a Promise is awaited; at most 4096
 * characters of JSON), or "no such function" / "threw: MESSAGE". `ws read`
 * is answered with the element's text (its first 1000 characters), and a
 * `ws write --wait` or `ws exec --wait` is confirmed once applied.
 *
 * `ws exec TARGET FUNC ARG` calls FUNC(ARG) only when FUNC is a function
 * the page made: one given to wsExpose, else (unless exposedOnly) a
 * function the page's script put on window itself (`function f() {}`,
 * `var f = function ...`, `window.f = ...`; let, const and class
 * declarations are not on window). Never a browser built-in (eval,
 * Function, setTimeout, fetch, open, alert ...), a bound function or a
 * Proxy (their source reads "[native code]" like a built-in's), a name
 * window inherits (constructor, toString ...), a getter (none is run to
 * find out) or ws.js's own functions. Anything else shows "FUNC:ARG" in
 * the element, as for a missing function. ws.js keeps the
 * Function.prototype.toString it found when it loaded, so load it before
 * scripts you do not trust to leave that alone. A module's own functions
 * are not on window: an ES module hands what `ws exec` may call to
 * wsExpose.
 *
 * No eval, no new Function, no string timers, no inline script: ws.js runs
 * under Content-Security-Policy script-src 'self' (connect-src 'self'
 * covers its ws:/wss: socket).
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
 *
 * The daemon's hello gives the page a resume token, kept in the tab's
 * sessionStorage and presented when it connects again (after a drop, a
 * reload or a daemon restart): within the daemon's grace period the page
 * gets its old index and names back, so `ws write 7` keeps reaching it.
 * ws.js also reports the page's visibility (visible, hidden, frozen) to
 * the daemon when it connects and on every change, never periodically;
 * the daemon's `ws` listing shows it.
 *
 * One page, one client: a page that loads ws.js twice (the classic script
 * and a bundle, or two bundles) gets the first copy's functions from every
 * copy, so it still has one connection, one set of names and one
 * wsExpose table. A copy of another version says so on the console.
 */

// pageClient() returns the page's client: the one a copy of ws.js loaded
// before this one made, else a new one. The build keeps pageClient itself
// out of the page's globals, so that no command can name it.
function pageClient() {
  'use strict';

  // The package's version (client/package.json; the build checks they agree).
  var VERSION = '0.1.0';
  // Where the page's client is kept: a symbol, which `ws exec` (a string
  // name looked up on window) can never reach.
  var SHARED = Symbol.for('pagewire ws.js');

  var first = window[SHARED];
  if (first && first.api && typeof first.api.wsInit === 'function') {
    if (first.version !== VERSION && window.console && console.warn) {
      console.warn('ws.js ' + VERSION + ': this page already runs ws.js ' + first.version +
        '; both use that one');
    }
    return first.api;
  }

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
  var exposed = Object.create(null); // wsExpose(name, fn), by name
  // Where the resume token is kept: per tab, for as long as the tab lives.
  var RESUME_KEY = 'pagewire.resume';
  var reported = null;  // the visibility last reported on this connection
  var frozen = false;   // between the freeze and resume events
  var reports = false;  // whether the daemon takes visibility reports

  // Taken now, before a later script can replace them: whether a function
  // is the page's own must not be answered by code the page can swap.
  var sourceOf = Function.prototype.call.bind(Function.prototype.toString);
  var hasOwn = Function.prototype.call.bind(Object.prototype.hasOwnProperty);
  var callWith = Function.prototype.call.bind(Function.prototype.call);
  var ownDescriptor = Object.getOwnPropertyDescriptor;
  // What Function.prototype.toString returns for anything that is not
  // source text: built-ins, bound functions, Proxies. Source the page wrote
  // ends this way only inside a comment (`[native code]` is not an
  // expression), and then the error is a refusal.
  var NATIVE_SOURCE = /\{\s*\[native\s+code\]\s*\}\s*$/;
  // The longest value a `result` may carry, as JSON (the daemon's bound).
  var MAX_RESULT = 4096;
  // The longest text a `read` answers with, in characters.
  var MAX_READ = 1000;

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

  function isOwnApi(fn) {
    return fn === wsInit || fn === wsSend || fn === wsState || fn === wsInfo ||
      fn === quote || fn === wsExpose;
  }

  // A function the page wrote: not a built-in, bound function or Proxy,
  // and not ws.js itself.
  function pageMade(fn) {
    if (typeof fn !== 'function' || isOwnApi(fn)) return false;
    try {
      return !NATIVE_SOURCE.test(sourceOf(fn));
    } catch (err) {
      return false;
    }
  }

  // The one rule for what an operator's command may call on this page
  // (see the header): the function for `name`, or null. It runs no getter
  // of window's and none of the functions it looks at.
  function callable(name) {
    if (typeof name !== 'string' || name === '') return null;
    if (hasOwn(exposed, name)) return exposed[name];
    if (wsInit.exposedOnly) return null;
    var desc;
    try {
      desc = ownDescriptor(window, name);
    } catch (err) {
      return null;
    }
    // Only a plain value of window's own: an accessor (a getter, onload
    // and the like) or an inherited name is never looked at.
    if (!desc || !hasOwn(desc, 'value')) return null;
    return pageMade(desc.value) ? desc.value : null;
  }

  // Answers the daemon on the socket the frame came by: an answer that
  // went out on a newer connection would not be this page's for the
  // daemon, which matches answers to the connection it asked.
  function answer(via, fields) {
    if (via && via === sock && via.readyState === WebSocket.OPEN) via.send(JSON.stringify(fields));
  }

  // The id of a frame that wants an answer, or null.
  function idOf(value) {
    return typeof value === 'number' && value >= 0 ? value : null;
  }

  function message(err) {
    try {
      return err instanceof Error ? String(err.message) : String(err);
    } catch (e) {
      return 'an exception';
    }
  }

  // `ack` confirms a write or exec that asked for it (`--wait`): `error`
  // says why it was not applied.
  function confirm(via, frame, error) {
    var id = idOf(frame.ack);
    if (id === null) return;
    answer(via, error ? { type: 'ack', id: id, error: error } : { type: 'ack', id: id });
  }

  function result(via, id, value) {
    var json;
    try {
      json = JSON.stringify(value === undefined ? null : value);
    } catch (err) {
      answer(via, { type: 'result', id: id, error: 'result is not JSON: ' + message(err) });
      return;
    }
    if (json === undefined) json = 'null';
    if (json.length > MAX_RESULT) {
      answer(via, { type: 'result', id: id,
        error: 'result too large (' + json.length + ' characters of JSON; at most ' + MAX_RESULT + ')' });
      return;
    }
    // The JSON just measured is the JSON sent.
    if (via && via === sock && via.readyState === WebSocket.OPEN) {
      via.send('{"type":"result","id":' + id + ',"value":' + json + '}');
    }
  }

  // `ws call`: the one `callable` rule, then the value, a Promise awaited.
  function call(via, frame) {
    var id = idOf(frame.id);
    if (id === null) return;
    var fn = callable(frame.func);
    if (!fn) {
      answer(via, { type: 'result', id: id, error: 'no such function' });
      return;
    }
    var value;
    try {
      value = callWith(fn, window, str(frame.arg));
    } catch (err) {
      answer(via, { type: 'result', id: id, error: 'threw: ' + message(err) });
      return;
    }
    Promise.resolve(value).then(function (v) {
      result(via, id, v);
    }, function (err) {
      answer(via, { type: 'result', id: id, error: 'threw: ' + message(err) });
    });
  }

  // `ws read`: the element's text, cut.
  function read(via, frame) {
    var id = idOf(frame.id);
    if (id === null) return;
    var el = target(frame);
    if (!el) {
      answer(via, { type: 'result', id: id, error: noElement(frame) });
      return;
    }
    var text = str(el.textContent);
    if (text.length > MAX_READ) text = text.slice(0, MAX_READ) + '\u2026';
    answer(via, { type: 'result', id: id, value: text });
  }

  function noElement(frame) {
    var which = typeof frame.name === 'string' ? frame.name : names[0];
    return which == null ? 'no registered element' : 'no element ' + which;
  }

  function handle(frame) {
    var el;
    var via = sock;
    switch (frame.type) {
      case 'hello':
        if (typeof frame.index === 'number') index = frame.index;
        // Only a daemon that gives resume tokens knows visibility reports.
        if (typeof frame.resume === 'string') {
          storeToken(frame.resume);
          reports = true;
          reportVisibility();
        }
        break;
      case 'write':
        el = target(frame);
        if (el) el.textContent = str(frame.text);
        confirm(via, frame, el ? null : noElement(frame));
        break;
      case 'exec':
        var fn = callable(frame.func);
        var failed = null;
        if (fn) {
          try {
            callWith(fn, window, str(frame.arg));
          } catch (err) {
            reportError(err);
            failed = 'threw: ' + message(err);
          }
        } else {
          el = target(frame);
          if (el) el.textContent = str(frame.func) + ':' + str(frame.arg);
          else failed = noElement(frame);
        }
        confirm(via, frame, failed);
        break;
      case 'call':
        call(via, frame);
        break;
      case 'read':
        read(via, frame);
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

  // The daemon's /ws is beside ws.js: a page that loaded ws.js from under
  // a base path (a reverse proxy's /status/ws.js) gets /status/ws. Read
  // once, while the script that loads ws.js runs; a bundle or a module
  // (which has no currentScript) uses this host's /ws.
  var SCRIPT_URL = scriptUrl();

  function scriptUrl() {
    var script = typeof document !== 'undefined' ? document.currentScript : null;
    if (!script || !script.src) return null;
    try {
      var u = new URL(script.src, location.href);
      return /\/ws\.js$/.test(u.pathname) ? u : null;
    } catch (err) {
      return null;
    }
  }

  // wsInit.base as a URL, or null when unset or not a URL.
  function baseUrl() {
    if (typeof wsInit.base !== 'string' || wsInit.base === '') return null;
    try {
      return new URL(wsInit.base, location.href);
    } catch (err) {
      return null;
    }
  }

  // sessionStorage may be missing or refuse (privacy settings, sandboxed
  // frames): the page then simply gets a fresh index when it reconnects.
  function storedToken() {
    try {
      return window.sessionStorage.getItem(RESUME_KEY);
    } catch (err) {
      return null;
    }
  }

  function storeToken(value) {
    try {
      window.sessionStorage.setItem(RESUME_KEY, String(value));
    } catch (err) {
      // See storedToken.
    }
  }

  // What the browser shows of the page now, in the daemon's words.
  function visibility() {
    if (frozen) return 'frozen';
    return document.visibilityState === 'hidden' ? 'hidden' : 'visible';
  }

  // One short command line, only when the state changed since the last
  // report on this connection.
  function reportVisibility() {
    var now = visibility();
    if (!reports || now === reported || !sock || sock.readyState !== WebSocket.OPEN) return;
    reported = now;
    sock.send('ws visibility ' + now);
  }

  // ?page= tells the daemon which page this is, for its `ws` listing;
  // ?resume= asks for the index this tab had.
  function url() {
    var from = SCRIPT_URL || location;
    var dir = SCRIPT_URL ? SCRIPT_URL.pathname.slice(0, -'ws.js'.length) : '/';
    var base = baseUrl();
    if (base) {
      from = base;
      dir = base.pathname.replace(/\/?$/, '/');
    }
    var token = storedToken();
    return (from.protocol === 'https:' ? 'wss://' : 'ws://') + from.host + dir +
      'ws?page=' + encodeURIComponent(location.pathname) +
      (token ? '&resume=' + encodeURIComponent(token) : '');
  }

  function connect() {
    clearRetry();
    index = null;
    reported = null;
    reports = false;
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

  function wsExpose(name, fn) {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError('wsExpose: the name must be a non-empty string');
    }
    if (fn == null) {
      delete exposed[name];
      return;
    }
    if (!pageMade(fn)) {
      throw new TypeError('wsExpose: ' + name + ' must be a function the page wrote, ' +
        'not a built-in, bound function, Proxy or ws.js function; wrap it: function (arg) { ... }');
    }
    exposed[name] = fn;
  }

  // wsInit() may run in <head>, before its elements exist.
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', applyState);
  }

  // The Page Visibility and Page Lifecycle events: each may change what
  // reportVisibility says, which sends only on a change.
  document.addEventListener('visibilitychange', reportVisibility);
  document.addEventListener('freeze', function () {
    frozen = true;
    reportVisibility();
  });
  document.addEventListener('resume', function () {
    frozen = false;
    reportVisibility();
  });
  window.addEventListener('pagehide', reportVisibility);
  window.addEventListener('pageshow', reportVisibility);

  // Frozen, so that no script can swap a function under another copy.
  var api = Object.freeze({
    wsInit: wsInit,
    wsSend: wsSend,
    wsState: wsState,
    wsInfo: wsInfo,
    wsQuote: quote,
    wsExpose: wsExpose
  });
  try {
    Object.defineProperty(window, SHARED, { value: { version: VERSION, api: api } });
  } catch (err) {
    // Something else holds the key: this copy still works, on its own.
    reportError(err);
  }
  return api;
}
