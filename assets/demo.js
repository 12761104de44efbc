/* The demo page's script (assets/index.html): a file of its own, so that
 * the page runs under its Content-Security-Policy (script-src 'self'). */
(function () {
  'use strict';

  // How long `ws exec status highlight COLOR` colours the status box.
  var HIGHLIGHT_MS = 3000;
  var MAX_LOGGED = 8;

  var conn = document.getElementById('conn');
  var connText = document.getElementById('conn-text');
  var status = document.getElementById('status');
  var result = document.getElementById('result');
  var log = document.getElementById('log');
  var openButton = document.getElementById('open');
  var closeButton = document.getElementById('close');
  var logged = 0;
  var highlightTimer = null;
  // What this script last put in the status box. While the box still
  // shows it, the box follows the connection state; once the daemon has
  // written something else there, that text stays.
  var shownState = status.textContent;

  // Show this server's address in the examples (with its base path, when
  // it serves under one: this page is its root).
  var here = location.origin + location.pathname.replace(/\/[^/]*$/, '');
  var origins = document.querySelectorAll('.origin');
  for (var i = 0; i < origins.length; i++) origins[i].textContent = here;

  function closeText(last) {
    return last.reason || 'closed (code ' + last.code + ')';
  }

  // The badge: the state in a few words.
  function badgeText(info) {
    if (info.state === 'open') return info.index == null ? 'open' : 'open · connection #' + info.index;
    if (info.state === 'connecting') {
      if (info.attempts <= 1) return 'connecting…';
      // A drop without a close frame (the daemon died) has no reason.
      return 'reconnecting… (' + (info.lastClose && info.lastClose.reason || 'connection lost') + ')';
    }
    return info.lastClose ? closeText(info.lastClose) : 'not connected';
  }

  // The status box, while no text has arrived on this connection.
  function boxText(info) {
    if (info.state === 'open') {
      return (info.index == null ? 'connected' : 'connected as #' + info.index) + ', waiting for text';
    }
    if (info.state === 'connecting') return info.attempts <= 1 ? 'connecting…' : 'reconnecting…';
    return info.lastClose ? closeText(info.lastClose) : shownState;
  }

  function showState(fresh) {
    var info = wsInfo();
    conn.setAttribute('data-state', info.state);
    connText.textContent = badgeText(info);
    openButton.disabled = info.state !== 'closed';
    closeButton.disabled = info.state === 'closed';
    if (fresh === true || status.textContent === shownState) {
      shownState = boxText(info);
      status.textContent = shownState;
    }
  }

  function clearHighlight() {
    if (highlightTimer !== null) clearTimeout(highlightTimer);
    highlightTimer = null;
    status.style.backgroundColor = '';
  }

  // `pagewire ws exec status highlight COLOR`: colours the box for a few
  // seconds, or until the next write.
  function highlight(color) {
    if (!(window.CSS && CSS.supports('color', color))) return;
    clearHighlight();
    status.style.backgroundColor = color;
    highlightTimer = setTimeout(clearHighlight, HIGHLIGHT_MS);
  }

  // The demo calls nothing but what it exposes: `ws exec` of any other
  // name shows FUNC:ARG in the box.
  wsExpose('highlight', highlight);
  wsInit.exposedOnly = true;

  wsInit.onstate = function (state) {
    // A new connection starts with an empty box: nothing it was sent yet.
    if (state === 'open') clearHighlight();
    showState(state === 'open');
  };

  wsInit.onframe = function (frame) {
    if (frame.type === 'hello') {
      showState();
      var idx = document.querySelectorAll('.idx');
      for (var i = 0; i < idx.length; i++) idx[i].textContent = frame.index;
    }
    if (frame.type === 'write') clearHighlight();
    var item = document.createElement('li');
    item.textContent = JSON.stringify(frame);
    if (logged++ === 0) log.textContent = '';
    log.insertBefore(item, log.firstChild);
    while (log.children.length > MAX_LOGGED) log.removeChild(log.lastChild);
  };

  openButton.addEventListener('click', function () { wsInit('status'); });
  closeButton.addEventListener('click', function () { wsInit(0); });

  function showResult(ok, text) {
    result.className = ok ? 'result' : 'result bad';
    result.textContent = text;
  }

  // A POST with a JSON body: the browser sends its Origin, so the daemon
  // can tell this page from another site's.
  document.getElementById('broadcast').addEventListener('submit', function (event) {
    event.preventDefault();
    var input = document.getElementById('message');
    var text = input.value || input.placeholder;
    // wsQuote escapes " and \ so that the text stays one token.
    var line = 'ws write * ' + wsQuote(text);
    showResult(true, '…');
    // Relative: under a base path it is the daemon's own api/command.
    fetch('api/command', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ cmd: line })
    })
      .then(function (response) {
        return response.text().then(function (body) {
          var reply = null;
          try {
            reply = JSON.parse(body);
          } catch (err) {
            // A refusal before the command runs may have no JSON body.
          }
          var output = reply && typeof reply.output === 'string' ? reply.output : body;
          showResult(response.ok && !!reply && reply.ok === true,
            output.trim() || response.status + ' ' + response.statusText);
        });
      })
      .catch(function (err) {
        showResult(false, 'request failed: ' + err.message);
      });
  });

  showState();
})();
