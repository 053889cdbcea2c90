// The wick_gpu imports (wasm/ABI.md) on navigator.gpu: the browser's side of
// the engine's GPU boundary. wasm/host/gpu.go is the same contract in Go.
//
// Imports are synchronous, WebGPU's answers are not, so everything that
// completes later (readbacks, fills from the Cache API, WGSL compile results,
// validation errors) is collected and finished in settle(), which the worker
// awaits whenever the module returns status 2; takeStatus() then gives the
// asynchronous failures, which the driver hands to wick_resume (the module
// makes no crossing to ask for them). Every import catches its own
// exceptions and returns -1: a JS exception must never unwind through Go.

const USAGE_STORAGE = 1, USAGE_UNIFORM = 2, USAGE_MAP_READ = 4;
const OP_WRITE = 1, OP_DISPATCH = 2, OP_COPY = 3;
const SPLIT_DISPATCHES = 64; // engine/gpu.SplitDispatches

const unsigned = (v) => (typeof v === 'number' ? v >>> 0 : v);

// ErrorText turns a thrown value into one line for last_error.
const errorText = (e) => (e && e.message) ? e.message : String(e);

// Tiers of kernels a device may be opened for: 'all' asks for every
// optional feature wick's kernels can use where the adapter has it;
// 'fallback' asks for none and reports none, so that the portable kernels
// (what a browser without those features runs) can be tested on any
// adapter.
export const TIERS = ['all', 'fallback'];

// Features the 'all' tier requests where the adapter offers them. The
// chromium-experimental-* ones appear only where the browser (or the Node
// host's -experimental) shows experimental features.
const KERNEL_FEATURES = [
  'subgroups',
  'subgroup-size-control',
  'chromium-experimental-subgroup-size-control',
  'chromium-experimental-subgroup-matrix',
];

