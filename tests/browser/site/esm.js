// The application module of esm.html and esm-both.html: it imports ws.js
// from the package, as a bundled application would.
import { wsExpose, wsInfo, wsInit, wsState } from 'pagewire';

// On esm-both.html the classic /ws.js ran first: is its client the one
// the module got?
window.found = {
  classic: typeof window.wsInit === 'function',
  sameClient: window.wsInit === wsInit,
};
// What the tests call and look at (an object: `ws exec` calls functions only).
window.client = { wsInfo, wsState, wsExpose, wsInit };
window.calls = [];
window.frames = [];

wsExpose('record', function (arg) { window.calls.push(arg); });
wsInit.onframe = function (frame) { window.frames.push(frame.type); };
// A page moving off the script tag may put a ws.js function back on
// window for its older scripts; `ws exec` must still refuse it.
window.wsInit = wsInit;

wsInit('status');
