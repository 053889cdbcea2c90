// navigator.gpu from dawn.node (npm `webgpu`): Dawn, Chrome's WebGPU and its
// Tint compiler, as the page sees it. Shared by the Node host (host.mjs)
// and the Go tests' device (device.mjs).

import { create, globals } from 'webgpu';

// installGPU makes navigator.gpu from dawn.node. Unless experimental, the
// adapter hides chromium-experimental-* features, as stock Chrome does
// (it shows them only behind its unsafe-WebGPU flag).
export function installGPU(experimental) {
  Object.assign(globalThis, globals);
  // Dawn rounds timestamp queries down to 65,536 ns unless told not to
  // (Chrome does too, against timing attacks, unless its WebGPU developer
  // features are on): per-kernel profiles need them whole, and nothing
  // else reads them.
  const flags = ['disable-dawn-features=timestamp_quantization'];
  if (experimental) flags.push('enable-dawn-features=allow_unsafe_apis');
  const gpu = create(flags);
  const requestAdapter = gpu.requestAdapter.bind(gpu);
  const wrapped = {
    wgslLanguageFeatures: gpu.wgslLanguageFeatures,
    getPreferredCanvasFormat: () => 'rgba8unorm',
    async requestAdapter(o) {
      const a = await requestAdapter(o);
      if (!a || experimental) return a;
      const features = new Set([...a.features].filter((f) => !f.startsWith('chromium-experimental-')));
      return new Proxy(a, {
        get(t, k) {
          if (k === 'features') return features;
          const v = Reflect.get(t, k, t);
          return typeof v === 'function' ? v.bind(t) : v;
        },
      });
    },
  };
  Object.defineProperty(globalThis, 'navigator', { value: { gpu: wrapped }, configurable: true });
}
