// norm: RMSNorm of token rows, and the residual add with an optional
// RMSNorm of the branch output (Gemma's post-norms).
#include "common.wgsl"

struct NormParams {
  cols: u32,     // row width
  one_plus: u32, // 1: the weight is used as 1+w (Gemma)
  eps: f32,      // inside the square root
  norm: u32,     // residual only: 1 to normalise b before adding it
}
@group(0) @binding(1) var<uniform> p: NormParams;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> b: array<f32>;

fn gain(i: u32) -> f32 {
  return select(g[i], g[i] + 1.0, p.one_plus == 1u);
}

fn row_inv(src_is_b: bool, base: u32, li: u32) -> f32 {
  var ss = 0.0;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    let v = select(a[base + i], b[base + i], src_is_b);
    ss += v * v;
  }
  return inv_rms(wg_sum(ss, li), p.cols, p.eps);
}

// rmsnorm writes b = a / rms(a) * gain, one workgroup per token row.
@compute @workgroup_size({{WG}})
fn rmsnorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * p.cols;
  let inv = row_inv(false, base, li);
  for (var i = li; i < p.cols; i += {{WG}}u) {
    b[base + i] = a[base + i] * inv * gain(i);
  }
}

// residual adds b (normalised first when p.norm is 1) into a.
@compute @workgroup_size({{WG}})
fn residual(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * p.cols;
  var inv = 1.0;
  if (p.norm == 1u) {
    inv = row_inv(true, base, li);
  }
  for (var i = li; i < p.cols; i += {{WG}}u) {
    var v = b[base + i];
    if (p.norm == 1u) {
      v = v * inv * gain(i);
    }
    a[base + i] = a[base + i] + v;
  }
}
