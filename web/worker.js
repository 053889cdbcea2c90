// The engine's worker: it runs wick.wasm (the GOOS=wasip1 reactor of
// wasm/module) off the page's thread, drives its status loop (wasm/ABI.md),
// keeps each chat's session saved (saves.js) and talks to the page by
// messages:
//
//   page -> worker  {id, op: 'load', model, backend}          -> {id, result: loadInfo}
//                   {id, op: 'open', chat, messages}          -> {id, result: {session, kv_tokens, replayed, reason, refused, source}}
//                   {id, op: 'turn', session, chat, kind, turn, quiet}
//                                                             -> {id, token} ... then {id, result: reply}
//                   {id, op: 'close', session}                -> {id, result}
//                   {id, op: 'forget', chat}                  -> {id, result}: deletes the chat's saves
//                   {id, op: 'saved'}                         -> {id, result: [{chat, bytes, modified}]}: this model's saves
//                   {op: 'cancel'}                               stops the reply in flight
//   worker -> page  {id, error, fatal}                           when an op fails
//
// Ops run one at a time, in the order they came (the module takes one call
// at a time); only a cancel overtakes them. The module never blocks: at
// status 2 this loop awaits the GPU (readbacks, fills), which is also when
// the page's messages (a cancel) get through.

import { WASI } from './wasi.js';
import { GPUBridge, openDevice, newCounters } from './gpu.js';
import { parseManifest, largestTensorBytes } from './manifest.js';
import { readStored, sha256 } from './models.js';
import { openSaves } from './saves.js';

const DONE = 0, TOKEN = 1, WAIT = 2, ERROR = -1;

let compiled = null;   // WebAssembly.Module, kept to re-instantiate after a trap
let engine = null;     // {exports, wasi, gpu, key}; key {model, hash} names its saves
let saves = null;      // openSaves()
let cancelRequested = false;
let counters = newCounters();
let exportCalls = 0;

class ModuleError extends Error {}

const utf8 = new TextDecoder();

function exp() { return engine.exports; }

function call(name, ...args) {
  exportCalls++;
  const key = `export:${name}`;
  counters[key] = (counters[key] || 0) + 1;
  return exp()[name](...args);
}

// view returns the bytes an i64 ptr<<32|len result names, in the module's
// memory: valid only until the next export call.
function view(v) {
  const ptr = Number(BigInt.asUintN(64, v) >> 32n), len = Number(BigInt.asUintN(32, v));
  return new Uint8Array(exp().memory.buffer, ptr, len);
}

function unpack(v) { return utf8.decode(view(v)); }

function put(bytes) {
  const ptr = call('wick_buf', bytes.length);
  new Uint8Array(exp().memory.buffer, ptr, bytes.length).set(bytes);
  return bytes.length;
}

// yieldNow lets queued messages (a cancel) run; only needed where the loop
// would otherwise never await (the CPU backend).
let lastYield = 0;
async function maybeYield() {
  if (performance.now() - lastYield < 30) return;
  await new Promise((r) => { const ch = new MessageChannel(); ch.port1.onmessage = r; ch.port2.postMessage(0); });
  lastYield = performance.now();
}

// drive runs an export's status loop to its end and returns its output:
// a copy of the bytes, or (text) the decoded string.
async function drive(status, onToken, text = true) {
  for (;;) {
    switch (status) {
      case DONE: {
        const out = view(call('wick_output'));
        return text ? utf8.decode(out) : out.slice();
      }
      case ERROR: throw new ModuleError(unpack(call('wick_error')));
      case TOKEN: {
        if (onToken) onToken(JSON.parse(unpack(call('wick_output'))));
        await maybeYield();
        status = cancelRequested ? call('wick_cancel') : call('wick_resume');
        break;
      }
      case WAIT: {
        const done = await engine.gpu.settle();
        lastYield = performance.now();
        for (const d of done) {
          const failed = d.error !== undefined;
          const n = put(failed ? new TextEncoder().encode(d.error) : d.data);
          const st = call('wick_mapped', d.req, n, failed ? 1 : 0);
          if (st !== DONE) throw new ModuleError(`deliver readback ${d.req}: ${unpack(call('wick_error'))}`);
        }
        status = call('wick_resume');
        break;
      }
      default: throw new Error(`the module returned unknown status ${status}`);
    }
  }
}

