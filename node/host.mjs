// wick's Node host: the browser runtime (web/driver.js, web/gpu.js,
// web/wasi.js and the very web/wick.wasm the page loads) on Dawn, Chrome's
// WebGPU and its Tint compiler, through dawn.node (npm `webgpu`). It adds
// only adapters: navigator.gpu from dawn.node, model files from a
// directory, saves in memory. So what it measures and checks is what Chrome
// runs, minus the browser around it.
//
//   node node/host.mjs gen   -model DIR [-prompt TEXT | -ids 1,2,3] [-system TEXT]
//                            [-temp T -top-p P -top-k K -rep-penalty R -seed S -max-tokens N]
//                            [-backend webgpu|cpu] [-json] [-fault]
//   node node/host.mjs bench -model DIR [-decode N] [-prompt N] [-chunk N] [-runs N] [-cache-bytes N] [-profile [-temp T -top-p P]] [-kernels [-mib N] [-shapes 270m,1b] [-configs int8,...] [-plans none,norm+gated,...] [-row-attention]] [-flash-first | -flash-tile 32] [-prefill-tile 64|128 [-prefill-split]] [-page-sampling] [-decode-after N] [-warm S] [-gemv LIST] [-json FILE]
//   node node/host.mjs info [-tier all|fallback] [-experimental]
//
// Common flags: -experimental offers the adapter's chromium-experimental-*
// features (stock Chrome shows them only behind its unsafe-WebGPU flag);
// without it the host offers what stock Chrome offers. -tier fallback
// withholds every optional feature from the kernels (web/gpu.js TIERS), so
// the portable kernels run as on a browser without them; -tier all (the
// default) asks for every feature the kernels can use. -null-gpu runs on
// a WebGPU that does no work (nullgpu.mjs) instead of Dawn: the page's
// path with its host costs alone (bench's phases; its tokens mean nothing).

import { readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { Driver } from '../web/driver.js';
import { openDevice } from '../web/gpu.js';
import { installGPU } from './dawn.mjs';
import { installNullGPU } from './nullgpu.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const options = {
  model: { type: 'string' },
  prompt: { type: 'string' },
  ids: { type: 'string' },
  system: { type: 'string', default: '' },
  temp: { type: 'string', default: '0' },
  'top-p': { type: 'string', default: '1' },
  'top-k': { type: 'string', default: '0' },
  'rep-penalty': { type: 'string', default: '1' },
  seed: { type: 'string', default: '1' },
  'max-tokens': { type: 'string', default: '64' },
  backend: { type: 'string', default: 'webgpu' },
  json: { type: 'string' },
  decode: { type: 'string', default: '128' },
  chunk: { type: 'string', default: '0' },
  runs: { type: 'string', default: '5' },
  'cache-bytes': { type: 'string', default: '0' },
  mib: { type: 'string', default: '512' },
  shapes: { type: 'string', default: '' },
  configs: { type: 'string', default: '' },
  kernels: { type: 'boolean', default: false },
  profile: { type: 'boolean', default: false },
  fault: { type: 'boolean', default: false },
  plans: { type: 'string', default: '' },
  'row-attention': { type: 'boolean', default: false },
  'flash-first': { type: 'boolean', default: false },
  'flash-tile': { type: 'string', default: '0' },
  'page-sampling': { type: 'boolean', default: false },
  'decode-after': { type: 'string', default: '8' },
  warm: { type: 'string', default: '2' },
  gemv: { type: 'string' },
  'null-gpu': { type: 'boolean', default: false },
  'prefill-tile': { type: 'string', default: '0' },
  'prefill-split': { type: 'boolean', default: false },
  experimental: { type: 'boolean', default: false },
  tier: { type: 'string', default: 'all' },
  wasm: { type: 'string', default: path.join(root, 'web', 'wick.wasm') },
};

// Go-style single-dash flags (-model DIR) as the wick command takes them.
const argv = process.argv.slice(2).map((a) => (/^-[a-z]/.test(a) ? `-${a}` : a));
const cmd = argv.shift();

function usage(msg) {
  if (msg) process.stderr.write(`host: ${msg}\n`);
  process.stderr.write('usage: node node/host.mjs gen|bench|info -model DIR [flags] (see the comment at the top of node/host.mjs)\n');
  process.exit(2);
}

const sha256 = async (bytes) => createHash('sha256').update(bytes).digest('hex');

