// The engine module's model-free exports (wasm/module/cards.go), on an
// instance of its own with no model and no GPU: character cards are read,
// written and rendered into a system prompt by the same Go code as `wick
// chat -card`, and sha256 is computed where crypto.subtle is missing (pages
// served over plain http are not a secure context). Usable from the page and
// from the worker.

import { WASI } from './wasi.js';
import { GPUBridge } from './gpu.js';

let instance = null;

async function tools() {
  if (!instance) {
    instance = (async () => {
      const wasi = new WASI({ files: new Map(), onOutput: (fd, line) => console.log('[wick tools]', line) });
      const gpu = new GPUBridge(null, { readShard: async () => { throw new Error('no model here'); } });
      const { instance: inst } = await WebAssembly.instantiateStreaming(fetch(new URL('wick.wasm', import.meta.url)),
        { wasi_snapshot_preview1: wasi.imports, wick_gpu: gpu.imports });
      gpu.memory = inst.exports.memory;
      wasi.start(inst);
      return inst.exports;
    })();
    instance.catch(() => { instance = null; });
  }
  return instance;
}

// call runs export name on input bytes and returns its output bytes (a
// copy), or throws its error.
async function call(name, input) {
  const x = await tools();
  const ptr = x.wick_buf(input.length);
  new Uint8Array(x.memory.buffer, ptr, input.length).set(input);
  const st = x[name](input.length);
  const view = (v) => {
    const p = Number(BigInt.asUintN(64, v) >> 32n), n = Number(BigInt.asUintN(32, v));
    return new Uint8Array(x.memory.buffer, p, n).slice();
  };
  if (st !== 0) throw new Error(new TextDecoder().decode(view(x.wick_error())));
  return view(x.wick_output());
}

const enc = (v) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
const dec = (b) => JSON.parse(new TextDecoder().decode(b));

// readCard parses a shared card file (JSON or PNG bytes) into engine/chat's
// SharedCard: {spec, name, description, ..., alternate_greetings, extra}.
export async function readCard(bytes) { return dec(await call('wick_card_read', bytes)); }

// writeCard returns a SharedCard as a file: JSON, or a PNG (over image, a
// PNG's bytes, when given). spec is 'chara_card_v2' or 'chara_card_v3'.
export async function writeCard(card, { spec, png = false, image = null }) {
  let b64 = null;
  if (image) {
    let s = '';
    for (let i = 0; i < image.length; i += 0x8000) s += String.fromCharCode(...image.subarray(i, i + 0x8000));
    b64 = btoa(s);
  }
  return call('wick_card_write', enc({ card, spec, png, image: b64 }));
}

// cardPrompt renders a character as the model sees it: {system, greetings}.
export async function cardPrompt(card) { return dec(await call('wick_card_prompt', enc(card))); }

// sha256 returns the hex sha256 of bytes, through the module.
export async function sha256(bytes) { return new TextDecoder().decode(await call('wick_sha256', bytes)); }
