// The page script of csp.html: a file, since the policy allows no inline script.
'use strict';
window.calls = [];
window.record = function (arg) { window.calls.push(arg); };
window.drops = [];
wsInit.onstate = function (state) {
  var last = wsInfo().lastClose;
  if (state === 'connecting' && last) window.drops.push(last.code);
};