// newDriver gives the shared driver this host's adapters: a model is a
// directory path; saves live in memory for the process.
function newDriver(wasmPath) {
  const saves = new Map();
  const keyOf = (k, chat) => `${k.model}\0${k.hash}\0${chat}`;
  return new Driver({
    compile: async () => WebAssembly.compile(await readFile(wasmPath)),
    async readFile(dir, file, want) {
      const bytes = new Uint8Array(await readFile(path.join(dir, file)));
      if (want) {
        const got = await sha256(bytes);
        if (got !== want) throw Object.assign(new Error(`${path.join(dir, file)} is corrupted: sha256 ${got.slice(0, 16)}…, the manifest says ${want.slice(0, 16)}…`), { kind: 'corrupt' });
      }
      return bytes;
    },
    openDevice,
    openSaves: async () => ({
      kind: 'memory',
      async read(k, chat) { return saves.get(keyOf(k, chat))?.bytes || null; },
      async write(k, chat, bytes) { saves.set(keyOf(k, chat), { model: k.model, hash: k.hash, chat, bytes, modified: Date.now() }); },
      async all() { return [...saves.values()].map(({ model, hash, chat, bytes, modified }) => ({ model, hash, chat, bytes: bytes.length, modified })); },
      async remove(chat) { for (const [k, v] of saves) if (v.chat === chat) saves.delete(k); },
    }),
    sha256,
    onLog: (fd, line) => process.stderr.write(line + '\n'),
    yieldNow: () => new Promise((r) => setImmediate(r)),
  });
}

const num = (v, what) => {
  const n = Number(v);
  if (!Number.isFinite(n)) usage(`-${what} ${v} is not a number`);
  return n;
};

function turnInput(v) {
  const t = {
    max_tokens: num(v['max-tokens'], 'max-tokens'), temperature: num(v.temp, 'temp'), top_p: num(v['top-p'], 'top-p'),
    top_k: num(v['top-k'], 'top-k'), rep_penalty: num(v['rep-penalty'], 'rep-penalty'), seed: num(v.seed, 'seed'),
  };
  if (v.ids) t.ids = v.ids.split(',').map((s) => num(s, 'ids'));
  else if (v.prompt !== undefined) t.text = v.prompt;
  else usage('gen needs -prompt TEXT or -ids 1,2,3');
  return t;
}

// gen loads the model and runs one turn (a chat message, or raw ids); with
// -fault, a first turn is made to fail WebGPU validation and the turn is
// run again, as a page would after an error.
async function gen(v) {
  const d = newDriver(v.wasm);
  const info = await d.handle({ op: 'load', model: v.model, backend: v.backend === 'auto' ? '' : v.backend, tier: v.tier });
  const messages = v.system ? [{ role: 'system', content: v.system }] : [];
  const { session } = await d.handle({ op: 'open', chat: '', messages });
  const input = turnInput(v);
  const kind = input.ids ? 'complete' : 'send';
  const out = { backend: info.backend, adapter: info.adapter, gpuNote: info.gpuNote || '' };
  if (v.fault) {
    await d.handle({ op: 'fault', fault: 'validation' });
    try {
      await d.handle({ op: 'turn', session, kind, turn: input });
      out.faultError = '';
    } catch (e) {
      out.faultError = e.message;
    }
  }
  const r = await d.handle({ op: 'turn', session, kind, turn: input }, v.json ? null : (tok) => process.stdout.write(tok.text));
  Object.assign(out, { tokens: r.tokens, text: r.text, finish: r.finish, prompt_tokens: r.prompt_tokens, cached_tokens: r.cached_tokens, stats: r.stats });
  if (v.json) await writeOut(v.json, out);
  else process.stdout.write(`\n[${r.tokens.length} tokens, ${r.stats.decodeTokensPerSec.toFixed(1)} tok/s decoding on ${info.backend}]\n`);
}

async function writeOut(where, value) {
  const text = JSON.stringify(value, null, 1) + '\n';
  if (where === '-') process.stdout.write(text);
  else await writeFile(where, text);
}

