// act: the gated FFN activation, gate = act(gate) * up in place. The
// activation is a variant: GeGLU (tanh gelu) or SwiGLU (silu).
#include "common.wgsl"

struct ActParams {
  cols: u32, // FFN width
  pad0: u32,
  pad1: u32,
  pad2: u32,
}
@group(0) @binding(1) var<uniform> p: ActParams;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;

fn act(x: f32) -> f32 {
#if SILU
  return x / (1.0 + exp(-x));
#else
  let k = 0.7978845608028654; // sqrt(2/pi)
  // tanh saturates long before 10; the clamp avoids inf/inf in exp-based tanh.
  return 0.5 * x * (1.0 + tanh(clamp(k * (x + 0.044715 * x * x * x), -10.0, 10.0)));
#endif
}

@compute @workgroup_size({{WG}})
fn gated(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
  let i = wg_linear(wg, nwg) * {{WG}}u + li;
  if (i >= step.n * p.cols) {
    return;
  }
  gate[i] = act(gate[i]) * up[i];
}
