// prenorm: the residual add that closes one block and the pre-norm that
// opens the next, in one pass over each token row: a += b (b normalised by
// g1 first when post_norm is 1; no add when add is 0), then h = RMSNorm(a)
// * g2, quantised per token (int8, package quant's rule; the scale at
// scale_word) or written as float32. It replaces a residual, an rmsnorm
// and a quantize dispatch.
#include "common.wgsl"
#if REGS
#include "rows.wgsl"
#endif

struct PrenormParams {
  cols: u32,       // row width
  one_plus: u32,   // 1: norm weights are used as 1+w (Gemma)
  eps: f32,
  add: u32,        // 1: add b into a first
  post_norm: u32,  // 1: normalise b by g1 before adding it
  scale_word: u32, // int8: word offset of the per-token scales in h
  a_word: u32,     // the residual rows, words into a
  a_out_word: u32, // where a + b goes (add only): the webgpu backend
                   // alternates between two halves of one buffer, as
                   // gemv.wgsl's NORM_IN prologue must
}
@group(0) @binding(1) var<uniform> p: PrenormParams;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read> g1: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read> g2: array<f32>;
@group(0) @binding(6) var<storage, read_write> h: array<u32>;

fn gain1(i: u32) -> f32 {
  return select(g1[i], g1[i] + 1.0, p.one_plus == 1u);
}

fn gain2(i: u32) -> f32 {
  return select(g2[i], g2[i] + 1.0, p.one_plus == 1u);
}

#if REGS
// The REGS variant loads the row once and keeps it in registers (rows.wgsl):
// rows of up to 4*RQ*WG values. Quads past cols read as zero.
fn quad_a(at: u32, q: u32) -> vec4<f32> {
  let c = 4u * q;
  if (c + 4u <= p.cols) {
    return vec4<f32>(a[at + c], a[at + c + 1u], a[at + c + 2u], a[at + c + 3u]);
  }
  var v = vec4<f32>(0.0);
  for (var e = 0u; c + e < p.cols; e++) {
    v[e] = a[at + c + e];
  }
  return v;
}

fn quad_b(at: u32, q: u32) -> vec4<f32> {
  let c = 4u * q;
  if (c + 4u <= p.cols) {
    return vec4<f32>(b[at + c], b[at + c + 1u], b[at + c + 2u], b[at + c + 3u]);
  }
  var v = vec4<f32>(0.0);
  for (var e = 0u; c + e < p.cols; e++) {
    v[e] = b[at + c + e];
  }
  return v;
}

fn gains1(q: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var e = 0u; e < 4u && 4u * q + e < p.cols; e++) {
    v[e] = gain1(4u * q + e);
  }
  return v;
}

fn gains2(q: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var e = 0u; e < 4u && 4u * q + e < p.cols; e++) {
    v[e] = gain2(4u * q + e);
  }
  return v;
}

// put_a stores quad q of the new residual at.
fn put_a(at: u32, q: u32, v: vec4<f32>) {
  for (var e = 0u; e < 4u; e++) {
    if (4u * q + e < p.cols) {
      a[at + 4u * q + e] = v[e];
    }
  }
}

// The loops over the invocation's RQ quads are written out (#unroll):
// every array index is a constant, so the arrays stay in registers.
@compute @workgroup_size({{WG}})
fn prenorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * p.cols;
  let src = p.a_word + base;
  let cur = select(p.a_word, p.a_out_word, p.add == 1u) + base;
  let nq = (p.cols + 3u) / 4u;
  let add = p.add == 1u;
  let post = add && p.post_norm == 1u;
  // Every load up front: one latency for the whole row. Quads past the
  // row stay zero.
  var x: array<vec4<f32>, RQ>;
  var y: array<vec4<f32>, RQ>;
  var g1q: array<vec4<f32>, RQ>;
  var g2q: array<vec4<f32>, RQ>;
#unroll K RQ
  if (li + {{K}} * {{WG}}u < nq) {
    let q = li + {{K}} * {{WG}}u;
    x[{{K}}] = quad_a(src, q);
    g2q[{{K}}] = gains2(q);
    if (add) {
      y[{{K}}] = quad_b(base, q);
    }
    if (post) {
      g1q[{{K}}] = gains1(q);
    }
  }
