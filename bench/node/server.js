#!/usr/bin/env node
// A Node.js peer for pagewire's fan-out benchmark, built on the npm `ws`
// package the way a typical broadcast server is.
//
// Same interface as `pagewire serve`, as far as the benchmark uses it:
//   node server.js --listen 127.0.0.1:0 --control PATH [--mode send|frame]
//                  [--deflate]
// prints "pagewire listening on http://ADDR (control socket PATH)" when
// ready; GET /ws upgrades (hello frame, then `ws register NAME` from the
// page); POST /api/command runs `ws write TARGET "text"` and answers
// {"ok":true,"output":"sent to N connections"}.
//
// Modes:
//   send   client.send(json) for every target: ws frames the text anew for
//          each client (the usual broadcast loop from ws's README);
//   frame  the frame is built once with WebSocket.Sender.frame() (a public
//          static method) and the same buffers go to every client through
//          the client's sender. ws has no public call for "send this
//          pre-built frame", so this uses the internal `_sender.sendFrame`;
//          per-message compression is off, so the bytes are exactly what
//          send() would have written.
//
// --deflate turns on ws's permessage-deflate the way pagewire negotiates it
// (no context takeover either way, frames of 128 bytes or more), so that
// clients read the same format from both; ws then compresses each message
// once per client, as its README's broadcast loop does. Send mode only.
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const MAX_BODY = 64 * 1024;
const MAX_NAMES = 16;

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:8080', control: 'none', mode: 'send', deflate: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--listen' || flag === '--control' || flag === '--mode') {
      if (value === undefined) throw new Error(`${flag} needs a value`);
      opts[flag.slice(2)] = value;
      i++;
    } else if (flag === '--deflate') {
      opts.deflate = true;
    } else {
      throw new Error(`unknown flag ${flag}`);
    }
  }
  if (opts.mode !== 'send' && opts.mode !== 'frame') {
    throw new Error('--mode is send or frame');
  }
  if (opts.deflate && opts.mode !== 'send') {
    throw new Error('--deflate needs --mode send');
  }
  const colon = opts.listen.lastIndexOf(':');
  opts.host = opts.listen.slice(0, colon);
  opts.port = Number(opts.listen.slice(colon + 1));
  return opts;
}

// Blank-separated tokens; a double-quoted string is one token, with \" and
// \\ escapes inside it.
function tokenize(line) {
  const tokens = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i])) i++;
    if (i >= line.length) break;
    let token = '';
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new Error('unterminated double quote');
        const c = line[i++];
        if (c === '"') break;
        if (c === '\\' && (line[i] === '"' || line[i] === '\\')) token += line[i++];
        else token += c;
      }
    } else {
      while (i < line.length && !/\s/.test(line[i])) token += line[i++];
    }
    tokens.push(token);
  }
  return tokens;
}

const opts = parseArgs(process.argv.slice(2));
const names = new Map(); // name -> Set of WebSocket
let nextIndex = 1;

function targetsOf(target) {
  if (target === '*') return [...wss.clients];
  if (/^[0-9]+$/.test(target)) {
    const index = Number(target);
    return [...wss.clients].filter((c) => c.pwIndex === index);
  }
  return [...(names.get(target) || [])];
}

function wsWrite(target, text) {
  const frame = { type: 'write' };
  if (target !== '*' && !/^[0-9]+$/.test(target)) frame.name = target;
  frame.text = text;
  const json = JSON.stringify(frame);
  const clients = targetsOf(target);
  let sent = 0;
  if (opts.mode === 'frame') {
    const list = WebSocket.Sender.frame(Buffer.from(json), {
      fin: true,
      rsv1: false,
      opcode: 1,
      mask: false,
      readOnly: false,
    });
    for (const client of clients) {
      if (client.readyState !== WebSocket.OPEN) continue;
      client._sender.sendFrame(list);
      sent++;
    }
  } else {
    for (const client of clients) {
      if (client.readyState !== WebSocket.OPEN) continue;
      client.send(json);
      sent++;
    }
  }
  return sent;
}

function operatorCommand(line) {
  let tokens;
  try {
    tokens = tokenize(line);
  } catch (e) {
    return { ok: false, output: e.message };
  }
  if (tokens.length !== 4 || tokens[0] !== 'ws' || tokens[1] !== 'write') {
    return { ok: false, output: 'expected: ws write TARGET "text"' };
  }
  const sent = wsWrite(tokens[2], tokens[3]);
  if (sent === 0) {
    console.log(tokens[3]);
    return { ok: true, output: 'no WebSocket matched; printed on the console' };
  }
  return { ok: true, output: `sent to ${sent} connections` };
}

const server = http.createServer((req, res) => {
  const path = (req.url || '').split('?')[0];
  if (req.method !== 'POST' || path !== '/api/command') {
    res.writeHead(404, { 'content-length': 0 });
    res.end();
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      res.writeHead(413, { 'content-length': 0, connection: 'close' });
      res.end();
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (res.writableEnded) return;
    const body = JSON.stringify(operatorCommand(Buffer.concat(chunks).toString('utf8').trim()));
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;

const wss = new WebSocketServer({
  server,
  path: '/ws',
  maxPayload: 64 * 1024,
  perMessageDeflate: opts.deflate
    ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 128 }
    : false,
});

wss.on('connection', (client) => {
  client.pwIndex = nextIndex++;
  client.pwNames = [];
  client.send(JSON.stringify({ type: 'hello', index: client.pwIndex, version: 1 }));
  client.on('message', (data, isBinary) => {
    if (isBinary) {
      client.close(1003, 'binary frames are not accepted');
      return;
    }
    let tokens;
    try {
      tokens = tokenize(data.toString('utf8').trim());
    } catch (e) {
      client.send(JSON.stringify({ type: 'error', message: e.message }));
      return;
    }
    if (tokens.length !== 3 || tokens[0] !== 'ws' || tokens[1] !== 'register') {
      client.send(JSON.stringify({ type: 'error', message: "pages may only use 'ws register NAME'" }));
      return;
    }
    const name = tokens[2];
    if (!client.pwNames.includes(name)) {
      if (client.pwNames.length >= MAX_NAMES) {
        client.send(JSON.stringify({ type: 'error', message: 'too many names' }));
        return;
      }
      client.pwNames.push(name);
      if (!names.has(name)) names.set(name, new Set());
      names.get(name).add(client);
    }
    client.send(
      JSON.stringify({ type: 'reply', ok: true, output: `registered ${name} on connection ${client.pwIndex}` }),
    );
  });
  client.on('close', () => {
    for (const name of client.pwNames) {
      const set = names.get(name);
      if (!set) continue;
      set.delete(client);
      if (set.size === 0) names.delete(name);
    }
  });
  client.on('error', () => {});
});

server.listen(opts.port, opts.host, () => {
  const addr = server.address();
  console.log(`pagewire listening on http://${addr.address}:${addr.port} (control socket ${opts.control})`);
});
