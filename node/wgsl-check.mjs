// wgsl-check compiles WGSL compute kernels with the two shader compilers
// browsers ship besides Safari's: Tint, through Dawn (Chrome's and Edge's
// WebGPU; npm `webgpu` is dawn.node), and naga (Firefox's; npm
// `naga-wasm`, as far as its WGSL front end and validator go).
//
//   node node/wgsl-check.mjs [-o results.json] [kernels.json]
//
// (no kernels file: read stdin; no -o: write the results to stdout, where
// Dawn also prints the log of every module with messages).
//
// The input is a JSON list of {label, wgsl, entry}. For each kernel Dawn
// makes the shader module, collects every message of getCompilationInfo
// (errors, warnings and notes), and makes its compute pipeline inside a
// validation error scope; naga parses and validates the module. A kernel
// that enables WGSL extensions (`enable f16;`, `enable subgroups;`, ...)
// is compiled on a device that requested the matching WebGPU features,
// and one that uses a WGSL language feature (packed int8 dot products) is
// checked against the adapter's wgslLanguageFeatures; the result names
// what each kernel needs. A kernel that needs an experimental feature the
// adapter lacks (chromium-experimental-subgroup-matrix: only some GPUs
// have it) is compiled on Dawn's Null backend instead, which offers every
// feature and runs all of Tint's checks, but no driver's compiler; its
// result says so (backend 'null'). The output is one JSON object:
// {adapter, features, languageFeatures, naga, results: [{label, needs,
// backend, tint: [{type, line, column, message}], pipeline, naga}]}: tint
// holds getCompilationInfo's messages, pipeline the pipeline's error (or
// null), naga null or {unsupported, message}.
// Dawn prints its own notices about the device on stderr (such as
// "maxDynamicUniformBuffersPerPipelineLayout artificially reduced"); they
// are not shader messages.
import { readFileSync, writeFileSync } from 'node:fs';
import { create, globals } from 'webgpu';
import { parseWgsl, validate, nagaVersion } from 'naga-wasm';

// WGSL `enable` extensions and the WebGPU device feature each needs.
const extensionFeature = {
  f16: 'shader-f16',
  subgroups: 'subgroups',
  chromium_experimental_subgroup_matrix: 'chromium-experimental-subgroup-matrix',
};

