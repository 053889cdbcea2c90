// The import worker: converts a model the person picked from disk (a Hugging
// Face folder or a GGUF file) with the converter module, web/convert.wasm
// (wasm/convert: engine/convert, the same code as `wick convert`), and
// stores it as a downloaded model is stored (models.js), so that it is
// picked and chatted with like any other, without a server. The page starts
// this worker only for an import and ends it after, so the chat page never
// loads the converter (its module is larger than the chat module and
// holds the Jinja engine that compiles chat templates).
//
//   page -> worker  {op: 'import', files: [File], name, gguf, f32, avoid}
//                     files: a folder's files (its top level) or one .gguf;
//                     avoid: names the model must not take (the server's)
//                   {op: 'cancel'}        stops the conversion; nothing is kept
//   worker -> page  {progress: {tensors, total_tensors, bytes, total_bytes}}
//                   {result: {name, arch, notes, largest_read, input_bytes, start_ms, convert_ms}}
//                     (largest_read: the most bytes one read took from the files;
//                     start_ms: fetching and instantiating the module; convert_ms: the rest)
//                   {error: one sentence, details: the converter's words}
//
// The module reads the picked files through WASI (wasi.js): /in holds them
// as Blobs, and every read is one File.slice range (FileReaderSync), never a
// whole file. It writes the model into /out, held in memory one shard at a
// time: at each progress pause the worker stores the shards finished so far
// and drops their bytes. Nothing counts as stored until the manifest and
// the .complete marker are (openImport's commit); an error or a cancel
// deletes what was put. openImport holds the model's Web Lock until then,
// so that when this worker dies with its tab, the next start of the page
// sweeps what it put (models.js sweepIncomplete).

import { WASI, dirNode } from './wasi.js';
import { openImport } from './models.js';

const DONE = 0, PROGRESS = 3, ERROR = -1;
const SHARD = /^shard-[0-9a-f]{64}\.bin$/;

let cancelled = false;

// plain turns the converter's error into one sentence naming what is wrong
// with what the person picked; label is the folder's or the file's name.
function plain(msg, label) {
  const detail = msg.replace(/^convert \/in[^:]*: /, '').replaceAll('/in/', '').replace(/\.$/, '');
  let m;
  if (/past the end of the file|truncated|unexpected EOF/i.test(detail)) {
    return `${label} is incomplete: the file is cut short (truncated), so it cannot be imported.`;
  }
  if ((m = /unsupported architecture "([^"]+)" \(wick converts ([^)]+)\)/.exec(detail))) {
    return `${label} is a ${m[1]} model, a family wick cannot run yet (it imports ${m[2]}).`;
  }
  if ((m = /general\.architecture "([^"]+)" is not supported \(wick converts GGUF files of ([^)]+)\)/.exec(detail))) {
    return `${label} is a GGUF file of the ${m[1]} architecture, which wick cannot run yet (it imports GGUF files of ${m[2]}).`;
  }
  if (/^loading tokenizer /.test(detail)) {
    return `${label} has a tokenizer wick cannot read: ${detail.replace(/^loading tokenizer /, '')}.`;
  }
  if ((m = /(tokenizer\.ggml\.\w+ "[^"]*" is not supported.*)$/.exec(detail))) {
    return `${label} has a tokenizer wick cannot read: ${m[1]}.`;
  }
  if (/config\.json: .*no such file/i.test(detail)) {
    return `${label} has no config.json: pick the model's folder (config.json, *.safetensors and the tokenizer files) or a .gguf file.`;
  }
  return `${label} could not be imported: ${detail}.`;
}

// view reads a ptr<<32|len export result as a copy.
function view(x, v) {
  const p = Number(BigInt.asUintN(64, v) >> 32n), n = Number(BigInt.asUintN(32, v));
  return new Uint8Array(x.memory.buffer, p, n).slice();
}

async function convert({ files, name, gguf, f32, avoid }) {
  const label = gguf ? files[0].name : name;
  const inDir = dirNode(new Map(files.map((f) => [f.name, { blob: f }])));
  const outDir = dirNode(new Map(), true);
  const wasi = new WASI({
    preopens: [{ mount: '/in', node: inDir }, { mount: '/out', node: outDir }],
    onOutput: (fd, line) => console.log('[wick convert]', line),
  });
  const t0 = performance.now();
  const { instance } = await WebAssembly.instantiateStreaming(fetch(new URL('convert.wasm', import.meta.url)), { wasi_snapshot_preview1: wasi.imports });
  wasi.start(instance);
  const t1 = performance.now();
  const x = instance.exports;
  const sink = await openImport(name, avoid);
  const stored = new Set();
  // store puts the finished files (shards renamed to their hash names, or
  // all of them at the end) and frees their bytes.
  const store = async (all) => {
    for (const [file, node] of outDir.entries) {
      if (stored.has(file) || !node.chunks || file === 'manifest.pb' || !(all || SHARD.test(file))) continue;
      if (file.startsWith('.')) continue; // a temporary file of the writer
      stored.add(file);
      const blob = new Blob(node.chunks);
      node.chunks = [];
      await sink.put(file, blob);
    }
  };
  try {
    const input = new TextEncoder().encode(JSON.stringify({ in: gguf ? `/in/${files[0].name}` : '/in', out: '/out', name: sink.name, f32: !!f32 }));
    new Uint8Array(x.memory.buffer, x.wick_buf(input.length), input.length).set(input);
    let st = x.wick_convert(input.length);
    let yielded = performance.now();
    while (st === PROGRESS) {
      postMessage({ progress: JSON.parse(new TextDecoder().decode(view(x, x.wick_output()))) });
      await store(false);
      if (performance.now() - yielded > 100) {
        // Let queued messages (a cancel) in: a pause with nothing to store
        // awaits no task, and the conversion would not hear it.
        await new Promise((r) => setTimeout(r, 0));
        yielded = performance.now();
      }
      st = cancelled ? x.wick_cancel() : x.wick_resume(0);
    }
    if (st === ERROR) {
      const msg = new TextDecoder().decode(view(x, x.wick_error()));
      throw Object.assign(new Error(cancelled ? 'The import was cancelled; nothing was kept.' : plain(msg, label)), { details: msg });
    }
    if (st !== DONE) throw new Error(`the converter returned status ${st}`);
    const result = JSON.parse(new TextDecoder().decode(view(x, x.wick_output())));
    await store(true);
    const manifest = outDir.entries.get('manifest.pb');
    if (!manifest) throw new Error('the converter wrote no manifest');
    await sink.commit(new Uint8Array(await new Blob(manifest.chunks).arrayBuffer()));
    const inputBytes = files.reduce((a, f) => a + f.size, 0);
    return { ...result, name: sink.name, largest_read: wasi.largestRead, input_bytes: inputBytes, start_ms: t1 - t0, convert_ms: performance.now() - t1 };
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

onmessage = async (ev) => {
  const msg = ev.data;
  if (msg.op === 'cancel') { cancelled = true; return; }
  if (msg.op !== 'import') return;
  try {
    postMessage({ result: await convert(msg) });
  } catch (e) {
    postMessage({ error: e.message || String(e), details: e.details || '' });
  }
};
