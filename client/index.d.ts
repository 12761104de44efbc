// Types of pagewire's ws.js, the page side of pagewire: the functions of
// the ES module (and of the classic /ws.js, which puts them on window), and
// the frames the daemon sends, as docs/PROTOCOL.md defines them.
// Written by hand: keep them in step with client/src/ws.js.

/** The connection's state; every registered element also carries it as `data-ws-state`. */
export type WsState = 'connecting' | 'open' | 'closed';

/** How the last connection closed. */
export interface WsClose {
  code: number;
  reason: string;
}

/** A snapshot of the client, from {@link wsInfo}. */
export interface WsInfo {
  state: WsState;
  /** This connection's index (from the `hello` frame); null until it arrives and while closed. */
  index: number | null;
  /** The registered element ids, in registration order. */
  names: string[];
  /** WebSockets opened since the page loaded. */
  attempts: number;
  /** Milliseconds until the next reconnect attempt, or null when none is scheduled. */
  retryIn: number | null;
  lastClose: WsClose | null;
}

// The server's frames: one JSON object per text frame. A later daemon may
// add types and fields, and ws.js passes every frame to `wsInit.onframe`,
// so a `switch (frame.type)` there should keep a default branch.

/** Sent once, first: this connection's index. */
export interface HelloFrame {
  type: 'hello';
  index: number;
  /** The protocol's version: 1. */
  version: number;
  /** The token that brings the page back to this index when it connects again (ws.js keeps it in sessionStorage). */
  resume?: string;
  /** Present (true) when the page got back an index it had before. */
  resumed?: true;
}

/** One target page's answer to `ws call`, `ws read` or `--wait`, in `results`. */
export type PageResult =
  | { index: number; ok: true; value?: unknown }
  | { index: number; ok: false; error: string };

/** The answer to the page's last command line. */
export interface ReplyFrame {
  type: 'reply';
  ok: true;
  output: string;
  /** Each target page's answer, when the command waited for them (granted `ws call` ...). */
  results?: PageResult[];
}

/** The page's last command line was refused or failed. */
export interface ErrorFrame {
  type: 'error';
  message: string;
  /** As in {@link ReplyFrame}: the command ran, and some target page failed it. */
  results?: PageResult[];
}

/** `ws write`: ws.js puts `text`, as plain text, into element `name` (else the first registered). */
export interface WriteFrame {
  type: 'write';
  text: string;
  /** Present when the operator addressed the page by name. */
  name?: string;
  /** `ws write --wait`: ws.js confirms with an `ack` frame of this id. */
  ack?: number;
}

/** `ws exec`: ws.js calls the page's function `func` with `arg`, if the page made one (see wsExpose). */
export interface ExecFrame {
  type: 'exec';
  func: string;
  arg: string;
  name?: string;
  /** `ws exec --wait`: ws.js confirms with an `ack` frame of this id. */
  ack?: number;
}

/** `ws call`: ws.js calls `func(arg)` as for `exec` and answers with a `result` frame of this id. */
export interface CallFrame {
  type: 'call';
  id: number;
  func: string;
  arg: string;
  name?: string;
}

/** `ws read`: ws.js answers with a `result` frame holding element `name`'s text. */
export interface ReadFrame {
  type: 'read';
  id: number;
  name?: string;
}

/** One output line of a running action (at most 4 KiB, without its line ending). */
export interface LineFrame {
  type: 'line';
  text: string;
  action: string;
  stream: 'stdout' | 'stderr';
  name?: string;
}

/** An action ended: `status` is its exit code, null when it was killed (`message` says why). */
export interface DoneFrame {
  type: 'done';
  action: string;
  status: number | null;
  message: string;
  name?: string;
}

/** Every frame docs/PROTOCOL.md defines, told apart by `type`. */
export type ServerFrame =
  | HelloFrame
  | ReplyFrame
  | ErrorFrame
  | WriteFrame
  | ExecFrame
  | CallFrame
  | ReadFrame
  | LineFrame
  | DoneFrame;

/** The `type` of a {@link ServerFrame}. */
export type FrameType = ServerFrame['type'];

/**
 * A function `ws exec TARGET NAME ARG` and `ws call` may call: with `this`
 * = window and the argument as a string. `ws exec` ignores its return value
 * and logs what it throws on the console; `ws call` answers with the value
 * (a Promise awaited, as JSON) or `threw: MESSAGE`.
 */
export type ExposedFunction = (this: Window, arg: string) => unknown;

/** {@link wsInit}: a function with three settings on it. */
export interface WsInit {
  /**
   * Opens the WebSocket to this host's `/ws` (wss: on https) and registers
   * element `name`; on an open socket, registers one more element. Every
   * registered name is registered again after a reconnect.
   */
  (name: string): void;
  /** Closes the socket (code 1000); no reconnect until wsInit('name') is called again. */
  (close: 0): void;
  /** Called on every state change. */
  onstate?: ((state: WsState) => void) | null;
  /** Called with every server frame, after ws.js has handled it. */
  onframe?: ((frame: ServerFrame) => void) | null;
  /** When true, `ws exec` reaches wsExpose'd functions only, never a function on window. */
  exposedOnly?: boolean;
  /**
   * Where the daemon is, as a path or URL (`'/status/'`): the socket is
   * this plus `ws`. A module or bundle served under a base path sets it
   * before the first `wsInit(name)`; without it, the module uses this
   * host's `/ws` (a script tag finds the socket beside ws.js).
   */
  base?: string | null;
}

/** Connects and registers an element, or closes with `wsInit(0)`. */
export declare const wsInit: WsInit;

/** Sends one command line (`run build`); false when the socket is not open. */
export declare function wsSend(line: string): boolean;

/** The connection's state now. */
export declare function wsState(): WsState;

/** A snapshot: state, index, names, attempts, retryIn, lastClose. */
export declare function wsInfo(): WsInfo;

/** `text` as one double-quoted token of a command line: `wsSend('run greet ' + wsQuote(name))`. */
export declare function wsQuote(text: string | number | boolean): string;

/**
 * Lets `ws exec TARGET name ARG` call `fn(ARG)`. `fn` must be a function the
 * page wrote: a built-in, a bound function, a Proxy or a ws.js function
 * throws a TypeError. `wsExpose(name, null)` takes it back.
 */
export declare function wsExpose(name: string, fn: ExposedFunction | null): void;