// openDevice asks for an adapter and a device with the limits the model
// needs and the features of tier (TIERS). It throws an Error whose message
// says in plain words what is missing; err.kind is 'no-webgpu',
// 'no-adapter' or 'too-small'. With profile, the device also gets
// 'timestamp-query' where the adapter has it, for GPUBridge's per-kernel
// times, on either tier: it changes no kernel. The result's info is
// gpu.Info (engine/gpu/gpu.go), as the info import hands it to the module.
export async function openDevice({ needBinding = 0, profile = false, tier = 'all' } = {}) {
  const fail = (kind, msg) => Object.assign(new Error(msg), { kind });
  if (!TIERS.includes(tier)) throw fail('bad-tier', `unknown kernel tier ${JSON.stringify(tier)} (want ${TIERS.join(' or ')})`);
  if (!('gpu' in navigator) || !navigator.gpu) {
    throw fail('no-webgpu', 'This browser does not offer WebGPU (navigator.gpu is missing). ' +
      'Use a browser with WebGPU enabled, or run the model on the CPU: slow, but it works.');
  }
  let adapter = null;
  try { adapter = await navigator.gpu.requestAdapter(); } catch (e) { /* reported below */ }
  if (!adapter) {
    throw fail('no-adapter', 'WebGPU is present but found no usable GPU adapter (it may be disabled or blocklisted). ' +
      'You can run the model on the CPU instead: slow, but it works.');
  }
  const al = adapter.limits;
  if (needBinding > al.maxStorageBufferBindingSize || needBinding > al.maxBufferSize) {
    const mib = (n) => (n < 1048576 ? `${(n / 1024).toFixed(0)} KiB` : `${(n / 1048576).toFixed(0)} MiB`);
    throw fail('too-small', `This GPU cannot hold the model: its widest tensor row needs ${mib(needBinding)} in one buffer, ` +
      `the adapter allows ${mib(Math.min(al.maxStorageBufferBindingSize, al.maxBufferSize))}. Pick a smaller model or use the CPU.`);
  }
  // The engine sizes its buffers (stacked weights, the KV arena) from the
  // limits the device reports through info, so ask for the adapter's
  // largest binding and buffer rather than guess; everything else keeps
  // WebGPU's defaults, as the native device does.
  const requiredLimits = {
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxBufferSize: al.maxBufferSize,
  };
  const requiredFeatures = [];
  const offer = (f) => { if (adapter.features.has(f)) requiredFeatures.push(f); };
  if (tier === 'all') KERNEL_FEATURES.forEach(offer);
  if (profile) offer('timestamp-query');
  let device;
  try {
    device = await adapter.requestDevice({ label: 'wick', requiredLimits, requiredFeatures });
  } catch (e) {
    throw fail('no-adapter', `The GPU adapter refused a device with maxStorageBufferBindingSize ${requiredLimits.maxStorageBufferBindingSize} ` +
      `and features [${requiredFeatures.join(', ')}]: ${errorText(e)}`);
  }
  const ai = adapter.info || {};
  const fallbackAdapter = !!(ai.isFallbackAdapter || adapter.isFallbackAdapter);
  const name = ([ai.vendor, ai.architecture, ai.device, ai.description].filter(Boolean).join(' ') || 'WebGPU adapter') +
    (fallbackAdapter ? ' (fallback)' : '');
  // Features are what the device was created with: what its kernels may
  // use. 'core-features-and-limits' only says the device is not in
  // compatibility mode; every device wick opens is, so it is left out.
  const features = [...device.features].filter((f) => f !== 'core-features-and-limits').sort();
  const subgroups = device.features.has('subgroups');
  const info = {
    adapter: name,
    limits: { maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize, maxBufferSize: device.limits.maxBufferSize },
    software: fallbackAdapter,
    features,
    // WGSL language features cannot be withheld from the compiler, only
    // from the kernels' choice: the fallback tier reports none.
    wgsl: tier === 'all' ? [...(navigator.gpu.wgslLanguageFeatures || [])].sort() : [],
    subgroupMinSize: subgroups ? ai.subgroupMinSize || 0 : 0,
    subgroupMaxSize: subgroups ? ai.subgroupMaxSize || 0 : 0,
    // Dawn names them GPUAdapterInfo.subgroupMatrixConfigs: {componentType,
    // resultComponentType, M, N, K}, the types as WGSL names them.
    subgroupMatrix: device.features.has('chromium-experimental-subgroup-matrix')
      ? (ai.subgroupMatrixConfigs || []).map((c) => ({ M: c.M, N: c.N, K: c.K, component: c.componentType, result: c.resultComponentType }))
      : [],
  };
  return { adapter, device, name, info };
}

// Counters count the boundary's traffic, for the per-token benchmark:
// totals, and per import ("import:run") and per export ("export:wick_resume")
// counts, which the worker adds.
export function newCounters() {
  // writeMs and submitMs: the parts of runMs spent on the lists' writes
  // and in finish+submit (Dawn's translation of the commands for the GPU,
  // which Chrome does in its GPU process, the Node host on the JS thread).
  // The rest say where a turn's time goes (the bench's phases): exportMs
  // in calls into the module (importMs of it back out in these imports),
  // settleMs awaiting the GPU at status 2 (its work, then the readbacks'
  // mapping), deliverMs JS copying the readbacks' bytes in; maps and mapBytes
  // are the readbacks, copies the buffer copies of the command lists.
  return {
    imports: 0, gpuCalls: 0, runs: 0, runMs: 0, commands: 0, writeMs: 0, submitMs: 0,
    exportMs: 0, importMs: 0, settleMs: 0, deliverMs: 0, maps: 0, mapBytes: 0, copies: 0,
  };
}