// perToken divides a turn part's boundary counters by its tokens.
function perToken(c, n) {
  const runs = c.runs || 0;
  return {
    crossings: (c.imports || 0) / n,            // wasm-to-JS calls (wick_gpu imports)
    exports: (c.exportCalls || 0) / n,          // JS-to-wasm calls
    lists: runs / n,                            // command lists (run)
    commandsPerList: runs ? c.commands / runs : 0,
    encodeMsPerList: runs ? c.runMs / runs : 0, // JS time to replay one list into WebGPU calls
    // Of it: the list's writes, and finish+submit (Dawn translating the
    // commands for the GPU: in Chrome that is the GPU process's work).
    writeMsPerList: runs ? (c.writeMs || 0) / runs : 0,
    submitMsPerList: runs ? (c.submitMs || 0) / runs : 0,
    gpuCallsPerToken: (c.gpuCalls || 0) / n,
    // Each import's calls per token ("run", "map", "status", ...): what the
    // crossings are made of.
    importsPerToken: Object.fromEntries(Object.entries(c).filter(([k]) => k.startsWith('import:')).map(([k, v]) => [k.slice(7), v / n])),
  };
}

// phases splits a turn part of ms milliseconds (its counters c) by where
// the time went: the module's own code (calls into it, less the imports it
// made), JS in the GPU imports (of it replaying command lists, runMs),
// awaiting the GPU at status 2 (its work and the readbacks' mapping),
// JS copying the readbacks in, and the rest (the driver's loop, progress
// reports, yields to the event loop); with the readbacks and copies.
function phases(c, ms) {
  const exp = c.exportMs || 0, imp = c.importMs || 0, settle = c.settleMs || 0, deliver = c.deliverMs || 0;
  return {
    ms, wasmMs: exp - imp, importMs: imp, encodeMs: c.runMs || 0, settleMs: settle, deliverMs: deliver, restMs: ms - exp - settle - deliver,
    maps: c.maps || 0, mapBytes: c.mapBytes || 0, copies: c.copies || 0, lists: c.runs || 0, commands: c.commands || 0,
  };
}

