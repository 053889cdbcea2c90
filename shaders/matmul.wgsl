// matmul: y = W x for the tokens of a step. int8: W8A8, the int8 x int8
// products summed in int32 and rescaled once by xScale*wScale; float32: a
// plain dot. One workgroup per output row and token: the matvec of decode.
#include "common.wgsl"

#include "matmul_params.wgsl"
@group(0) @binding(1) var<uniform> p: MatmulParams;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size({{WG}})
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, vec3<u32>(nwg.x, nwg.y, 1u));
  let t0 = select(0u, step.first, p.from_first == 1u);
  let t = t0 + wg.z;
  if (row >= p.rows || t >= step.n) {
    return;
  }
#if INT8
  let words = p.cols / 4u;
  var acc = 0;
  for (var i = li; i < words; i += {{WG}}u) {
    acc += dot_i8(w[row * words + i], x[t * words + i]);
  }
  let total = wg_sum_i(acc, li);
  var v = f32(total) * (bitcast<f32>(x[p.x_scale_word + t]) * bitcast<f32>(w[p.w_scale_word + row]));
#else
  var acc = 0.0;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    acc += bitcast<f32>(w[row * p.cols + i]) * bitcast<f32>(x[t * p.cols + i]);
  }
  var v = wg_sum(acc, li);
#endif
  if (li == 0u) {
    if (p.softcap > 0.0) {
      // tanh saturates in float32 long before 10; the clamp keeps
      // implementations that compute it from exp away from inf/inf.
      v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
    }
    y[(t - t0) * p.out_stride + p.out_row + row] = v;
  }
}
