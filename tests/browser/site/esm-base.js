// The application module of esm-base.html: ws.js from the package, told
// where the daemon is, as an application served under a base path does.
import { wsInfo, wsInit, wsState } from 'pagewire';

window.client = { wsInfo, wsState };
// Beside this page: /status/ on a daemon with base_path = "/status".
wsInit.base = new URL('./', location.href).pathname;
wsInit('status');
