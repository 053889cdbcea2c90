// stream: reads a buffer once and does nothing else, to measure the read
// bandwidth a WGSL kernel can reach on a device (wick bench sets the GEMV's
// speed beside it). Each invocation makes UNROLL independent 16-byte loads,
// a workgroup apart, and xor-folds them; the result is written only when it
// equals a value no input gives, so no compiler can drop the loads.
#include "common.wgsl"

struct StreamParams {
  vecs: u32,  // 16-byte vectors in src
  magic: u32, // never equal to the fold of real data
  pad0: u32,
  pad1: u32,
}
@group(0) @binding(1) var<uniform> p: StreamParams;
@group(0) @binding(2) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> sink: array<u32>;

const UNROLL = {{TPR}}u;

@compute @workgroup_size({{WG}})
fn stream(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
  let base = wg_linear(wg, nwg) * {{WG}}u * UNROLL + li;
  var acc = vec4<u32>(0u);
  for (var k = 0u; k < UNROLL; k++) {
    let i = base + k * {{WG}}u;
    if (i < p.vecs) {
      acc ^= src[i];
    }
  }
  let v = acc.x ^ acc.y ^ acc.z ^ acc.w;
  // step.n is read like every kernel reads it: the host binds step to all.
  if (v == p.magic && step.n == 0u) {
    sink[li] = v;
  }
}