#end
  if (add) {
    var inv1 = 1.0;
    if (post) {
      var ss = 0.0;
#unroll K RQ
      ss += dot(y[{{K}}], y[{{K}}]);
#end
      inv1 = inv_rms(wg_sum(ss, li), p.cols, p.eps);
    }
#unroll K RQ
    if (li + {{K}} * {{WG}}u < nq) {
      var v = y[{{K}}];
      if (post) {
        v = v * inv1 * g1q[{{K}}];
      }
      x[{{K}}] = x[{{K}}] + v;
      put_a(cur, li + {{K}} * {{WG}}u, x[{{K}}]);
    }
#end
  }
  var ss = 0.0;
#unroll K RQ
  ss += dot(x[{{K}}], x[{{K}}]);
#end
  let inv = inv_rms(wg_sum(ss, li), p.cols, p.eps);
#unroll K RQ
  x[{{K}}] = x[{{K}}] * inv * g2q[{{K}}];
#end
#if INT8
  var m = 0.0;
#unroll K RQ
  m = max(m, max4(abs(x[{{K}}])));
#end
  let scale = quant_scale(wg_max(m, li));
  let words = p.cols / 4u;
#unroll K RQ
  if (li + {{K}} * {{WG}}u < nq) {
    h[row * words + li + {{K}} * {{WG}}u] = quant4(x[{{K}}], scale);
  }
#end
  if (li == 0u) {
    h[p.scale_word + row] = bitcast<u32>(scale);
  }
#else
#unroll K RQ
  for (var e = 0u; e < 4u; e++) {
    let c = 4u * (li + {{K}} * {{WG}}u) + e;
    if (c < p.cols) {
      h[base + c] = bitcast<u32>(x[{{K}}][e]);
    }
  }
#end
#endif
}
#else
// Each invocation owns the same columns in every pass (it rereads what it
// wrote itself, so no barrier is needed between passes beyond the
// reductions'). a_out_word may equal a_word (in place).
@compute @workgroup_size({{WG}})
fn prenorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * p.cols;
  let src = p.a_word + base;
  let cur = select(p.a_word, p.a_out_word, p.add == 1u) + base; // the residual after the add
  if (p.add == 1u) {
    var inv = 1.0;
    if (p.post_norm == 1u) {
      var ss = 0.0;
      for (var i = li; i < p.cols; i += {{WG}}u) {
        ss += b[base + i] * b[base + i];
      }
      inv = inv_rms(wg_sum(ss, li), p.cols, p.eps);
    }
    for (var i = li; i < p.cols; i += {{WG}}u) {
      var v = b[base + i];
      if (p.post_norm == 1u) {
        v = v * inv * gain1(i);
      }
      a[cur + i] = a[src + i] + v;
    }
  }
  var ss = 0.0;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    ss += a[cur + i] * a[cur + i];
  }
  let inv = inv_rms(wg_sum(ss, li), p.cols, p.eps);
#if INT8
  var m = 0.0;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    m = max(m, abs(a[cur + i] * inv * gain2(i)));
  }
  let scale = quant_scale(wg_max(m, li));
  let words = p.cols / 4u;
  for (var i = li; i < words; i += {{WG}}u) {
    let c = 4u * i;
    let q = vec4<i32>(quant_i8(a[cur + c] * inv * gain2(c), scale), quant_i8(a[cur + c + 1u] * inv * gain2(c + 1u), scale),
                      quant_i8(a[cur + c + 2u] * inv * gain2(c + 2u), scale), quant_i8(a[cur + c + 3u] * inv * gain2(c + 3u), scale));
    h[row * words + i] = pack_i8(q);
  }
  if (li == 0u) {
    h[p.scale_word + row] = bitcast<u32>(scale);
  }
#else
  for (var i = li; i < p.cols; i += {{WG}}u) {
    h[base + i] = bitcast<u32>(a[cur + i] * inv * gain2(i));
  }
#endif
}
#endif