// bench measures the loaded model through the page's own path (load with
// fills, chat turns through the driver, the engine's sessions with their
// prefix cache): prefill and decode tok/s, greedy and sampled, with the
// boundary's traffic per token. The prefill reads its prompt with progress
// reported, as the page does, and reports the steps it took (each a GPU
// step of up to -chunk tokens, 0 the module's default, and ending where
// the prefix cache's blocks must be captured); each run's prompt is a new
// one, so that no run restores the last one's blocks. Figures are medians
// of -runs runs after a warm-up; the prefill's table also gives its
// fastest and slowest run and where its time went (phases: the module's Go
// code, JS in the GPU imports, awaiting the GPU and the readbacks), and
// -cache-bytes sets the prefix cache's budget (-1, written -cache-bytes=-1: no cache, so no
// snapshots; 0: the module's default). With -kernels also
// package bench's bandwidth and GEMV tables inside the module (the same
// code as `wick bench`); with -profile the GPU time of each kernel of a
// decode step (a turn's decode steps summed from its first token on, so
// without the prefill before it, and divided by their number), and of a
// prefill of -prompt tokens, from timestamp queries (on the page's path,
// and with -kernels in package bench's tables too, through run_timed).
// -decode-after N starts the decode turns after a prompt of N ids (default
// 8). -page-sampling draws the prefill's token as the page does by default
// (temperature 0.8, top-p 0.95) rather than greedily, so the time to the
// first token is the page's. -warm S (default 2) runs untimed turns for S
// seconds before each part's timed runs, and package bench warms each of
// its figures as long (bench.Options.Warm): a GPU idle for a second or
// more runs at a fraction of its clock and takes about 1.5 s of load to
// ramp back up (an H200: 345 MHz idle, 1,980 under load), so turns timed
// after a pause meet whatever clock the GPU has then; -warm 0 times them
// so, as a user's first prompt after a pause meets it. -gemv passes
// package bench its GEMV variants (bench.Options.Gemv).
// -flash-first loads the model with prefill attention's first variant
// rather than its register one, the default (webgpu.Options.FlashFirst),
// -flash-tile 32 the register one with tiles of 32 keys (FlashTile);
// package bench's plans take +flash-first and +flash32. -prefill-tile 64
// or 128 loads it with that prefill product tile (webgpu.Options.Tile)
// and -prefill-split with its products of few rows split (Options.Split),
// as package bench's plans +tile64, +tile128 and +split do: -profile then
// times each.
async function bench(v) {
  const decode = num(v.decode, 'decode');
  const prompt = num(v.prompt ?? '512', 'prompt');
  const d = newDriver(v.wasm);
  // With -kernels -profile, package bench's profile takes the GPU's
  // timestamps: the device gets timestamp queries (they change no kernel).
  const chunk = num(v.chunk, 'chunk');
  const runs = num(v.runs, 'runs');
  if (runs < 1) usage(`-runs ${v.runs}: at least one run`);
  const info = await d.handle({ op: 'load', model: v.model, backend: 'webgpu', tier: v.tier, timestamps: v.kernels && v.profile, chunk,
    cacheBytes: num(v['cache-bytes'], 'cache-bytes'), flashFirst: v['flash-first'], flashTile: num(v['flash-tile'], 'flash-tile'),
    prefillTile: num(v['prefill-tile'], 'prefill-tile'), prefillSplit: v['prefill-split'] });
  const res = { model: v.model, flashFirst: v['flash-first'], flashTile: num(v['flash-tile'], 'flash-tile'), prefillTile: num(v['prefill-tile'], 'prefill-tile'), prefillSplit: v['prefill-split'], adapter: info.adapter, date: new Date().toISOString().slice(0, 10), vocab: info.vocab };
  const ids = (n, seed) => Array.from({ length: n }, (_, i) => 3 + ((i * 2654435761 + seed * 40503) >>> 0) % (info.vocab - 3));
  // turn(i) is run i's turn; each run counts the progress reports it got.
  const warmMs = 1000 * Number(v.warm);
  if (!(warmMs >= 0)) usage(`-warm ${v.warm}: seconds, at least 0`);
  const run = async (turn, n = runs, progress = false) => {
    // -warm's untimed turns (each a new prompt), one warm-up, then the
    // median of n runs, each in a fresh session (with the fastest and
    // slowest run's times beside it).
    for (let k = 0, until = performance.now() + warmMs; performance.now() < until; k++) {
      const { session } = await d.handle({ op: 'open', chat: '', messages: [] });
      await d.handle({ op: 'turn', session, kind: 'complete', turn: turn(1000 + k) });
      await d.handle({ op: 'close', session });
    }
    const all = [];
    for (let i = 0; i <= n; i++) {
      const { session } = await d.handle({ op: 'open', chat: '', messages: [] });
      let steps = 0;
      const r = await d.handle({ op: 'turn', session, kind: 'complete', turn: turn(i) }, null, progress ? () => { steps++; } : undefined);
      r.steps = steps;
      await d.handle({ op: 'close', session });
      if (i) all.push(r);
    }
    all.sort((a, b) => a.stats.ms - b.stats.ms);
    const med = all[all.length >> 1];
    const first = all.map((r) => r.stats.firstMs).sort((a, b) => a - b);
    med.spread = { runs: all.length, minFirstMs: first[0], maxFirstMs: first[first.length - 1] };
    return med;
  };
  // Prefill: the time to the first token of a prompt of `prompt` ids, a
  // new prompt each run (the model's prefix cache would restore the last
  // one's blocks), read with progress as the page reads it.
  const draw = v['page-sampling'] ? { temperature: 0.8, top_p: 0.95, seed: 7 } : {};
  const pre = await run((i) => ({ ids: ids(prompt, 10 + i), max_tokens: 1, ...draw }), runs, true);
  res.prefill = { tokens: prompt, tokPerSec: prompt / (pre.stats.firstMs / 1000), steps: pre.steps, cached: pre.cached_tokens, chunk,
    runs: pre.spread.runs, minTokPerSec: prompt / (pre.spread.maxFirstMs / 1000), maxTokPerSec: prompt / (pre.spread.minFirstMs / 1000),
    sampled: v['page-sampling'], warmS: warmMs / 1000, cacheBytes: num(v['cache-bytes'], 'cache-bytes'), phases: phases(pre.stats.prefill, pre.stats.firstMs), waits: pre.stats.prefillWaits,
    ...perToken(pre.stats.prefill, prompt) };
  // Decode: greedy and sampled (the page's defaults) after a prompt of
  // -decode-after ids (default 8; past a local window, 512 on Gemma 3, the
  // rings have wrapped, as in any longer chat).
  const decodeAfter = num(v['decode-after'], 'decode-after');
  if (decodeAfter < 1) usage(`-decode-after ${v['decode-after']}: at least one id`);
  for (const [name, t] of [['greedy', { temperature: 0 }], ['sampled', { temperature: 0.8, top_p: 0.95, seed: 7 }]]) {
    const r = await run(() => ({ ids: ids(decodeAfter, 2), max_tokens: decode, ...t }));
    const n = Math.max(1, r.stats.tokens - 1);
    res[name] = { tokens: r.stats.tokens, after: decodeAfter, finish: r.finish, tokPerSec: r.stats.decodeTokensPerSec, ...perToken(r.stats.decode || {}, n) };
  }
  if (v.profile) {
    const p = newDriver(v.wasm);
    await p.handle({ op: 'load', model: v.model, backend: 'webgpu', profile: true, tier: v.tier, chunk, flashFirst: v['flash-first'], flashTile: num(v['flash-tile'], 'flash-tile'),
      prefillTile: num(v['prefill-tile'], 'prefill-tile'), prefillSplit: v['prefill-split'] });
    const { session } = await p.handle({ op: 'open', chat: '', messages: [] });
    await p.handle({ op: 'turn', session, kind: 'complete', turn: { ids: ids(8, 2), max_tokens: 2 } });
    p.engine.gpu.profileTimes();
    const steps = 16;
    // -temp T profiles sampled decoding (top-p from -top-p), else greedy.
    const sampled = Number(v.temp) > 0 ? { temperature: Number(v.temp), top_p: Number(v['top-p']), seed: 7 } : {};
    // The turn's prompt is one id, so its prefill is one step of one
    // token, the decode step's dispatches with the first token's pick, and
    // the turn then runs one decode step for each token it takes: the
    // profile, started afresh before the turn, sums steps + 1 decode steps.
    // (It cannot start afresh at the first token: the reply's first batch
    // is submitted before that token is back.)
    const r = await p.handle({ op: 'turn', session, kind: 'complete', turn: { ids: ids(1, 3), max_tokens: steps, ...sampled } });
    // A reply cut by a stop token would have run steps past it (a decode
    // batch is not cut short), which no count here could tell apart.
    if (r.finish !== 'length' || r.tokens.length !== steps) {
      throw new Error(`profile: the decode turn ended (${r.finish}) after ${r.tokens.length} of ${steps} tokens, so its steps cannot be counted`);
    }
    res.profile = {
      steps: steps + 1, method: 'decode-only',
      kernels: p.engine.gpu.profileTimes().map((k) => ({ label: k.label, perStep: k.count / (steps + 1), usPerStep: k.ns / 1000 / (steps + 1) })),
    };
    // Prefill by kernel: one prompt of `prompt` ids in a fresh session.
    const pre = await p.handle({ op: 'open', chat: '', messages: [] });
    await p.handle({ op: 'turn', session: pre.session, kind: 'complete', turn: { ids: ids(prompt, 1), max_tokens: 1 } });
    res.prefillProfile = { tokens: prompt, kernels: p.engine.gpu.profileTimes().map((k) => ({ label: k.label, dispatches: k.count, us: k.ns / 1000 })) };
    p.close();
  }
  if (v.kernels) {
    res.kernels = await d.handle({ op: 'bench', options: {
      model: '', shapes: v.shapes, configs: v.configs, mib: num(v.mib, 'mib'), decode, prompt, profile: v.profile, plans: v.plans, warm: warmMs / 1000, gemv: v.gemv,
      rowAttention: v['row-attention'],
    } });
  }
  d.close();
  if (v.json) await writeOut(v.json, res);
  printBench(res);
}

