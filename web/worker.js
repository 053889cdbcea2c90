// The engine's worker: it runs wick.wasm (the GOOS=wasip1 reactor of
// wasm/module) off the page's thread, drives its status loop (wasm/ABI.md)
// and talks to the page by messages:
//
//   page -> worker  {id, op: 'load', model, backend}       -> {id, result: loadInfo}
//                   {id, op: 'session', system}            -> {id, result: {session}}
//                   {id, op: 'send', session, turn, quiet} -> {id, token} ... then {id, result: reply}
//                   {id, op: 'close', session}             -> {id, result}
//                   {op: 'cancel'}                            stops the reply in flight
//   worker -> page  {id, error, fatal}                        when an op fails
//
// The module never blocks: at status 2 this loop awaits the GPU (readbacks,
// fills), which is also when the page's messages (a cancel) get through.

import { WASI } from './wasi.js';
import { GPUBridge, openDevice, newCounters } from './gpu.js';
import { parseManifest, largestTensorBytes } from './manifest.js';
import { readStored } from './models.js';

const DONE = 0, TOKEN = 1, WAIT = 2, ERROR = -1;

let compiled = null;   // WebAssembly.Module, kept to re-instantiate after a trap
let engine = null;     // {exports, wasi, gpu}
let cancelRequested = false;
let counters = newCounters();
let exportCalls = 0;

class ModuleError extends Error {}

const utf8 = new TextDecoder();

function exp() { return engine.exports; }

function call(name, ...args) {
  exportCalls++;
  return exp()[name](...args);
}

function unpack(v) {
  const ptr = Number(BigInt.asUintN(64, v) >> 32n), len = Number(BigInt.asUintN(32, v));
  return utf8.decode(new Uint8Array(exp().memory.buffer, ptr, len).slice());
}

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

// drive runs an export's status loop to its end and returns its output.
async function drive(status, onToken) {
  for (;;) {
    switch (status) {
      case DONE: return unpack(call('wick_output'));
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

async function run(name, input, args, onToken) {
  const n = put(new TextEncoder().encode(input));
  return drive(call(name, ...args, n), onToken);
}

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
  counters = newCounters();
  const wasi = new WASI({ files, onOutput: (fd, line) => postMessage({ log: line, fd }) });
  const gpu = new GPUBridge(dev, {
    counters,
    readShard: (file) => readStored(model, file, shardSums.get(file)),
  });
  const instance = await WebAssembly.instantiate(compiled, { wasi_snapshot_preview1: wasi.imports, wick_gpu: gpu.imports });
  gpu.memory = instance.exports.memory;
  wasi.start(instance);
  engine = { exports: instance.exports, wasi, gpu };
  const t0 = performance.now();
  const out = JSON.parse(await run('wick_load', JSON.stringify({ dir: '/model', backend: dev ? 'webgpu' : 'cpu' }), []));
  return { ...out, adapter: dev ? dev.name : '', gpuNote, loadMs: performance.now() - t0 };
}

const handlers = {
  load,
  async session({ system }) { return JSON.parse(await run('wick_session', system || '', [])); },
  async close({ session }) {
    const st = call('wick_close', session);
    if (st !== DONE) throw new ModuleError(unpack(call('wick_error')));
    return {};
  },
  async send({ id, session, turn, quiet }) {
    cancelRequested = false;
    const before = { ...counters, exportCalls };
    const t0 = performance.now();
    let first = 0, n = 0, atFirst = null;
    const reply = JSON.parse(await run('wick_send', JSON.stringify(turn), [session], (tok) => {
      n++;
      if (!first) { first = performance.now(); atFirst = { ...counters, exportCalls }; }
      if (!quiet) postMessage({ id, token: tok });
    }));
    const t1 = performance.now();
    const now = { ...counters, exportCalls };
    const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - b[k]]));
    // Boundary traffic for the benchmark: the prefill (up to the first
    // token) and the decoding of the tokens after it, kept apart.
    reply.stats = {
      tokens: n, ms: t1 - t0, firstMs: first ? first - t0 : 0,
      decodeTokensPerSec: n > 1 ? (n - 1) / ((t1 - first) / 1000) : 0,
      prefill: atFirst ? diff(atFirst, before) : diff(now, before),
      decode: atFirst ? diff(now, atFirst) : null,
    };
    return reply;
  },
};

onmessage = async (ev) => {
  const msg = ev.data;
  if (msg.op === 'cancel') { cancelRequested = true; return; }
  const h = handlers[msg.op];
  try {
    if (!h) throw new Error(`unknown op ${msg.op}`);
    if (msg.op !== 'load' && !engine) throw new Error('no model is loaded');
    postMessage({ id: msg.id, result: await h(msg) });
  } catch (e) {
    // A trap leaves the instance unusable: drop it; the page loads again.
    const fatal = e instanceof WebAssembly.RuntimeError;
    if (fatal) engine = null;
    postMessage({ id: msg.id, error: e.message || String(e), kind: e.kind || '', fatal });
  }
};