// run calls export name with input (a string or bytes) and args, and
// drives it to its end.
async function run(name, input, args, onToken) {
  const n = put(typeof input === 'string' ? new TextEncoder().encode(input) : input);
  return drive(call(name, ...args, n), onToken);
}

async function runJSON(name, input, args, onToken) { return JSON.parse(await run(name, input, args, onToken)); }

// load instantiates the module for model `model` on backend 'webgpu',
// 'cpu' or '' (webgpu where there is one).
async function load({ model, backend }) {
  const manifestBytes = await readStored(model, 'manifest.pb');
  const m = parseManifest(manifestBytes);
  const tokBytes = await readStored(model, m.tokenizer.file, m.tokenizer.sha256);
  const files = new Map([['manifest.pb', manifestBytes], [m.tokenizer.file, tokBytes]]);
  const shardSums = new Map(m.shards.map((s) => [s.file, s.sha256]));

  let dev = null, gpuNote = '';
  if (backend !== 'cpu') {
    try {
      dev = await openDevice({ needBinding: largestTensorBytes(m) });
    } catch (e) {
      if (backend === 'webgpu') throw Object.assign(new Error(e.message), { kind: e.kind });
      gpuNote = e.message;
    }
  }
  if (!dev) {
    // The CPU backend reads the weights itself, through the WASI files.
    for (const s of m.shards) files.set(s.file, await readStored(model, s.file, s.sha256));
  }
  if (engine && engine.gpu.device) engine.gpu.device.destroy(); // the previous model's
  engine = null;
  if (!compiled) compiled = await WebAssembly.compileStreaming(fetch('wick.wasm'));
  if (!saves) saves = await openSaves();
  counters = newCounters();
  const wasi = new WASI({ files, onOutput: (fd, line) => postMessage({ log: line, fd }) });
  const gpu = new GPUBridge(dev, {
    counters,
    readShard: (file) => readStored(model, file, shardSums.get(file)),
  });
  const instance = await WebAssembly.instantiate(compiled, { wasi_snapshot_preview1: wasi.imports, wick_gpu: gpu.imports });
  gpu.memory = instance.exports.memory;
  wasi.start(instance);
  // Saves hold KV that only this exact model can use: they are kept under
  // its name and the sha256 of its manifest (which names every shard's
  // sha256), so a changed model never finds the old ones by accident.
  engine = { exports: instance.exports, wasi, gpu, key: { model, hash: await sha256(manifestBytes) } };
  const t0 = performance.now();
  const out = await runJSON('wick_load', JSON.stringify({ dir: '/model', backend: dev ? 'webgpu' : 'cpu' }), []);
  return { ...out, key: `${model}@${engine.key.hash}`, saves: saves.kind, adapter: dev ? dev.name : '', gpuNote, loadMs: performance.now() - t0 };
}

// sameMessages reports whether the session's messages (as wick_restore
// gives them) are the conversation the page wants: same roles and texts,
// and a reply's tokens where the page has them.
function sameMessages(have, want) {
  if (have.length !== want.length) return false;
  return have.every((h, i) => {
    const w = want[i];
    if (h.role !== w.role || h.content !== w.content) return false;
    const ht = h.tokens || [], wt = w.tokens || [];
    return ht.length === wt.length && ht.every((t, j) => t === wt[j]);
  });
}

// findSave returns the chat's save for the loaded model, else its newest
// save of any other model (or another version of this one): wick_restore
// then refuses that one's KV with a reason and recovers its messages.
async function findSave(chat) {
  const bytes = await saves.read(engine.key, chat);
  if (bytes) return { bytes, source: 'saved' };
  const others = (await saves.all()).filter((s) => s.chat === chat).sort((a, b) => b.modified - a.modified);
  for (const o of others) {
    const b = await saves.read(o, chat);
    if (b) return { bytes: b, source: `saved by ${o.model} (manifest ${o.hash.slice(0, 12)}…)` };
  }
  return null;
}

