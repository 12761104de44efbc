// A small typed application of the pagewire package, as an app bundled with
// a bundler would write it. The tests compile it with `tsc --noEmit`
// against the packed package; each @ts-expect-error line is a mistake the
// types must refuse (tsc fails if one is accepted).
import { wsExpose, wsInfo, wsInit, wsQuote, wsSend, wsState } from 'pagewire';
import type { ServerFrame, WsInfo, WsState } from 'pagewire';

const meter = document.querySelector<HTMLMeterElement>('#level');
const log = document.querySelector<HTMLElement>('#log');

// `pagewire ws exec dashboard setLevel 42` calls this with "42".
wsExpose('setLevel', (arg) => {
  if (meter) meter.value = Number(arg);
});
// Only what the page hands to wsExpose is callable, never a function on window.
wsInit.exposedOnly = true;

wsInit.onstate = (state: WsState) => {
  document.body.dataset.connection = state;
};

wsInit.onframe = (frame: ServerFrame) => {
  switch (frame.type) {
    case 'hello':
      console.log(`connection ${frame.index}, protocol ${frame.version}`);
      break;
    case 'line':
      if (frame.stream === 'stderr') log?.classList.add('has-errors');
      break;
    case 'done': {
      const status: number | null = frame.status;
      log?.append(`${frame.action}: ${status === null ? frame.message : `exit ${status}`}`);
      break;
    }
    case 'error':
      console.warn(frame.message);
      break;
    default:
      // A newer daemon may send frames this version does not know.
      break;
  }
};

wsInit('dashboard');
wsInit('log');

export function deploy(build: string): boolean {
  return wsSend('run deploy ' + wsQuote(build));
}

export function describe(): string {
  const info: WsInfo = wsInfo();
  const closed = info.lastClose ? ` (last close ${info.lastClose.code} ${info.lastClose.reason})` : '';
  return `${wsState()} #${info.index ?? '-'} [${info.names.join(', ')}] retry in ${info.retryIn ?? '-'} ms${closed}`;
}

export function stop(): void {
  wsExpose('setLevel', null);
  wsInit(0);
}

// @ts-expect-error: an exposed function gets its argument as a string
wsExpose('double', (n: number) => n * 2);
// @ts-expect-error: wsInit takes an element id, or 0 to close
wsInit(7);
// @ts-expect-error: wsSend sends one command line, a string
wsSend(['run', 'deploy']);
wsInit.onframe = (frame) => {
  // @ts-expect-error: a write frame has no status
  if (frame.type === 'write') console.log(frame.status);
};
// @ts-expect-error: the state is one of three words
const unknownState: WsState = 'reconnecting';