// GPUBridge implements the wick_gpu imports for one module instance.
export class GPUBridge {
  // dev is openDevice's result or null (then info reports no adapter);
  // readShard(file) resolves to the shard's bytes, already checked.
  // With profile (and a device with 'timestamp-query'), every dispatch
  // gets its own compute pass with timestamps, and profileTimes() sums the
  // GPU time by kernel: slower, for benchmarks only.
  constructor(dev, { readShard, counters = newCounters(), profile = false }) {
    this.dev = dev;
    this.device = dev ? dev.device : null;
    this.readShard = readShard;
    this.counters = counters;
    this.memory = null;
    this.objects = [null]; // handle -> {kind, obj, ...}; 0 is never valid
    this.lastError = '';
    this.asyncErrors = [];
    this.pending = [];     // promises settle() awaits
    this.fills = [];       // fills to do in settle()
    this.mapped = [];      // finished readbacks: {req, data} or {req, error}
    this.edges = new Map(); // buffer handle -> Map(word offset -> Uint8Array(4)): partial words of unaligned fills
    this.compileFailures = []; // {label, message}: kernels this WebGPU's compiler refused
    this.fault = '';       // a fault to inject into the next command list (tests: injectFault)
    // Timestamp queries, where the device has them: {querySet, capacity},
    // made on first use, for run_timed and the profile.
    this.queries = null;
    this.staging = []; // {obj, size, ready}: mapped buffers for a list's writes (#stageWrites)
    // The page's profile: every list timed, GPU time summed by kernel label.
    this.timing = profile && this.device && this.device.features.has('timestamp-query') ? { byLabel: new Map() } : null;
    if (this.device) {
      this.device.addEventListener('uncapturederror', (ev) => this.asyncErrors.push(`WebGPU: ${ev.error.message}`));
      this.device.lost.then((info) => {
        if (info.reason !== 'destroyed') this.asyncErrors.push(`the GPU device was lost (${info.message}); reload the page`);
      });
    }
    this.imports = this.#bind();
  }

  bytes(ptr, len) { return new Uint8Array(this.memory.buffer, ptr, len); }
  string(ptr, len) { return len ? new TextDecoder().decode(this.bytes(ptr, len).slice()) : ''; }