// open makes a session that holds chat's conversation: restored from its
// save (KV included: the next turn prefills only its own tokens) where one
// exists and the module accepts it, else built from messages (the page's
// own copy, system prompt first), which the next turn prefills. A refused
// save is reported (refused), never fatal: the chat goes on from its
// messages, and the next turn's save replaces the bad file.
async function open({ chat, messages }) {
  const out = { session: 0, kv_tokens: 0, replayed: false, reason: '', refused: '', source: 'none', synced: false, bytes: 0, ms: 0 };
  const t0 = performance.now();
  let have = [];
  let found = null;
  try {
    found = await findSave(chat);
  } catch (e) {
    out.refused = `the saved session could not be read: ${e.message}`;
  }
  if (found) {
    out.bytes = found.bytes.length;
    try {
      const r = await runJSON('wick_restore', found.bytes, []);
      Object.assign(out, { session: r.session, kv_tokens: r.kv_tokens, replayed: r.replayed, reason: r.reason || '', source: found.source });
      have = r.messages || [];
    } catch (e) {
      if (!(e instanceof ModuleError)) throw e;
      out.refused = e.message;
    }
  }
  if (!out.session) out.session = (await runJSON('wick_session', '', [])).session;
  // A save older than the page's chat (a save that failed, a tab closed
  // mid-write) or one of another card: the page's messages win, and the
  // session keeps the KV of the leading messages both share.
  if (!sameMessages(have, messages)) {
    await runJSON('wick_set_history', JSON.stringify({ messages }), [out.session]);
    out.synced = true;
  }
  out.ms = performance.now() - t0;
  return out;
}

const turnExports = { send: 'wick_send', regenerate: 'wick_regenerate', edit: 'wick_edit_last' };

// turn runs one turn of session (kind send, regenerate or edit) and then
// saves the session as chat's.
async function turn({ id, session, chat, kind, turn: input, quiet }) {
  const name = turnExports[kind];
  if (!name) throw new Error(`unknown turn kind ${kind}`);
  cancelRequested = false;
  const before = { ...counters, exportCalls };
  const t0 = performance.now();
  let first = 0, n = 0, atFirst = null;
  const reply = await runJSON(name, JSON.stringify(input), [session], (tok) => {
    n++;
    if (!first) { first = performance.now(); atFirst = { ...counters, exportCalls }; }
    if (!quiet) postMessage({ id, token: tok });
  });
  const t1 = performance.now();
  const now = { ...counters, exportCalls };
  const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - (b[k] || 0)]));
  // Boundary traffic for the benchmark: the prefill (up to the first
  // token) and the decoding of the tokens after it, kept apart.
  reply.stats = {
    tokens: n, ms: t1 - t0, firstMs: first ? first - t0 : 0,
    decodeTokensPerSec: n > 1 ? (n - 1) / ((t1 - first) / 1000) : 0,
    prefill: atFirst ? diff(atFirst, before) : diff(now, before),
    decode: atFirst ? diff(now, atFirst) : null,
  };
  if (chat) reply.save = await save(session, chat);
  return reply;
}

// save writes session's save for chat; a failure is reported, not thrown:
// the turn itself succeeded, and the page still holds the messages.
async function save(session, chat) {
  const t0 = performance.now();
  try {
    const bytes = await drive(call('wick_save', session), null, false);
    const t1 = performance.now();
    await saves.write(engine.key, chat, bytes);
    return { bytes: bytes.length, saveMs: t1 - t0, writeMs: performance.now() - t1 };
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    return { error: `the chat could not be saved: ${e.message}` };
  }
}

const handlers = {
  load,
  open,
  turn,
  async close({ session }) {
    const st = call('wick_close', session);
    if (st !== DONE) throw new ModuleError(unpack(call('wick_error')));
    return {};
  },
  async forget({ chat }) {
    if (!saves) saves = await openSaves();
    await saves.remove(chat);
    return {};
  },
  async saved() {
    if (!engine) return [];
    return (await saves.all()).filter((s) => s.model === engine.key.model && s.hash === engine.key.hash);
  },
};

const noEngine = new Set(['load', 'forget', 'saved']);

async function handle(msg) {
  const h = handlers[msg.op];
  try {
    if (!h) throw new Error(`unknown op ${msg.op}`);
    if (!noEngine.has(msg.op) && !engine) throw new Error('no model is loaded');
    postMessage({ id: msg.id, result: await h(msg) });
  } catch (e) {
    // A trap leaves the instance unusable: drop it; the page loads again.
    const fatal = e instanceof WebAssembly.RuntimeError;
    if (fatal) engine = null;
    postMessage({ id: msg.id, error: e.message || String(e), kind: e.kind || '', fatal });
  }
}

let queue = Promise.resolve();

onmessage = (ev) => {
  const msg = ev.data;
  if (msg.op === 'cancel') { cancelRequested = true; return; }
  queue = queue.then(() => handle(msg));
};
