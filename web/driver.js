// The engine module's driver: it instantiates wick.wasm (the GOOS=wasip1
// reactor of wasm/module), drives its status loop (wasm/ABI.md) and keeps
// each chat's session saved. The browser's worker (worker.js) and the Node
// host on Dawn (node/host.mjs) both run this one loop; each gives it only
// adapters for what differs between them:
//
//   compile()                        -> WebAssembly.Module of wick.wasm
//   readFile(model, file, sha256?)   -> bytes of a model file (checked when sha256 is given)
//   openDevice({needBinding, profile, tier}) -> gpu.js openDevice's result (navigator.gpu)
//   openSaves()                      -> a saves store (saves.js's interface)
//   sha256(bytes)                    -> hex digest
//   onLog(fd, line)                  the module's stdout/stderr lines
//   yieldNow()                       lets queued messages (a cancel) in
//
// The driver's ops (load, open, turn, complete, bench, close, forget,
// saved) run one at a time: the module takes one call at a time. The module
// never blocks: at status 2 this loop awaits the GPU (readbacks, fills),
// which is also when a cancel gets through.

import { WASI } from './wasi.js';
import { GPUBridge, newCounters } from './gpu.js';
import { parseManifest, largestRowBytes } from './manifest.js';

const DONE = 0, TOKEN = 1, WAIT = 2, PROGRESS = 3, ERROR = -1;

// ModuleError is a call the module refused or failed (status -1): the
// instance is intact. A WebAssembly.RuntimeError (a trap) is not.
export class ModuleError extends Error {}

const utf8 = new TextDecoder();
const encode = (s) => new TextEncoder().encode(s);

const turnExports = { send: 'wick_send', regenerate: 'wick_regenerate', edit: 'wick_edit_last', complete: 'wick_complete', continue: 'wick_continue' };

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

export class Driver {
  constructor(adapters) {
    this.a = adapters;
    this.compiled = null;  // WebAssembly.Module, kept to re-instantiate after a trap
    this.engine = null;    // {exports, wasi, gpu, key, model, backend}; key {model, hash} names its saves
    this.saves = null;
    this.cancelRequested = false;
    this.counters = newCounters();
    this.exportCalls = 0;
    this.lastYield = 0;
    this.waits = []; // the statuses 2 of the turn in flight: {ms, readbacks, bytes} each
  }

  // cancel asks the reply in flight to stop at its next token.
  cancel() { this.cancelRequested = true; }

