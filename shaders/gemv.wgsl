// gemv: y = W x for the few tokens of a decode step, at the speed of
// streaming W. TPR invocations share a row and each reads 16 bytes of W per
// load (16 int8 values, or 4 float32), so a workgroup covers WG/TPR rows
// and the loads of neighbouring invocations are contiguous. The row's
// partial sums meet in workgroup memory. Same parameters and result as
// matmul.wgsl; W rows and x rows must be whole 16-byte vectors (cols a
// multiple of 16 for int8, of 4 for float32), and every buffer padded to 16
// bytes, the per-row scales included.
//
// The FMA variant takes the int8 products through float32 instead of
// integer multiply-adds, which the GPU issues at half the rate: a byte
// biased to unsigned and or-ed into the mantissa of 2^23 is the float
// 2^23 + 128 + v, so unpacking costs a mask and a subtract. Products of int8
// are exact in float32 and so are sums of up to 1024 of them (below 2^24):
// each invocation moves its float sum into an int32 every 64 vectors, which
// keeps the result equal to the int32 accumulation.
#include "common.wgsl"

#include "matmul_params.wgsl"
@group(0) @binding(1) var<uniform> p: MatmulParams;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TPR = {{TPR}}u;
const RPW = {{WG}}u / {{TPR}}u;

fn word(a: vec4<u32>, i: u32) -> u32 {
  return a[i % 4u];
}

fn dot16_i8(a: vec4<u32>, b: vec4<u32>) -> i32 {
  return dot_i8(a.x, b.x) + dot_i8(a.y, b.y) + dot_i8(a.z, b.z) + dot_i8(a.w, b.w);
}

#if FMA
// i8f unpacks four int8 (packed, element 0 low) into exact floats.
fn i8f(packed: u32) -> vec4<f32> {
  let u = packed ^ 0x80808080u;
  let m = 0x4b000000u;
  let f = bitcast<vec4<f32>>(vec4<u32>(m | (u & 0xffu), m | ((u >> 8u) & 0xffu), m | ((u >> 16u) & 0xffu), m | (u >> 24u)));
  return f - vec4<f32>(8388736.0);
}

fn dot16(a: vec4<u32>, b: vec4<u32>) -> f32 {
  return dot(i8f(a.x), i8f(b.x)) + dot(i8f(a.y), i8f(b.y)) + dot(i8f(a.z), i8f(b.z)) + dot(i8f(a.w), i8f(b.w));
}
#endif

@compute @workgroup_size({{WG}})
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let lane = li % TPR;
  let row = wg_linear(wg, vec3<u32>(nwg.x, nwg.y, 1u)) * RPW + li / TPR;
  let t0 = select(0u, step.first, p.from_first == 1u);
  let t = t0 + wg.z;
  if (t >= step.n) {
    return; // the whole workgroup: barriers below stay uniform
  }
  let valid = row < p.rows;
#if INT8
  let vecs = p.cols / 16u;
  var acc = 0;
  if (valid) {
    let wb = row * vecs;
    let xb = t * vecs;
#if FMA
    for (var i0 = lane; i0 < vecs; i0 += 64u * TPR) {
      var f = 0.0;
      for (var i = i0; i < min(vecs, i0 + 64u * TPR); i += TPR) {
        f += dot16(w[wb + i], x[xb + i]);
      }
      acc += i32(f);
    }
#else
    // Two vectors per iteration: two loads in flight per invocation.
    var acc1 = 0;
    var i = lane;
    for (; i + TPR < vecs; i += 2u * TPR) {
      let a0 = w[wb + i];
      let b0 = x[xb + i];
      let a1 = w[wb + i + TPR];
      let b1 = x[xb + i + TPR];
      acc += dot16_i8(a0, b0);
      acc1 += dot16_i8(a1, b1);
    }
    if (i < vecs) {
      acc += dot16_i8(w[wb + i], x[xb + i]);
    }
    acc += acc1;
#endif
  }
  red_i[li] = acc;
#else
  let vecs = p.cols / 4u;
  var acc = 0.0;
  if (valid) {
    let wb = row * vecs;
    let xb = t * vecs;
    for (var i = lane; i < vecs; i += TPR) {
      acc += dot(bitcast<vec4<f32>>(w[wb + i]), bitcast<vec4<f32>>(x[xb + i]));
    }
  }
  red_f[li] = acc;
#endif
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s = s / 2u) {
    if (lane < s) {
#if INT8
      red_i[li] = red_i[li] + red_i[li + s];
#else
      red_f[li] = red_f[li] + red_f[li + s];
#endif
    }
    workgroupBarrier();
  }
  if (lane == 0u && valid) {
#if INT8
    let xs = bitcast<f32>(word(x[(p.x_scale_word + t) / 4u], p.x_scale_word + t));
    let ws = bitcast<f32>(word(w[(p.w_scale_word + row) / 4u], p.w_scale_word + row));
    var v = f32(red_i[li]) * (xs * ws);
#else
    var v = red_f[li];
#endif
    if (p.softcap > 0.0) {
      v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
    }
    y[(t - t0) * p.out_stride + p.out_row + row] = v;
  }
}
