// A navigator.gpu that does no GPU work, for measuring what the page's path
// costs on the host alone (the module's Go, the driver's and web/gpu.js's
// JS) on a machine whose GPU, or lavapipe, would otherwise hide it: every
// call succeeds at once, readbacks come back as zeros as soon as they are
// asked for, and nothing is computed. Tokens are therefore meaningless
// (all-zero logits), but every byte the page's path moves, and every call it
// makes, is the same as on a real device. host.mjs -null-gpu installs it.

const limit = 1 << 30;

class NullBuffer {
  constructor({ size }) { this.size = size; }
  mapAsync() { return Promise.resolve(); }
  getMappedRange(offset = 0, size = this.size - offset) { return new ArrayBuffer(size); }
  unmap() {}
  destroy() {}
}

const pass = { setPipeline() {}, setBindGroup() {}, dispatchWorkgroups() {}, end() {}, writeTimestamp() {} };

class NullEncoder {
  beginComputePass() { return pass; }
  copyBufferToBuffer() {}
  resolveQuerySet() {}
  finish() { return {}; }
}

const device = {
  label: 'null',
  features: new Set(['subgroups']),
  limits: { maxStorageBufferBindingSize: limit, maxBufferSize: limit, maxComputeWorkgroupsPerDimension: 65535 },
  lost: new Promise(() => {}),
  addEventListener() {},
  pushErrorScope() {},
  popErrorScope: () => Promise.resolve(null),
  createBuffer: (d) => new NullBuffer(d),
  createShaderModule: () => ({ getCompilationInfo: () => Promise.resolve({ messages: [] }) }),
  createComputePipeline: () => ({ getBindGroupLayout: () => ({}) }),
  createBindGroup: () => ({}),
  createCommandEncoder: () => new NullEncoder(),
  createQuerySet: () => ({ destroy() {} }),
  queue: { writeBuffer() {}, submit() {} },
  destroy() {},
};

const adapter = {
  features: device.features,
  limits: { maxStorageBufferBindingSize: limit, maxBufferSize: limit },
  info: { vendor: 'none', architecture: '', device: '', description: 'null GPU (no GPU work: host costs alone)', subgroupMinSize: 32, subgroupMaxSize: 32 },
  requestDevice: async () => device,
};

// installNullGPU makes navigator.gpu (and the WebGPU constants web/gpu.js
// uses) the null device's.
export function installNullGPU() {
  globalThis.GPUBufferUsage = { MAP_READ: 1, MAP_WRITE: 2, COPY_SRC: 4, COPY_DST: 8, INDEX: 16, VERTEX: 32, UNIFORM: 64, STORAGE: 128, INDIRECT: 256, QUERY_RESOLVE: 512 };
  globalThis.GPUMapMode = { READ: 1, WRITE: 2 };
  const gpu = { wgslLanguageFeatures: new Set(['packed_4x8_integer_dot_product']), requestAdapter: async () => adapter, getPreferredCanvasFormat: () => 'rgba8unorm' };
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
}