  #call(name, ...args) {
    this.exportCalls++;
    const key = `export:${name}`;
    this.counters[key] = (this.counters[key] || 0) + 1;
    const t0 = performance.now();
    try {
      return this.engine.exports[name](...args);
    } finally {
      this.counters.exportMs += performance.now() - t0;
    }
  }

  // #view returns the bytes an i64 ptr<<32|len result names, in the
  // module's memory: valid only until the next export call.
  #view(v) {
    const ptr = Number(BigInt.asUintN(64, v) >> 32n), len = Number(BigInt.asUintN(32, v));
    return new Uint8Array(this.engine.exports.memory.buffer, ptr, len);
  }

  #unpack(v) { return utf8.decode(this.#view(v)); }

  #put(bytes) {
    const ptr = this.#call('wick_buf', bytes.length);
    new Uint8Array(this.engine.exports.memory.buffer, ptr, bytes.length).set(bytes);
    return bytes.length;
  }

  async #maybeYield() {
    if (performance.now() - this.lastYield < 30) return;
    await this.a.yieldNow();
    this.lastYield = performance.now();
  }

  // #drive runs an export's status loop to its end and returns its output:
  // a copy of the bytes, or (text) the decoded string. onProgress gets the
  // prefill's progress ({prefill_done, prefill_total}) of a turn that asked
  // for it.
  async #drive(status, onToken, text = true, onProgress = null) {
    for (;;) {
      switch (status) {
        case DONE: {
          const out = this.#view(this.#call('wick_output'));
          return text ? utf8.decode(out) : out.slice();
        }
        case ERROR: throw new ModuleError(this.#unpack(this.#call('wick_error')));
        case TOKEN: {
          if (onToken) onToken(JSON.parse(this.#unpack(this.#call('wick_output'))));
          await this.#maybeYield();
          status = this.cancelRequested ? this.#call('wick_cancel') : this.#call('wick_resume', 0);
          break;
        }
        case PROGRESS: {
          if (onProgress) onProgress(JSON.parse(this.#unpack(this.#call('wick_output'))));
          await this.#maybeYield();
          status = this.cancelRequested ? this.#call('wick_cancel') : this.#call('wick_resume', 0);
          break;
        }
        case WAIT: {
          const t0 = performance.now();
          const done = await this.engine.gpu.settle();
          this.lastYield = performance.now();
          this.counters.settleMs += this.lastYield - t0;
          this.waits.push({ ms: this.lastYield - t0, readbacks: done.length, bytes: done.reduce((a, d) => a + (d.data ? d.data.length : 0), 0) });
          const e0 = this.counters.exportMs;
          for (const d of done) {
            const failed = d.error !== undefined;
            const n = this.#put(failed ? encode(d.error) : d.data);
            const st = this.#call('wick_mapped', d.req, n, failed ? 1 : 0);
            if (st !== DONE) throw new ModuleError(`deliver readback ${d.req}: ${this.#unpack(this.#call('wick_error'))}`);
          }
          // JS's copying alone: the calls into the module count as theirs.
          this.counters.deliverMs += performance.now() - this.lastYield - (this.counters.exportMs - e0);
          status = this.#call('wick_resume', this.engine.gpu.takeStatus());
          break;
        }
        default: throw new Error(`the module returned unknown status ${status}`);
      }
    }
  }

  // #run calls export name with input (a string or bytes) and args, and
  // drives it to its end.
  async #run(name, input, args, onToken, onProgress) {
    const n = this.#put(typeof input === 'string' ? encode(input) : input);
    return this.#drive(this.#call(name, ...args, n), onToken, true, onProgress);
  }

  async #runJSON(name, input, args, onToken, onProgress) { return JSON.parse(await this.#run(name, input, args, onToken, onProgress)); }

  // load instantiates the module for model `model` on backend 'webgpu',
  // 'cpu' or '' (webgpu where there is one). A kernel that this browser's
  // WebGPU cannot compile is no reason to fail: the model loads on the CPU
  // backend instead, and the result says why (gpuNote, compileFailure).
  // tier picks the kernels' tier (gpu.js TIERS; 'fallback' withholds every
  // optional feature, to test the portable kernels).
  // timestamps asks for timestamp queries without profiling every list
  // (profile does both): package bench's profile (wick_bench) uses them.
  // chunk, when given, is the most tokens one GPU step runs (the module's
  // default otherwise): benchmarks compare step lengths with it.
  // cacheBytes, when given, is the prefix cache's budget (negative: no
  // cache; the module's default otherwise): benchmarks weigh the cache's
  // snapshots with it.
  // flashFirst plans prefill attention's first variant rather than its
  // register one, the default (the module's webgpu.Options.FlashFirst),
  // flashTile the register one's keys per tile (FlashTile, 0 its default):
  // benchmarks compare them with these. prefillTile and prefillSplit choose the
  // prefill product's tile (Options.Tile, 0 its default) and split its
  // products of few rows (Options.Split): benchmarks compare them so.
  async load({ model, backend = '', profile = false, timestamps = false, tier = 'all', chunk = 0, cacheBytes = 0, flashFirst = false, flashTile = 0, prefillTile = 0, prefillSplit = false }) {
    const manifestBytes = await this.a.readFile(model, 'manifest.pb');
    const m = parseManifest(manifestBytes);
    const tokBytes = await this.a.readFile(model, m.tokenizer.file, m.tokenizer.sha256);
    const shardSums = new Map(m.shards.map((s) => [s.file, s.sha256]));

    let dev = null, gpuNote = '';
    if (backend !== 'cpu') {
      try {
        dev = await this.a.openDevice({ needBinding: largestRowBytes(m), profile: profile || timestamps, tier });
      } catch (e) {
        if (backend === 'webgpu') throw Object.assign(new Error(e.message), { kind: e.kind });
        gpuNote = e.message;
      }
    }
    const files = new Map([['manifest.pb', manifestBytes], [m.tokenizer.file, tokBytes]]);
    if (!dev) {
      // The CPU backend reads the weights itself, through the WASI files.
      for (const s of m.shards) files.set(s.file, await this.a.readFile(model, s.file, s.sha256));
    }
    this.close();
    if (!this.compiled) this.compiled = await this.a.compile();
    if (!this.saves) this.saves = await this.a.openSaves();
    this.counters = newCounters();
    const wasi = new WASI({ files, onOutput: (fd, line) => this.a.onLog(fd, line) });
    const gpu = new GPUBridge(dev, {
      counters: this.counters,
      profile,
      readShard: (file) => this.a.readFile(model, file, shardSums.get(file)),
    });
    const instance = await WebAssembly.instantiate(this.compiled, { wasi_snapshot_preview1: wasi.imports, wick_gpu: gpu.imports });
    gpu.memory = instance.exports.memory;
    wasi.start(instance);
    // Saves hold KV that only this exact model can use: they are kept under
    // its name and the sha256 of its manifest (which names every shard's
    // sha256), so a changed model never finds the old ones by accident.
    this.engine = { exports: instance.exports, wasi, gpu, key: { model, hash: await this.a.sha256(manifestBytes) }, model, backend: dev ? 'webgpu' : 'cpu' };
    const t0 = performance.now();
    let out;
    try {
      out = await this.#runJSON('wick_load', JSON.stringify({ dir: '/model', backend: dev ? 'webgpu' : 'cpu', chunk, cache_bytes: cacheBytes, flash_first: flashFirst, flash_tile: flashTile, prefill_tile: prefillTile, prefill_split: prefillSplit }), []);
    } catch (e) {
      const failure = gpu.compileFailures[0];
      if (!dev || !failure) throw e;
      // One plain sentence for the page; the compiler's words as details.
      const r = await this.load({ model, backend: 'cpu', tier });
      return { ...r, gpuNote: `This browser's WebGPU could not compile wick's ${failure.label} kernel, so the model runs on the CPU instead (slower).`, gpuDetails: `${failure.label}: ${failure.message}` };
    }
    return { ...out, key: `${model}@${this.engine.key.hash}`, saves: this.saves.kind, adapter: dev ? dev.name : '', gpuNote, loadMs: performance.now() - t0 };
  }

  // close drops the loaded instance and its device.
  close() {
    if (this.engine && this.engine.gpu.device) this.engine.gpu.device.destroy();
    this.engine = null;
  }

  // findSave returns the chat's save for the loaded model, else its newest
  // save of any other model (or another version of this one): wick_restore
  // then refuses that one's KV with a reason and recovers its messages.
  async #findSave(chat) {
    const key = this.engine.key;
    const bytes = await this.saves.read(key, chat);
    if (bytes) return { bytes, source: 'saved' };
    const others = (await this.saves.all()).filter((s) => s.chat === chat).sort((a, b) => b.modified - a.modified);
    for (const o of others) {
      const b = await this.saves.read(o, chat);
      if (b) return { bytes: b, source: `saved by ${o.model} (manifest ${o.hash.slice(0, 12)}…)` };
    }
    return null;
  }

  // open makes a session that holds chat's conversation: restored from its
  // save (KV included: the next turn prefills only its own tokens) where one
  // exists and the module accepts it, else built from messages (the page's
  // own copy, system prompt first), which the next turn prefills. A refused
  // save is reported (refused), never fatal: the chat goes on from its
  // messages, and the next turn's save replaces the bad file. postHistory,
  // when given, is the instructions the session puts before each reply
  // (a card's post_history_instructions).
  async open({ chat, messages, postHistory }) {
    const out = { session: 0, kv_tokens: 0, replayed: false, reason: '', refused: '', source: 'none', synced: false, bytes: 0, ms: 0 };
    const t0 = performance.now();
    let have = [];
    let restoredPost = '';
    let found = null;
    if (chat) {
      try {
        found = await this.#findSave(chat);
      } catch (e) {
        out.refused = `the saved session could not be read: ${e.message}`;
      }
    }
    if (found) {
      out.bytes = found.bytes.length;
      try {
        const r = await this.#runJSON('wick_restore', found.bytes, []);
        Object.assign(out, { session: r.session, kv_tokens: r.kv_tokens, replayed: r.replayed, reason: r.reason || '', source: found.source });
        have = r.messages || [];
        restoredPost = r.post_history || '';
      } catch (e) {
        if (!(e instanceof ModuleError)) throw e;
        out.refused = e.message;
      }
    }
    if (!out.session) out.session = (await this.#runJSON('wick_session', '', [])).session;
    // A save older than the page's chat (a save that failed, a tab closed
    // mid-write) or one of another card: the page's messages win, and the
    // session keeps the KV of the leading messages both share.
    const post = postHistory === undefined ? null : postHistory;
    if (messages && !sameMessages(have, messages)) {
      await this.#runJSON('wick_set_history', JSON.stringify({ messages, post_history: post }), [out.session]);
      out.synced = true;
    } else if (post !== null && post !== (restoredPost || '')) {
      // The instructions are no history: the messages' KV stays.
      await this.#runJSON('wick_set_history', JSON.stringify({ messages: have, post_history: post }), [out.session]);
    }
    out.ms = performance.now() - t0;
    return out;
  }

  #snapshot() { return { ...this.counters, exportCalls: this.exportCalls }; }

  // turn runs one turn of session (kind send, regenerate, edit, continue:
  // the last reply goes on, or complete: raw token ids) and then, when chat
  // is given, saves the session as chat's (handSave: returns the save's
  // bytes instead). onToken gets every token as it comes; onProgress, when
  // given, the prompt's reading ({prefill_done, prefill_total}). The reply
  // carries the boundary's traffic for benchmarks: the prefill (up to the
  // first token) and the decoding after it, kept apart.
  async turn({ session, chat, kind, turn: input, handSave = false }, onToken, onProgress) {
    const name = turnExports[kind];
    if (!name) throw new Error(`unknown turn kind ${kind}`);
    this.cancelRequested = false;
    const before = this.#snapshot();
    this.waits = [];
    const t0 = performance.now();
    let first = 0, n = 0, atFirst = null, waitsAtFirst = 0;
    const reply = await this.#runJSON(name, JSON.stringify(onProgress ? { ...input, progress: true } : input), [session], (tok) => {
      n++;
      if (!first) { first = performance.now(); atFirst = this.#snapshot(); waitsAtFirst = this.waits.length; }
      if (onToken) onToken(tok);
    }, onProgress);
    const t1 = performance.now();
    const now = this.#snapshot();
    const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - (b[k] || 0)]));
    reply.stats = {
      tokens: n, ms: t1 - t0, firstMs: first ? first - t0 : 0,
      decodeTokensPerSec: n > 1 ? (n - 1) / ((t1 - first) / 1000) : 0,
      prefill: atFirst ? diff(atFirst, before) : diff(now, before),
      decode: atFirst ? diff(now, atFirst) : null,
      // Each wait for the GPU up to the first token: one, for the last
      // prefill step's logits (the steps before it are not waited for;
      // the prefix cache's blocks of those steps come back with it, the
      // last step's own after the token).
      prefillWaits: this.waits.slice(0, atFirst ? waitsAtFirst : this.waits.length),
    };
    if (chat) reply.save = await this.#save(session, chat, handSave);
    return reply;
  }

  // #save writes session's save for chat, or with hand returns its bytes
  // (save.data) for the caller to write together with the chat's messages
  // (the page does, in one transaction). A failure is reported, not
  // thrown: the turn itself succeeded, and the page still holds the messages.
  async #save(session, chat, hand) {
    const t0 = performance.now();
    try {
      const bytes = await this.#drive(this.#call('wick_save', session), null, false);
      const t1 = performance.now();
      if (hand) return { bytes: bytes.length, saveMs: t1 - t0, data: bytes };
      await this.saves.write(this.engine.key, chat, bytes);
      return { bytes: bytes.length, saveMs: t1 - t0, writeMs: performance.now() - t1 };
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) throw e;
      return { error: `the chat could not be saved: ${e.message}` };
    }
  }

  // bench runs package bench inside the module on this host's GPU (the
  // same measurements as `wick bench` natively) and returns its tables.
  async bench(opts) { return this.#run('wick_bench', JSON.stringify(opts), []); }

  async closeSession({ session }) {
    const st = this.#call('wick_close', session);
    if (st !== DONE) throw new ModuleError(this.#unpack(this.#call('wick_error')));
    return {};
  }

  async forget({ chat }) {
    if (!this.saves) this.saves = await this.a.openSaves();
    await this.saves.remove(chat);
    return {};
  }

  async saved() {
    if (!this.engine) return [];
    const k = this.engine.key;
    return (await this.saves.all()).filter((s) => s.model === k.model && s.hash === k.hash);
  }

  // handle runs one op message ({op, ...}) and returns its result. A trap
  // leaves the instance unusable: it is dropped (fatal), and the caller
  // loads again. After any other failure the next op runs on the same
  // backend: the GPU bridge forgets the failed step's errors.
  async handle(msg, onToken, onProgress) {
    const ops = {
      load: () => this.load(msg),
      open: () => this.open(msg),
      turn: () => this.turn(msg, onToken, onProgress),
      bench: () => this.bench(msg.options || {}),
      close: () => this.closeSession(msg),
      forget: () => this.forget(msg),
      saved: () => this.saved(),
      fault: () => { this.engine.gpu.injectFault(msg.fault); return {}; },
    };
    const f = ops[msg.op];
    if (!f) throw new Error(`unknown op ${msg.op}`);
    if (!['load', 'forget', 'saved'].includes(msg.op) && !this.engine) throw new Error('no model is loaded');
    try {
      return await f();
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) {
        this.engine = null;
        throw Object.assign(e, { fatal: true });
      }
      const failure = this.engine && this.engine.backend === 'webgpu' && this.engine.gpu.compileFailures[0];
      if (failure && msg.op === 'turn') {
        // A kernel made on first use (sampling) that this WebGPU cannot
        // compile would fail every such turn: the model moves to the CPU
        // backend, and every session with it (the caller opens them again).
        await this.load({ model: this.engine.model, backend: 'cpu' });
        throw Object.assign(new Error(`This browser's WebGPU could not compile wick's ${failure.label} kernel, so the model now runs on the CPU (slower). Send the message again.`),
          { kind: 'moved-to-cpu', details: `${failure.label}: ${failure.message}\n\n${e.message}` });
      }
      throw e;
    }
  }
}