// Builtins that exist only with a WGSL language feature, by feature.
const languageBuiltins = {
  packed_4x8_integer_dot_product: /\b(dot4I8Packed|dot4U8Packed|pack4xI8|pack4xU8|pack4xI8Clamp|pack4xU8Clamp|unpack4xI8|unpack4xU8)\s*\(/,
  subgroup_id: /@builtin\(\s*(subgroup_id|num_subgroups)\s*\)/,
};

// needs lists what a kernel asks of the implementation: the device
// features its `enable` directives need and the language features its
// `requires` directives or builtins need.
function needs(wgsl) {
  const features = new Set();
  const language = new Set();
  for (const m of wgsl.matchAll(/^\s*(enable|requires)\s+([^;]+);/gm)) {
    for (const name of m[2].split(',').map((s) => s.trim()).filter(Boolean)) {
      if (m[1] === 'requires') {
        language.add(name);
      } else {
        features.add(extensionFeature[name] ?? `unknown WGSL extension ${name}`);
      }
    }
  }
  for (const [name, re] of Object.entries(languageBuiltins)) {
    if (re.test(wgsl)) {
      language.add(name);
    }
  }
  return { features: [...features].sort(), language: [...language].sort() };
}

// nagaCheck parses and validates with naga: null when it accepts the
// module, else {unsupported, message}, unsupported being true where naga
// declines WGSL it does not implement yet (such as `enable subgroups;`)
// rather than finding the module wrong.
function nagaCheck(wgsl) {
  let module;
  let info;
  try {
    module = parseWgsl(wgsl);
    info = validate(module);
    return null;
  } catch (e) {
    const message = `${e.kind ?? 'error'}: ${e.formatted ?? e.message}`;
    return { unsupported: /not yet (implemented|supported)/i.test(message), message };
  } finally {
    info?.free();
    module?.free();
  }
}

async function main() {
  const args = process.argv.slice(2);
  let out = null;
  if (args[0] === '-o') {
    out = args[1];
    args.splice(0, 2);
  }
  const input = readFileSync(args[0] ?? 0, 'utf8');
  const kernels = JSON.parse(input);
  if (!Array.isArray(kernels)) {
    throw new Error('input: want a JSON list of {label, wgsl, entry}');
  }
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) {
    throw new Error('Dawn found no WebGPU adapter (on Debian, Mesa 25 lavapipe: `make deps` installs it)');
  }
  const adapterFeatures = [...adapter.features].sort();
  const languageFeatures = [...(gpu.wgslLanguageFeatures ?? [])].sort();
  // One device per set of features, made on first use (an adapter makes
  // one device: each gets an adapter of its own).
  const devices = new Map();
  async function device(features) {
    const key = features.join(',');
    if (!devices.has(key)) {
      const a = await gpu.requestAdapter();
      devices.set(key, await a.requestDevice({ requiredFeatures: features }));
    }
    return devices.get(key);
  }

  // Dawn's Null backend, made on first use, with experimental features
  // shown.
  let nullGPU = null;
  const nullDevices = new Map();
  async function nullDevice(features) {
    const key = features.join(',');
    if (!nullDevices.has(key)) {
      nullGPU ??= create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
      const a = await nullGPU.requestAdapter();
      const missing = a ? features.filter((f) => !a.features.has(f)) : features;
      nullDevices.set(key, missing.length > 0 ? null : await a.requestDevice({ requiredFeatures: features }));
    }
    return nullDevices.get(key);
  }

  const results = [];
  for (const k of kernels) {
    const need = needs(k.wgsl);
    const r = { label: k.label, needs: [...need.features, ...need.language], backend: 'adapter', tint: [], pipeline: null, naga: nagaCheck(k.wgsl) };
    results.push(r);
    const missingFeatures = need.features.filter((f) => !adapter.features.has(f));
    const missing = [
      ...missingFeatures,
      ...need.language.filter((f) => !languageFeatures.includes(f)),
    ];
    let dev = null;
    if (missing.length > 0 && missing.every((f) => f.startsWith('chromium-experimental-'))) {
      dev = await nullDevice(need.features);
      r.backend = 'null';
    }
    if (missing.length > 0 && !dev) {
      r.pipeline = `the adapter lacks ${missing.join(', ')}`;
      continue;
    }
    dev ??= await device(need.features);
    dev.pushErrorScope('validation');
    const module = dev.createShaderModule({ label: k.label, code: k.wgsl });
    const info = await module.getCompilationInfo();
    for (const m of info.messages) {
      r.tint.push({ type: m.type, line: m.lineNum, column: m.linePos, message: m.message });
    }
    try {
      await dev.createComputePipelineAsync({ label: k.label, layout: 'auto', compute: { module, entryPoint: k.entry } });
    } catch (e) {
      r.pipeline = e.message;
    }
    const err = await dev.popErrorScope();
    if (err && !r.pipeline) {
      r.pipeline = err.message;
    }
  }
  for (const d of [...devices.values(), ...nullDevices.values()]) {
    d?.destroy();
  }
  const info = adapter.info ?? {};
  const report = JSON.stringify({
    adapter: [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' '),
    features: adapterFeatures,
    languageFeatures,
    naga: nagaVersion,
    results,
  }) + '\n';
  if (out) {
    writeFileSync(out, report);
  } else {
    process.stdout.write(report);
  }
}

// dawn.node keeps the process alive after the work is done: exit once the
// output is flushed.
main().then(
  () => process.stdout.write('', () => process.exit(0)),
  (e) => {
    process.stderr.write(`wgsl-check: ${e.stack ?? e}\n`);
    process.exit(1);
  },
);