  #add(kind, obj, extra = {}) {
    this.objects.push({ kind, obj, ...extra });
    return this.objects.length - 1;
  }

  #get(kind, h) {
    const o = this.objects[h];
    if (!o || o.kind !== kind) throw new Error(`no ${kind} ${h}`);
    return o;
  }

  // #scope wraps a create call in a validation error scope and collects
  // its message later: browsers report these only asynchronously.
  #scope(what, f) {
    this.device.pushErrorScope('validation');
    let result;
    try { result = f(); } finally {
      this.pending.push(this.device.popErrorScope().then((err) => {
        if (err) this.asyncErrors.push(`${what}: ${err.message}`);
      }));
    }
    return result;
  }

  #bind() {
    const c = this.counters;
    const imp = {
      info: (ptr, cap) => {
        if (!this.device) return -1;
        const json = new TextEncoder().encode(JSON.stringify(this.dev.info));
        if (json.length <= cap) this.bytes(ptr, json.length).set(json);
        return json.length;
      },
      create_buffer: (size, usage, lp, ln) => {
        const label = this.string(lp, ln);
        let u;
        if (usage & USAGE_MAP_READ) u = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
        else {
          u = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
          if (usage & USAGE_STORAGE) u |= GPUBufferUsage.STORAGE;
          if (usage & USAGE_UNIFORM) u |= GPUBufferUsage.UNIFORM;
        }
        const n = Number(size);
        const lim = this.device.limits.maxBufferSize;
        if (n > lim) throw new Error(`buffer ${label} of ${n} bytes exceeds the device's maxBufferSize ${lim}`);
        c.gpuCalls++;
        const buf = this.#scope(`buffer ${label}`, () => this.device.createBuffer({ label, size: n, usage: u }));
        return this.#add('buffer', buf, { size: n });
      },
      write_buffer: (h, off, ptr, len) => {
        const b = this.#get('buffer', h);
        c.gpuCalls++;
        this.device.queue.writeBuffer(b.obj, Number(off), this.memory.buffer, ptr, len);
        return 0;
      },
      create_kernel: (wp, wn, ep, en, lp, ln) => {
        const code = this.string(wp, wn), entryPoint = this.string(ep, en), label = this.string(lp, ln);
        c.gpuCalls += 2;
        const module = this.device.createShaderModule({ label, code });
        // Two phases: the pipeline is usable at once, its errors come later.
        this.pending.push(module.getCompilationInfo().then((ci) => {
          const errs = ci.messages.filter((m) => m.type === 'error');
          if (errs.length) {
            const message = errs.map((m) => `${m.lineNum}:${m.linePos}: ${m.message}`).join('; ');
            this.compileFailures.push({ label, message });
            this.asyncErrors.push(`kernel ${label}: WGSL: ${message}`);
          }
        }));
        const pipeline = this.#scope(`kernel ${label}`, () => this.device.createComputePipeline({
          label, layout: 'auto', compute: { module, entryPoint },
        }));
        return this.#add('kernel', pipeline, { label, layout: pipeline.getBindGroupLayout(0) });
      },
      create_bind_group: (k, ptr, count) => {
        const kernel = this.#get('kernel', k);
        const v = new DataView(this.memory.buffer, ptr, count * 24);
        const entries = [];
        for (let i = 0; i < count; i++) {
          const o = i * 24;
          const b = this.#get('buffer', v.getUint32(o + 4, true));
          const offset = Number(v.getBigUint64(o + 8, true));
          const size = Number(v.getBigUint64(o + 16, true)) || b.size - offset;
          entries.push({ binding: v.getUint32(o, true), resource: { buffer: b.obj, offset, size } });
        }
        c.gpuCalls++;
        const g = this.#scope(`bind group for kernel ${kernel.label}`, () => this.device.createBindGroup({ layout: kernel.layout, entries }));
        return this.#add('group', g);
      },
      run: (ptr, len) => {
        const t0 = performance.now();
        // The list's errors are caught by its own scope and awaited with
        // the step (settle), so they fail this step and never surface,
        // through uncapturederror, in a later one.
        this.#scope('WebGPU', () => this.#run(ptr, len, this.timing ? 'profile' : null));
        c.runs++;
        c.runMs += performance.now() - t0;
        return 0;
      },
      // run_timed is run with timestamped passes: a pass per dispatch (by
      // 0) or the passes run makes (by 1); the timestamps come back as
      // readback req (engine/gpu.Timer).
      run_timed: (ptr, len, req, by) => {
        if (!this.device.features.has('timestamp-query')) throw new Error('the device was created without timestamp-query');
        const chunks = [];
        this.#scope('WebGPU', () => this.#run(ptr, len, chunks, by === 1));
        c.runs++;
        this.pending.push(Promise.all(chunks).then((parts) => {
          const n = parts.reduce((a, p) => a + p.length, 0);
          const all = new BigUint64Array(n);
          let at = 0;
          for (const p of parts) { all.set(p, at); at += p.length; }
          this.mapped.push({ req, data: new Uint8Array(all.buffer) });
        }, (e) => this.mapped.push({ req, error: errorText(e) })));
        return 0;
      },
      map: (h, off, size, req) => {
        const b = this.#get('buffer', h);
        const o = Number(off), n = Number(size);
        c.gpuCalls++;
        c.maps++;
        c.mapBytes += n;
        this.pending.push(b.obj.mapAsync(GPUMapMode.READ, o, n).then(() => {
          c.gpuCalls += 2;
          const data = new Uint8Array(b.obj.getMappedRange(o, n)).slice();
          b.obj.unmap();
          this.mapped.push({ req, data });
        }, (e) => this.mapped.push({ req, error: errorText(e) })));
        return 0;
      },
      fill: (h, off, sp, sn, shardOff, length) => {
        this.#get('buffer', h);
        const file = this.string(sp, sn);
        if (!/^shard-[0-9a-f]{64}\.bin$/.test(file)) throw new Error(`fill: ${JSON.stringify(file)} is not a shard file name`);
        this.fills.push({ h, off: Number(off), file, from: Number(shardOff), length: Number(length) });
        return 0;
      },
      free: (kind, h) => {
        const o = this.objects[h];
        if (!o) return;
        if (kind === 1 && o.kind === 'buffer') { o.obj.destroy(); this.edges.delete(h); }
        this.objects[h] = null;
      },
      last_error: (ptr, cap) => {
        const msg = new TextEncoder().encode(this.lastError);
        if (msg.length <= cap) this.bytes(ptr, msg.length).set(msg);
        return msg.length;
      },
    };
    for (const [name, f] of Object.entries(imp)) {
      const key = `import:${name}`;
      imp[name] = (...args) => {
        c.imports++;
        c[key] = (c[key] || 0) + 1;
        const t0 = performance.now();
        try {
          // Every i32 of this ABI is unsigned (pointers, lengths, handles),
          // but JS receives i32s signed: a pointer past 2 GiB of the
          // module's memory would arrive negative. i64s come as BigInt.
          const r = f(...args.map(unsigned));
          return r === undefined ? undefined : r;
        } catch (e) {
          this.lastError = `${name}: ${errorText(e)}`;
          return name === 'free' ? undefined : -1;
        } finally {
          c.importMs += performance.now() - t0;
        }
      };
    }
    return imp;
  }

  // #run replays one command list (engine/gpu/encoding.go) into command
  // buffers (one, unless it is long: see SPLIT_DISPATCHES): writes first,
  // then dispatches and copies in order, consecutive dispatches sharing a
  // compute pass. With times, each dispatch gets a pass of its own with
  // timestamps (each pass as run makes it, with byPass): times 'profile'
  // adds them to profileTimes(), an array receives a promise per submitted
  // part of the (begin, end) pairs.
  #run(ptr, len, times = null, byPass = false) {
    const c = this.counters;
    if (len % 4) throw new Error(`command list of ${len} bytes is not whole words`);
    const words = new Uint32Array(this.memory.buffer, ptr, len / 4);
    const q = this.device.queue, objs = this.objects;
    // The loop runs per command of every step, so it keeps its state in
    // locals that no closure captures (V8 keeps captured ones in a
    // context object) and counts into locals, added to the counters once.
    let enc = null, pass = null;
    // A pass keeps its pipeline and bind group between dispatches; setting
    // them only when they change saves WebGPU calls (each one is a call
    // into the browser's GPU process machinery).
    let pipeline = null, group = null;
    const queries = times ? this.#queries() : null;
    let timed = times ? { n: 0, labels: [] } : null;
    let calls = 0, commands = 0, submitMs = 0, writeMs = 0, copies = 0;
    // A list may hold a whole decode batch. Once SPLIT_DISPATCHES
    // dispatches have gathered, what is encoded is submitted before the
    // next compute pass begins, so the GPU runs a batch's first steps
    // while JS encodes the rest; the queue keeps the order (see
    // engine/gpu/encoding.go).
    let dispatches = 0;
    let i = 0;
    const staged = this.#stageWrites(words, ptr);
    if (staged) {
      enc = staged.enc;
      i = staged.next;
      commands += staged.writes;
    }
    const n = words.length;
    while (i < n) {
      const op = words[i];
      commands++;
      if (op === OP_DISPATCH) {
        if (enc !== null && dispatches >= SPLIT_DISPATCHES && (pass === null || (timed !== null && !byPass))) {
          if (pass !== null) { pass.end(); pass = null; pipeline = group = null; calls++; }
          if (timed !== null && timed.n) { this.#resolveTimes(enc, timed, times); timed = { n: 0, labels: [] }; }
          const ts = performance.now();
          q.submit([enc.finish()]);
          submitMs += performance.now() - ts;
          calls += 2;
          enc = null;
          dispatches = 0;
        }
        if (enc === null) { enc = this.device.createCommandEncoder(); calls++; }
        dispatches++;
        const kernel = objs[words[i + 1]], grp = objs[words[i + 2]];
        if (kernel == null || kernel.kind !== 'kernel') throw new Error(`no kernel ${words[i + 1]}`);
        if (grp == null || grp.kind !== 'group') throw new Error(`no group ${words[i + 2]}`);
        if (timed !== null && !byPass) {
          // One pass per dispatch, timestamps at its ends.
          if (pass !== null) { pass.end(); pass = null; pipeline = group = null; calls++; }
          if (timed.n + 2 > queries.capacity) throw new Error(`profile: a command list of more than ${queries.capacity / 2} dispatches`);
          pass = enc.beginComputePass({ timestampWrites: { querySet: queries.querySet, beginningOfPassWriteIndex: timed.n, endOfPassWriteIndex: timed.n + 1 } });
          timed.n += 2;
          timed.labels.push(kernel.label);
          calls++;
        }
        if (pass === null) {
          if (timed !== null) {
            // byPass: the pass as run makes it, timestamps at its ends.
            if (timed.n + 2 > queries.capacity) throw new Error(`profile: a command list of more than ${queries.capacity / 2} passes`);
            pass = enc.beginComputePass({ timestampWrites: { querySet: queries.querySet, beginningOfPassWriteIndex: timed.n, endOfPassWriteIndex: timed.n + 1 } });
            timed.n += 2;
            timed.labels.push('pass');
          } else {
            pass = enc.beginComputePass();
          }
          calls++;
        }
        const pl = kernel.obj, g = grp.obj;
        if (pl !== pipeline) { pass.setPipeline(pl); pipeline = pl; calls++; }
        if (g !== group) { pass.setBindGroup(0, g); group = g; calls++; }
        pass.dispatchWorkgroups(words[i + 3], words[i + 4], words[i + 5]);
        calls++;
        i += 6;
      } else if (op === OP_COPY) {
        if (enc === null) { enc = this.device.createCommandEncoder(); calls++; }
        if (pass !== null) { pass.end(); pass = null; pipeline = group = null; calls++; }
        enc.copyBufferToBuffer(this.#get('buffer', words[i + 1]).obj, words[i + 2],
          this.#get('buffer', words[i + 3]).obj, words[i + 4], words[i + 5]);
        calls++;
        copies++;
        i += 6;
      } else if (op === OP_WRITE) {
        // Writes #stageWrites did not take (no staging buffer was mapped).
        const b = this.#get('buffer', words[i + 1]);
        const len = words[i + 3];
        if (len % 4) throw new Error(`command list: write of ${len} bytes to buffer ${words[i + 1]} is not whole words`);
        const tw = performance.now();
        q.writeBuffer(b.obj, words[i + 2], this.memory.buffer, ptr + 4 * (i + 4), len);
        writeMs += performance.now() - tw;
        calls++;
        i += 4 + ((len + 3) >>> 2);
      } else {
        throw new Error(`command list: unknown opcode ${op} at word ${i}`);
      }
    }
    c.commands += commands;
    c.copies += copies;
    c.gpuCalls += calls;
    c.writeMs += writeMs;
    c.submitMs += submitMs;
    if (this.fault) {
      // A real validation error, for tests of recovery: a dispatch larger
      // than any device allows, in a pass of its own.
      const k = this.objects.find((o) => o && o.kind === 'kernel');
      const g = this.objects.find((o) => o && o.kind === 'group');
      this.fault = '';
      if (k && g) {
        if (!enc) enc = this.device.createCommandEncoder();
        if (pass) { pass.end(); pass = null; }
        const fp = enc.beginComputePass();
        fp.setPipeline(k.obj);
        fp.setBindGroup(0, g.obj);
        fp.dispatchWorkgroups(this.device.limits.maxComputeWorkgroupsPerDimension + 1);
        fp.end();
      }
    }
    if (enc) {
      if (pass) { pass.end(); c.gpuCalls++; }
      if (timed && timed.n) this.#resolveTimes(enc, timed, times);
      const ts = performance.now();
      q.submit([enc.finish()]);
      c.submitMs += performance.now() - ts;
      c.gpuCalls += 2;
    }
    if (staged) this.#restage(staged.buf);
  }

  // #stageWrites copies the writes at the head of a list (they all come
  // first) into one staging buffer that is already mapped, and records
  // their copies at the head of a new command encoder: the queue runs
  // them before the list's dispatches, as it would queue.writeBuffer's.
  // Dawn's writeBuffer takes a fresh staging allocation for the first write
  // after the GPU went idle (on lavapipe ~1.5 ms, most of a small list's
  // encoding); a few buffers kept mapped, and mapped again while the GPU
  // works, avoid that. Returns null (writeBuffer then) when no buffer is
  // mapped yet or the list has no writes.
  #stageWrites(words, ptr) {
    let bytes = 0, i = 0, writes = 0;
    while (i < words.length && words[i] === OP_WRITE) {
      const n = words[i + 3];
      if (n % 4) return null; // #run reports it
      bytes += n;
      writes++;
      i += 4 + (n >>> 2);
    }
    if (!bytes) return null;
    const ts = performance.now();
    const c = this.counters;
    let buf = this.staging.find((b) => b.ready && b.size >= bytes);
    if (!buf) {
      if (this.staging.filter((b) => b.size >= bytes).length >= 2) return null; // still mapping
      const size = Math.max(4096, 2 ** Math.ceil(Math.log2(bytes)));
      buf = { obj: this.device.createBuffer({ label: 'staging', size, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true }), size, ready: true };
      this.staging.push(buf);
      c.gpuCalls++;
    }
    const range = new Uint8Array(buf.obj.getMappedRange(0, bytes));
    const mem = new Uint8Array(this.memory.buffer);
    for (let j = 0, at = 0; j < i;) {
      const n = words[j + 3], from = ptr + 4 * (j + 4);
      range.set(mem.subarray(from, from + n), at);
      at += n;
      j += 4 + (n >>> 2);
    }
    buf.obj.unmap();
    buf.ready = false;
    const enc = this.device.createCommandEncoder();
    for (let j = 0, at = 0; j < i;) {
      const n = words[j + 3];
      enc.copyBufferToBuffer(buf.obj, at, this.#get('buffer', words[j + 1]).obj, words[j + 2], n);
      at += n;
      j += 4 + (n >>> 2);
    }
    c.gpuCalls += 4 + writes;
    c.writeMs += performance.now() - ts;
    return { enc, next: i, writes, buf };
  }

  // #restage maps a staging buffer again once the GPU has copied from it.
  // settle() does not wait for it: the map resolves only once the list
  // that copied from it has run, and a decode batch submitted ahead (see
  // engine.BatchPipeliner) must not be waited for with the batch before
  // it. #stageWrites takes a buffer once it is ready again.
  #restage(buf) {
    this.counters.gpuCalls++;
    buf.obj.mapAsync(GPUMapMode.WRITE).then(() => { buf.ready = true; }, () => {
      this.staging = this.staging.filter((b) => b !== buf);
    });
  }

  // takeStatus reports (once) what failed asynchronously since the last
  // call: 0, or -1 with the messages in last_error. The errors are then
  // forgotten, so the step after a failed one runs afresh.
  takeStatus() {
    if (!this.asyncErrors.length) return 0;
    this.lastError = this.asyncErrors.join('\n');
    this.asyncErrors = [];
    return -1;
  }

  // injectFault makes the next command list fail WebGPU's validation
  // (kind 'validation'): how tests check that a failed step leaves the
  // next one running on the GPU.
  injectFault(kind) {
    if (kind !== 'validation') throw new Error(`unknown fault ${kind}`);
    this.fault = kind;
  }

  // #queries returns the device's timestamp query set, made on first use.
  #queries() {
    if (!this.queries) {
      const capacity = 4096;
      this.queries = { querySet: this.device.createQuerySet({ type: 'timestamp', count: capacity }), capacity };
    }
    return this.queries;
  }

  // #resolveTimes copies a submitted part's timestamps out and, once they
  // are mapped, adds each dispatch's time to its kernel's sum (times
  // 'profile') or hands the (begin, end) pairs to times (an array of
  // promises, see #run).
  #resolveTimes(enc, timed, times) {
    const bytes = timed.n * 8;
    const resolve = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.resolveQuerySet(this.queries.querySet, 0, timed.n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, bytes);
    // The map starts after this list is submitted (a microtask runs once the
    // current call returns).
    const done = Promise.resolve().then(() => read.mapAsync(GPUMapMode.READ)).then(() => {
      const t = new BigUint64Array(read.getMappedRange()).slice();
      read.unmap();
      read.destroy();
      resolve.destroy();
      return t;
    });
    if (Array.isArray(times)) {
      times.push(done);
      return;
    }
    this.pending.push(done.then((t) => {
      timed.labels.forEach((label, j) => {
        const ns = t[2 * j + 1] > t[2 * j] ? Number(t[2 * j + 1] - t[2 * j]) : 0;
        const s = this.timing.byLabel.get(label) || { label, count: 0, ns: 0 };
        s.count++;
        s.ns += ns;
        this.timing.byLabel.set(label, s);
      });
    }));
  }

  // profileTimes returns the GPU time by kernel since the last reset,
  // largest first, and starts counting afresh.
  profileTimes() {
    if (!this.timing) return [];
    const out = [...this.timing.byLabel.values()].sort((a, b) => b.ns - a.ns);
    this.timing.byLabel = new Map();
    return out;
  }

  // settle finishes everything asynchronous the module asked for: fills
  // (grouped by shard, so each shard is read once), readbacks, and the
  // outcomes of create calls. It returns the readbacks to deliver.
  async settle() {
    const fills = this.fills;
    this.fills = [];
    const byShard = new Map();
    for (const f of fills) {
      if (!byShard.has(f.file)) byShard.set(f.file, []);
      byShard.get(f.file).push(f);
    }
    for (const [file, list] of byShard) {
      let data;
      try { data = await this.readShard(file); } catch (e) {
        this.asyncErrors.push(`fill from ${file}: ${errorText(e)}`);
        continue;
      }
      for (const f of list) {
        if (f.from + f.length > data.length) {
          this.asyncErrors.push(`fill from ${file}: bytes ${f.from}..${f.from + f.length} beyond its ${data.length}`);
          continue;
        }
        this.#fill(f.h, f.off, data.subarray(f.from, f.from + f.length));
      }
    }
    while (this.pending.length) {
      const p = this.pending;
      this.pending = [];
      await Promise.all(p);
    }
    const done = this.mapped;
    this.mapped = [];
    return done;
  }

  // #fill writes src into buffer h at off. writeBuffer takes only whole
  // words, so the partial words at either end are kept per buffer and
  // written whole: neighbouring fills complete them, and the bytes no fill
  // covers stay zero, as the buffer was created.
  #fill(h, off, src) {
    const b = this.#get('buffer', h);
    const q = this.device.queue;
    const start = (off + 3) & ~3, end = Math.max(start, (off + src.length) & ~3);
    if (end > start) {
      q.writeBuffer(b.obj, start, src, start - off, end - start);
      this.counters.gpuCalls++;
    }
    const partial = (lo, hi) => { // bytes [lo, hi) of the buffer, inside one word
      if (hi <= lo) return;
      const w = lo & ~3;
      let edges = this.edges.get(h);
      if (!edges) this.edges.set(h, edges = new Map());
      let word = edges.get(w);
      if (!word) edges.set(w, word = new Uint8Array(4));
      word.set(src.subarray(lo - off, hi - off), lo - w);
      q.writeBuffer(b.obj, w, word);
      this.counters.gpuCalls++;
    };
    if (end > start) {
      partial(off, start);
      partial(end, off + src.length);
    } else { // the fill lies within at most two words and no whole one
      partial(off, Math.min(off + src.length, (off & ~3) + 4));
      partial(Math.max(off, (off & ~3) + 4), off + src.length);
    }
  }
}
