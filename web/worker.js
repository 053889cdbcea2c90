// The engine's worker: it runs web/driver.js (the module's status loop,
// shared with the Node host) with the browser's adapters (models.js for
// model files, saves.js's IndexedDB for saves, navigator.gpu), off the
// page's thread, and talks to the page by messages:
//
//   page -> worker  {id, op: 'load', model, backend, tier}    -> {id, result: loadInfo}
//                   {id, op: 'open', chat, messages, postHistory}
//                                                             -> {id, result: {session, kv_tokens, replayed, reason, refused, source}}
//                   {id, op: 'turn', session, chat, kind, turn, quiet, handSave}
//                                                             -> {id, progress} ... {id, token} ... then {id, result: reply}
//                                                                (progress: {prefill_done, prefill_total} while the
//                                                                prompt is read; kind 'continue' extends the last reply)
//                                                                (handSave: reply.save.data is the save's
//                                                                bytes, for the page to write with the chat)
//                   {id, op: 'close', session}                -> {id, result}
//                   {id, op: 'forget', chat}                  -> {id, result}: deletes the chat's saves
//                   {id, op: 'saved'}                         -> {id, result: [{chat, bytes, modified}]}: this model's saves
//                   {id, op: 'fault', fault: 'validation'}    -> {id, result}: the next GPU step fails validation (tests)
//                   {op: 'cancel'}                               stops the reply in flight
//   worker -> page  {id, error, kind, details, fatal}            when an op fails (kind 'moved-to-cpu':
//                                                                the model now runs on the CPU; open the chat again)
//
// Ops run one at a time, in the order they came; only a cancel overtakes
// them (it gets through while the driver awaits the GPU or yields).

import { Driver } from './driver.js';
import { openDevice } from './gpu.js';
import { readStored, sha256 } from './models.js';
import { openSaves } from './saves.js';

const driver = new Driver({
  compile: () => WebAssembly.compileStreaming(fetch('wick.wasm')),
  readFile: readStored,
  openDevice,
  openSaves,
  sha256,
  onLog: (fd, line) => postMessage({ log: line, fd }),
  // A message round trip through a MessageChannel lets queued messages (a
  // cancel) run; needed where the loop would otherwise never await (the
  // CPU backend).
  yieldNow: () => new Promise((r) => { const ch = new MessageChannel(); ch.port1.onmessage = r; ch.port2.postMessage(0); }),
});

async function handle(msg) {
  try {
    const onToken = msg.quiet ? null : (tok) => postMessage({ id: msg.id, token: tok });
    const onProgress = msg.quiet ? null : (progress) => postMessage({ id: msg.id, progress });
    const result = await driver.handle(msg, onToken, onProgress);
    // A save handed to the page moves there without a copy.
    const moved = result && result.save && result.save.data ? [result.save.data.buffer] : [];
    postMessage({ id: msg.id, result }, moved);
  } catch (e) {
    postMessage({ id: msg.id, error: e.message || String(e), kind: e.kind || '', details: e.details || '', fatal: !!e.fatal });
  }
}

let queue = Promise.resolve();

onmessage = (ev) => {
  const msg = ev.data;
  if (msg.op === 'cancel') { driver.cancel(); return; }
  queue = queue.then(() => handle(msg));
};