function printBench(r) {
  const f = (x, d = 1) => x.toFixed(d);
  const lines = [
    `model ${r.model} on ${r.adapter}${r.adapter.startsWith('none') ? '' : ' (Dawn via dawn.node)'}, ${r.date}, prefill attention: attend_flash${r.flashFirst ? ' (first variant)' : `/regs${r.flashTile ? `/t${r.flashTile}` : ''}`}, prefill product: ${r.prefillTile ? `tile ${r.prefillTile}` : 'the default tile'}${r.prefillSplit ? ', split' : ''}`,
    '',
    '| part | tok/s | crossings/token | command lists/token | commands/list | JS encoding ms/list | of it: writes, finish+submit |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  const p = r.prefill;
  lines.splice(1, 0, `prefill pp${p.tokens}: ${p.steps} steps (${p.steps ? f(p.tokens / p.steps, 0) : '-'} tokens a step; -chunk ${p.chunk || 'default'}), ${p.cached} tokens restored from the prefix cache${p.warmS ? `, after ${p.warmS} s of untimed turns (-warm)` : ''}` +
    `${p.cacheBytes < 0 ? ' (no prefix cache)' : ''}${p.sampled ? '; the token drawn as the page draws it (temperature 0.8, top-p 0.95)' : ''}; ${f(p.tokPerSec, 0)} tok/s the median of ${p.runs} runs, ${f(p.minTokPerSec, 0)}-${f(p.maxTokPerSec, 0)}`);
  for (const k of ['prefill', 'greedy', 'sampled']) {
    const x = r[k];
    lines.push(`| ${k === 'prefill' ? `prefill pp${x.tokens}` : `decode ${k} (${x.tokens} tokens after ${x.after})`} | ${f(x.tokPerSec, 0)} | ${f(x.crossings, 2)} | ${f(x.lists, 2)} | ${f(x.commandsPerList, 0)} | ${f(x.encodeMsPerList, 3)} | ${f(x.writeMsPerList, 3)}, ${f(x.submitMsPerList, 3)} |`);
  }
  if (p.phases) {
    const ph = p.phases;
    lines.push('', `prefill pp${p.tokens} by phase (the median run, ms): ${f(ph.ms, 1)} to the first token`,
      '| Go in the module | JS in GPU imports (of it replaying lists) | awaiting the GPU and readbacks | JS copying readbacks in | rest | readbacks (MB) | command lists (commands, copies) |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      `| ${f(ph.wasmMs)} | ${f(ph.importMs)} (${f(ph.encodeMs)}) | ${f(ph.settleMs)} | ${f(ph.deliverMs)} | ${f(ph.restMs)} | ${ph.maps} (${f(ph.mapBytes / 1e6, 2)}) | ${ph.lists} (${ph.commands}, ${ph.copies}) |`);
    if (p.waits) lines.push(`waits for the GPU in turn: ${p.waits.map((w) => `${f(w.ms)} ms (${w.readbacks} readbacks, ${f(w.bytes / 1e6, 2)} MB)`).join(', ')}`);
  }
  if (r.profile) {
    const total = r.profile.kernels.reduce((a, k) => a + k.usPerStep, 0);
    lines.push('', `decode step by kernel (timestamp queries, a compute pass per dispatch): ${f(total)} us of GPU time per step, ` +
      `the GPU time of a turn's ${r.profile.steps} one-token steps (its prompt of one id, then a step per token) divided by ${r.profile.steps}`,
      '| kernel | dispatches/step | us/step | share |', '| --- | --- | --- | --- |');
    for (const k of r.profile.kernels) lines.push(`| ${k.label} | ${f(k.perStep, 1)} | ${f(k.usPerStep)} | ${f(100 * k.usPerStep / total, 0)}% |`);
  }
  if (r.prefillProfile) {
    const total = r.prefillProfile.kernels.reduce((a, k) => a + k.us, 0);
    lines.push('', `prefill of ${r.prefillProfile.tokens} tokens by kernel (timestamp queries, a compute pass per dispatch): ${f(total)} us of GPU time`,
      '| kernel | dispatches | us | share |', '| --- | --- | --- | --- |');
    for (const k of [...r.prefillProfile.kernels].sort((a, b) => b.us - a.us)) lines.push(`| ${k.label} | ${k.dispatches} | ${f(k.us)} | ${f(100 * k.us / total, 0)}% |`);
  }
  if (r.kernels) lines.push('', r.kernels);
  process.stdout.write(lines.join('\n') + '\n');
}

async function info(v) {
  const a = await navigator.gpu.requestAdapter();
  if (!a) throw new Error('Dawn found no adapter');
  const out = {
    // GPUAdapterInfo's fields are getters, which JSON.stringify skips: copy them.
    adapter: Object.fromEntries(['vendor', 'architecture', 'device', 'description', 'subgroupMinSize', 'subgroupMaxSize', 'isFallbackAdapter']
      .map((k) => [k, a.info[k]])),
    features: [...a.features].sort(), wgsl: [...navigator.gpu.wgslLanguageFeatures].sort(),
    limits: { maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize, maxBufferSize: a.limits.maxBufferSize, maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize },
  };
  // What the engine is told about the device of this tier (gpu.Info).
  const dev = await openDevice({ tier: v.tier });
  out.device = dev.info;
  dev.device.destroy();
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

const commands = { gen, bench, info };
if (!commands[cmd]) usage(cmd ? `unknown command ${cmd}` : 'no command');
let parsed;
try {
  parsed = parseArgs({ args: argv, options, allowPositionals: false }).values;
} catch (e) {
  usage(e.message);
}
if (cmd !== 'info' && !parsed.model) usage(`${cmd} needs -model DIR`);
if (parsed['null-gpu']) installNullGPU();
else installGPU(parsed.experimental);
try {
  await commands[cmd](parsed);
  // dawn.node keeps the event loop alive: leave once the work is done.
  process.exit(0);
} catch (e) {
  process.stderr.write(`host ${cmd}: ${e.message}\n`);
  process.exit(1);
}
