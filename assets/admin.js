// The admin console (/admin): the connection table, the Monitor and a
// command line, over the daemon's admin socket (admin/ws, relative, so it
// works under a proxy's path prefix). docs/PROTOCOL.md, "The admin socket",
// describes the frames. No inline script: the page runs under a strict CSP.
'use strict';

(function () {
  const PAGE_ROWS = 100;
  const MONITOR_KEEP = 500;
  const REPLIES_KEEP = 50;
  const HISTORY_KEEP = 100;
  const HISTORY_KEY = 'pagewire.admin.history';
  const TOKEN_KEY = 'pagewire.admin.token';
  const CLOSE_UNAUTHORIZED = 4401;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  let socket = null;
  let ready = false;
  let retryMs = 500;
  let retryTimer = null;
  let everReady = false;
  let lastSeen = null;
  let offset = 0;
  let total = 0;
  let selected = null;
  let nextId = 1;
  const pending = new Map();
  // Each row's age: the daemon's figure and when it came.
  let ages = [];

  // ---- connection state ----------------------------------------------

  function setState(state, text) {
    $('conn').dataset.state = state;
    $('conn-text').textContent = text;
  }

  function banner(text, kind) {
    const b = $('banner');
    if (!text) {
      b.hidden = true;
      return;
    }
    b.hidden = false;
    b.dataset.kind = kind || 'wait';
    b.textContent = text;
  }

  function socketUrl() {
    const url = new URL('admin/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = '';
    url.hash = '';
    return url.href;
  }

  function connect() {
    retryTimer = null;
    ready = false;
    setState('connecting', everReady ? 'reconnecting…' : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      scheduleRetry();
      return;
    }
    socket = ws;
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      onFrame(ws, frame);
    };
    ws.onclose = (ev) => {
      if (socket !== ws) return;
      socket = null;
      const wasReady = ready;
      ready = false;
      failPending('not sent: the connection to the daemon was lost');
      if (ev.code === CLOSE_UNAUTHORIZED) {
        sessionStorage.removeItem(TOKEN_KEY);
        setState('refused', 'token needed');
        askToken(ev.reason === 'wrong token' ? 'Wrong token. Enter the operator token again.' : null);
        return;
      }
      if (wasReady) lastSeen = new Date();
      scheduleRetry();
    };
  }

  function scheduleRetry() {
    const wait = Math.round(retryMs * (0.8 + Math.random() * 0.4));
    retryMs = Math.min(retryMs * 2, 10000);
    const secs = Math.max(1, Math.round(wait / 1000));
    setState('gone', 'daemon not reachable');
    const since = lastSeen ? ` The table shows the daemon's connections as of ${lastSeen.toLocaleTimeString()}.` : '';
    banner(`The daemon is not reachable; trying again in ${secs} s.${since}`, 'bad');
    $('rows').closest('table').classList.add('stale');
    retryTimer = setTimeout(connect, wait);
  }

  function askToken(why) {
    const form = $('auth');
    form.hidden = false;
    if (why) $('auth-why').textContent = why;
    banner(null);
    $('token').focus();
  }

  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value;
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('auth').hidden = true;
    if (!socket && !retryTimer) connect();
  });

  function send(frame) {
    if (!socket || !ready) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(ws, f) {
    switch (f.type) {
      case 'hello':
        if (f.auth === 'token') {
          const token = sessionStorage.getItem(TOKEN_KEY);
          if (token) {
            ws.send(JSON.stringify({ type: 'auth', token }));
          } else {
            setState('refused', 'token needed');
            askToken(null);
            ws.onclose = null;
            socket = null;
            ws.close();
          }
        }
        break;
      case 'ready': {
        const back = everReady;
        ready = true;
        everReady = true;
        retryMs = 500;
        $('auth').hidden = true;
        $('node').textContent = f.node ? ` on node ${f.node}` : '';
        // Rows name their node in a cluster; on its own the daemon is all.
        nodeName = f.node || 'this daemon';
        setState('open', 'connected');
        banner(back ? 'The daemon is back; the table is current again.' : null);
        if (back) setTimeout(() => { if (ready) banner(null); }, 4000);
        $('rows').closest('table').classList.remove('stale');
        send({ type: 'view', offset, limit: PAGE_ROWS });
        if (back) monitorLine('— console reconnected —', true);
        break;
      }
      case 'table':
        renderTable(f);
        break;
      case 'monitor':
        monitorLine(f.line, false);
        break;
      case 'reply':
        onReply(f);
        break;
      default:
        break;
    }
  }

  // ---- the connection table --------------------------------------------

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function age(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
    const h = Math.floor(m / 60);
    return `${h}h${String(m % 60).padStart(2, '0')}m`;
  }

  function cell(row, cls, label, text) {
    const td = el('td', cls, text);
    td.dataset.label = label;
    row.appendChild(td);
    return td;
  }

  let shownIds = new Set();
  let nodeName = '';

  function renderTable(f) {
    total = f.total;
    offset = f.offset;
    const now = performance.now();
    const body = $('rows');
    const fresh = new Set();
    body.textContent = '';
    ages = [];
    f.rows.forEach((r, i) => {
      const tr = el('tr');
      tr.dataset.id = String(r.id);
      tr.tabIndex = 0;
      tr.setAttribute('aria-selected', String(r.id === selected));
      if (shownIds.size && !shownIds.has(r.id)) tr.classList.add('fresh');
      fresh.add(r.id);
      cell(tr, 'num', '#', String(r.id));
      cell(tr, 'names', 'names', r.names.length ? r.names.join(', ') : '—');
      cell(tr, 'page', 'page', r.page || '—');
      cell(tr, 'addr', 'address', r.remote);
      cell(tr, 'node', 'node', r.node || nodeName);
      cell(tr, 'vis', 'shown', r.visibility || '—');
      const ageCell = cell(tr, 'num age', 'age', age(f.ages_ms[i] || 0));
      ages.push({ cell: ageCell, ms: f.ages_ms[i] || 0, at: now });
      cell(tr, 'num', 'in', `${r.msgs_in} · ${bytes(r.bytes_in)}`);
      cell(tr, 'num', 'out', `${r.msgs_out} · ${bytes(r.bytes_out)}`);
      body.appendChild(tr);
    });
    shownIds = fresh;
    if (!f.rows.length) {
      const tr = el('tr', 'empty');
      const td = el('td', null, total ? 'no connections on this page' : 'no connections');
      td.colSpan = 9;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $('count').textContent = `${total} live`;
    const pager = $('pager');
    pager.hidden = total <= PAGE_ROWS && offset === 0;
    $('range').textContent = total ? `${offset + 1}–${offset + f.rows.length} of ${total}` : '';
    $('prev').disabled = offset === 0;
    $('next').disabled = offset + PAGE_ROWS >= total;
    if (offset > 0 && offset >= total) view(Math.max(0, total - PAGE_ROWS));
  }

  function view(at) {
    offset = Math.max(0, at);
    send({ type: 'view', offset, limit: PAGE_ROWS });
  }

  $('prev').addEventListener('click', () => view(offset - PAGE_ROWS));
  $('next').addEventListener('click', () => view(offset + PAGE_ROWS));

  setInterval(() => {
    const now = performance.now();
    for (const a of ages) a.cell.textContent = age(a.ms + (ready ? now - a.at : 0));
  }, 1000);

  function pick(tr) {
    selected = Number(tr.dataset.id);
    for (const other of $('rows').querySelectorAll('tr[data-id]')) {
      other.setAttribute('aria-selected', String(other === tr));
    }
    const input = $('line');
    input.value = withTarget(input.value, selected);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  // `ws write|exec|close TARGET ...` gets its target replaced; anything
  // else becomes `ws write INDEX `.
  function withTarget(line, id) {
    const m = /^(\s*ws\s+(?:write|exec|close)\s+)(\S+)(.*)$/s.exec(line);
    if (m) return `${m[1]}${id}${m[3]}`;
    const bare = /^(\s*ws\s+(?:write|exec|close))\s*$/.exec(line);
    if (bare) return `${bare[1]} ${id} `;
    return `ws write ${id} `;
  }

  $('rows').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr[data-id]');
    if (tr) pick(tr);
  });
  $('rows').addEventListener('keydown', (ev) => {
    const tr = ev.target.closest('tr[data-id]');
    if (tr && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      pick(tr);
    }
  });

  // ---- the Monitor -----------------------------------------------------

  function matches(text) {
    const f = $('filter').value.trim().toLowerCase();
    return !f || text.toLowerCase().includes(f);
  }

  function monitorLine(line, note) {
    const list = $('monitor');
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    const li = el('li', note ? 'note' : null, line);
    li.hidden = !matches(line);
    list.appendChild(li);
    while (list.children.length > MONITOR_KEEP) list.firstChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  $('filter').addEventListener('input', () => {
    for (const li of $('monitor').children) li.hidden = !matches(li.textContent);
    const list = $('monitor');
    list.scrollTop = list.scrollHeight;
  });

  // ---- the command line ------------------------------------------------

  function loadHistory() {
    try {
      const h = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
      return Array.isArray(h) ? h.filter((x) => typeof x === 'string') : [];
    } catch (e) {
      return [];
    }
  }

  let history = loadHistory();
  let cursor = history.length;
  let draft = '';

  function remember(line) {
    history = history.filter((h) => h !== line);
    history.push(line);
    if (history.length > HISTORY_KEEP) history = history.slice(-HISTORY_KEEP);
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(history));
    } catch (e) {
      // Storage full or refused: the history lives for this page only.
    }
    cursor = history.length;
    draft = '';
  }

  $('line').addEventListener('keydown', (ev) => {
    const input = ev.target;
    if (ev.key === 'ArrowUp' && cursor > 0) {
      if (cursor === history.length) draft = input.value;
      cursor -= 1;
      input.value = history[cursor];
    } else if (ev.key === 'ArrowDown' && cursor < history.length) {
      cursor += 1;
      input.value = cursor === history.length ? draft : history[cursor];
    } else {
      return;
    }
    ev.preventDefault();
    input.setSelectionRange(input.value.length, input.value.length);
  });

  function addReply(line) {
    const list = $('replies');
    const li = el('li');
    li.appendChild(el('div', 'cmd', line));
    const out = el('pre', null, '…');
    li.appendChild(out);
    li.dataset.state = 'pending';
    list.insertBefore(li, list.firstChild);
    while (list.children.length > REPLIES_KEEP) list.lastChild.remove();
    return li;
  }

  function settle(li, ok, output) {
    li.dataset.state = ok ? 'ok' : 'failed';
    li.querySelector('pre').textContent = output || (ok ? 'ok' : 'failed');
  }

  function onReply(f) {
    const li = pending.get(f.id);
    if (li) {
      pending.delete(f.id);
      settle(li, f.ok, f.output);
    } else if (!f.ok) {
      settle(addReply('(message)'), false, f.output);
    }
  }

  function failPending(why) {
    for (const li of pending.values()) settle(li, false, why);
    pending.clear();
  }

  $('command').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('line');
    const line = input.value.trim();
    if (!line) return;
    remember(line);
    const li = addReply(line);
    const id = nextId++;
    if (send({ type: 'command', id, line })) {
      pending.set(id, li);
      input.value = '';
    } else {
      settle(li, false, 'not sent: the console is not connected to the daemon');
    }
  });

  connect();
})();
