// device.mjs serves one WebGPU device on Dawn (dawn.node: Chrome's WebGPU
// and its Tint compiler) to a Go process: engine/gpu/dawn's gpu.Device, so
// that Go tests run wick's kernels through the compiler and runtime Chrome
// uses. It is the page's own bridge (web/gpu.js: openDevice and GPUBridge,
// the wick_gpu imports of wasm/ABI.md) with a pipe in place of the wasm
// module: each request's bytes go into the bridge's memory and the import
// is called on them; where the module would return status 2 and wait, this
// awaits the bridge's settle().
//
//   node node/device.mjs [-tier all|fallback] [-experimental] [-timestamps] [-need BYTES]
//
// -timestamps also asks for 'timestamp-query' where the adapter has it, for
// op 10 (engine/gpu.Timer).
//
// Requests come on fd 3, replies go to fd 4 (stdout and stderr are left to
// Dawn's own notices). All integers are little-endian.
//
//   request: u32 length (of what follows), u32 op, operands
//   reply:   u32 length (of what follows), i32 code, payload
//
// The first reply comes unasked, once the device is open: code 0 and
// gpu.Info as JSON, or -1 and why there is no device (then the process
// ends). A negative code's payload is the error's message. Ops and their
// operands (bytes: the rest of the request):
//
//   1 create_buffer      i64 size, u32 usage, label bytes        -> handle
//   2 write_buffer       u32 buffer, i64 offset, data bytes      -> 0
//   3 create_kernel      u32 wgsl length, u32 entry length, wgsl, entry, label -> handle
//   4 create_bind_group  u32 kernel, entries (24 bytes each, as the import) -> handle
//   5 run                command list bytes                      -> 0
//   6 map                u32 buffer, i64 offset, i64 size, u32 req -> 0
//   7 poll               u32 wait -> 0; payload u32 error length, error,
//                        u32 count, count x (u32 req, u32 failed, u32 length, bytes)
//   8 free               u32 kind, u32 handle                    -> 0
//   9 close                                                      -> 0, then exit
//  10 run_timed          u32 req, u32 by, command list bytes     -> 0; the next poll
//                        delivers req's bytes: per dispatch (by 0) or compute
//                        pass (by 1) u64 begin, u64 end (ns)
//
// Create calls report their errors synchronously, as the native device
// does: the call settles the bridge (WGSL compile messages, validation
// scopes) before it replies, and a failed object is freed. Errors that
// surface meanwhile for earlier work (a run's validation) are kept for the
// next poll, which reports every asynchronous error since the last one.
// poll with wait returns once all submitted work is done and every map
// started before it has been delivered.

import { writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { parseArgs } from 'node:util';

import { openDevice, GPUBridge } from '../web/gpu.js';
import { installGPU } from './dawn.mjs';

const OP = { createBuffer: 1, writeBuffer: 2, createKernel: 3, createBindGroup: 4, run: 5, map: 6, poll: 7, free: 8, close: 9, runTimed: 10 };

const { values: v } = parseArgs({
  args: process.argv.slice(2).map((a) => (/^-[a-z]/.test(a) ? `-${a}` : a)),
  options: { tier: { type: 'string', default: 'all' }, experimental: { type: 'boolean', default: false }, need: { type: 'string', default: '0' }, timestamps: { type: 'boolean', default: false } },
});

const enc = new TextEncoder();

function reply(code, payload = new Uint8Array(0)) {
  const out = Buffer.alloc(8 + payload.length);
  out.writeUInt32LE(4 + payload.length, 0);
  out.writeInt32LE(code, 4);
  out.set(payload, 8);
  for (let off = 0; off < out.length;) off += writeSync(4, out, off);
}

const fail = (message) => reply(-1, enc.encode(message));

// frames yields each request's bytes (op and operands) from fd 3, and ends
// when the Go side closes it (or exits).
async function* frames() {
  let chunks = [], have = 0, need = -1;
  // A socket, not fs.createReadStream: a blocking read of fd 3 in libuv's
  // thread pool would hold process.exit until the Go side closed the pipe.
  for await (const chunk of new Socket({ fd: 3, readable: true, writable: false })) {
    chunks.push(chunk);
    have += chunk.length;
    for (;;) {
      if (need < 0 && have >= 4) {
        const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        chunks = [head];
        need = 4 + head.readUInt32LE(0);
      }
      if (need < 0 || have < need) break;
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      yield all.subarray(4, need);
      const rest = all.subarray(need);
      chunks = rest.length ? [rest] : [];
      have = rest.length;
      need = -1;
    }
  }
}

installGPU(v.experimental);
let dev;
try {
  dev = await openDevice({ needBinding: Number(v.need), tier: v.tier, profile: v.timestamps });
} catch (e) {
  fail(e.message);
  process.exit(1);
}
const bridge = new GPUBridge(dev, { readShard: async (file) => { throw new Error(`no shard ${file} here: this device takes writes only`); } });
bridge.memory = { buffer: new ArrayBuffer(1 << 20) };
const imp = bridge.imports;

// place copies the request's byte ranges into the bridge's memory, one
// after another at word boundaries, and returns their pointers.
function place(...parts) {
  let size = 0;
  for (const p of parts) size += (p.length + 3) & ~3;
  if (bridge.memory.buffer.byteLength < size) {
    let n = bridge.memory.buffer.byteLength;
    while (n < size) n *= 2;
    bridge.memory.buffer = new ArrayBuffer(n);
  }
  const mem = new Uint8Array(bridge.memory.buffer);
  const ptrs = [];
  let at = 0;
  for (const p of parts) {
    mem.set(p, at);
    ptrs.push(at);
    at += (p.length + 3) & ~3;
  }
  return ptrs;
}

let readbacks = []; // finished readbacks not yet handed over
let deferred = [];  // asynchronous errors of earlier work, for the next poll

async function settle() { readbacks.push(...await bridge.settle()); }
const takeError = () => (bridge.takeStatus() < 0 ? bridge.lastError : '');

// create runs one create import with its errors reported synchronously.
async function create(kind, call) {
  await settle();
  const earlier = takeError();
  if (earlier) deferred.push(earlier);
  const h = call();
  if (h < 0) return fail(bridge.lastError);
  await settle();
  const err = takeError();
  if (err) {
    imp.free(kind, h);
    return fail(err);
  }
  reply(h);
}

function pollReply() {
  readbacks.push(...bridge.mapped);
  bridge.mapped = [];
  const err = enc.encode([...deferred, takeError()].filter(Boolean).join('\n'));
  deferred = [];
  const list = readbacks.sort((a, b) => a.req - b.req);
  readbacks = [];
  const parts = list.map((r) => (r.error !== undefined ? enc.encode(r.error) : r.data));
  const out = Buffer.alloc(8 + err.length + parts.reduce((n, p) => n + 12 + p.length, 0));
  let at = 0;
  out.writeUInt32LE(err.length, at); at += 4;
  out.set(err, at); at += err.length;
  out.writeUInt32LE(list.length, at); at += 4;
  list.forEach((r, i) => {
    out.writeUInt32LE(r.req, at);
    out.writeUInt32LE(r.error !== undefined ? 1 : 0, at + 4);
    out.writeUInt32LE(parts[i].length, at + 8);
    out.set(parts[i], at + 12);
    at += 12 + parts[i].length;
  });
  reply(0, out);
}

async function serve(req) {
  const op = req.readUInt32LE(0);
  const body = req.subarray(4);
  switch (op) {
    case OP.createBuffer: {
      const [lp] = place(body.subarray(12));
      return create(1, () => imp.create_buffer(body.readBigInt64LE(0), body.readUInt32LE(8), lp, body.length - 12));
    }
    case OP.writeBuffer: {
      const [dp] = place(body.subarray(12));
      return imp.write_buffer(body.readUInt32LE(0), body.readBigInt64LE(4), dp, body.length - 12) < 0 ? fail(bridge.lastError) : reply(0);
    }
    case OP.createKernel: {
      const wn = body.readUInt32LE(0), en = body.readUInt32LE(4);
      const wgsl = body.subarray(8, 8 + wn), entry = body.subarray(8 + wn, 8 + wn + en), label = body.subarray(8 + wn + en);
      const [wp, ep, lp] = place(wgsl, entry, label);
      return create(2, () => imp.create_kernel(wp, wn, ep, en, lp, label.length));
    }
    case OP.createBindGroup: {
      const [ep] = place(body.subarray(4));
      return create(3, () => imp.create_bind_group(body.readUInt32LE(0), ep, (body.length - 4) / 24));
    }
    case OP.run: {
      const [cp] = place(body);
      return imp.run(cp, body.length) < 0 ? fail(bridge.lastError) : reply(0);
    }
    case OP.runTimed: {
      const [cp] = place(body.subarray(8));
      return imp.run_timed(cp, body.length - 8, body.readUInt32LE(0), body.readUInt32LE(4)) < 0 ? fail(bridge.lastError) : reply(0);
    }
    case OP.map:
      return imp.map(body.readUInt32LE(0), body.readBigInt64LE(4), body.readBigInt64LE(12), body.readUInt32LE(20)) < 0 ? fail(bridge.lastError) : reply(0);
    case OP.poll:
      if (body.readUInt32LE(0)) {
        await bridge.device.queue.onSubmittedWorkDone();
        await settle();
      } else {
        // One turn of the event loop lets Dawn deliver what has finished.
        await new Promise((r) => setImmediate(r));
      }
      return pollReply();
    case OP.free:
      imp.free(body.readUInt32LE(0), body.readUInt32LE(4));
      return reply(0);
    case OP.close:
      bridge.device.destroy();
      reply(0);
      process.exit(0);
    default:
      return fail(`device.mjs: unknown op ${op}`);
  }
}

reply(0, enc.encode(JSON.stringify(dev.info)));
for await (const req of frames()) {
  try {
    await serve(req);
  } catch (e) {
    fail(`device.mjs: ${e && e.message ? e.message : e}`);
  }
}
// The Go side is gone: dawn.node would keep the event loop alive.
process.exit(0);
