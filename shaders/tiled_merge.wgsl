// tiled_merge: the second half of tiled.wgsl's SPLIT product. part holds
// the int32 sums of W x that the K slices added with atomics; merge
// dequantises each (W's row scale times the token's), applies the
// soft-cap, writes y as tiled does, and zeroes part for the next product
// (new buffers start zeroed), so no clearing dispatch is needed.
#include "common.wgsl"

#include "matmul_params.wgsl"
@group(0) @binding(1) var<uniform> p: MatmulParams;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<i32>;

// One invocation per (row, token): rows along x (WG a workgroup), the
// step's tokens from t0 along y.
@compute @workgroup_size({{WG}})
fn merge(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row = gid.x;
  let t = t0 + wg.y;
  if (row >= p.rows || t >= step.n) {
    return;
  }
  let i = (t - t0) * p.rows + row;
  var v = f32(part[i]) * (bitcast<f32>(x[p.x_scale_word + t]) * bitcast<f32>(w[p.w_scale_word + row]));
  part[i] = 0;
  if (p.softcap > 0.0) {
    v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
  }
  y[(t - t0) * p.out_stride + p.out_row + row] = v;
}
