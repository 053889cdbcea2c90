// prenorm: the residual add that closes one block and the pre-norm that
// opens the next, in one pass over each token row: a += b (b normalised by
// g1 first when post_norm is 1; no add when add is 0), then h = RMSNorm(a)
// * g2, quantised per token (int8, package quant's rule; the scale at
// scale_word) or written as float32. It replaces a residual, an rmsnorm
// and a quantize dispatch.
#include "common.wgsl"

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

// finish writes h from the new residual a[cur..] (as both forms leave it)
// and inv, its 1/rms: int8 quantised by the scale of m, the row's max |h|;
// float32 as it is. An invocation packs whole words, whose values other
// invocations' passes wrote.
fn finish(row: u32, base: u32, cur: u32, inv: f32, m: f32, li: u32) {
#if INT8
  // Other invocations wrote most of the columns a word packs, and the
  // reductions' workgroupBarriers order workgroup memory only. (Packing
  // the words in workgroup memory from the registers instead, each
  // invocation or-ing its bytes in, measured 2-3% slower decode on the
  // H200: bench/BROWSER.md.)
  storageBarrier();
  let scale = quant_scale(m);
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

#if REGS
const RS = {{RS}}u; // values an invocation holds

// The REGS variant loads the row once, up front (one latency for the
// row), and keeps it in registers through the reductions: RS values an
// invocation, rows of up to RS*WG. Invocation li holds columns li, li +
// WG, ..., the columns the rereading form gives it, and adds them in that
// order with the same expressions, so every sum, the residual and h are
// bit for bit that form's (a register form holding quads summed them in
// another order, which moved a seeded sampled stream). Only finish
// rereads the row: its words span invocations. The loops over the
// invocation's values are written out (#unroll) so that every array index
// is a constant and the arrays stay in registers.
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
  let add = p.add == 1u;
  let post = add && p.post_norm == 1u;
  var x: array<f32, RS>;
  var y: array<f32, RS>;
  var g1v: array<f32, RS>;
  var g2v: array<f32, RS>;
#unroll J RS
  if (li + {{J}} * {{WG}}u < p.cols) {
    let c = li + {{J}} * {{WG}}u;
    x[{{J}}] = a[src + c];
    g2v[{{J}}] = gain2(c);
    if (add) {
      y[{{J}}] = b[base + c];
    }
    if (post) {
      g1v[{{J}}] = gain1(c);
    }
  }
#end
  if (add) {
    var inv1 = 1.0;
    if (post) {
      var ss = 0.0;
#unroll J RS
      if (li + {{J}} * {{WG}}u < p.cols) {
        ss += y[{{J}}] * y[{{J}}];
      }
#end
      inv1 = inv_rms(wg_sum(ss, li), p.cols, p.eps);
    }
#unroll J RS
    if (li + {{J}} * {{WG}}u < p.cols) {
      var v = y[{{J}}];
      if (post) {
        v = v * inv1 * g1v[{{J}}];
      }
      x[{{J}}] = x[{{J}}] + v;
      a[cur + li + {{J}} * {{WG}}u] = x[{{J}}];
    }
#end
  }
  var ss = 0.0;
#unroll J RS
  if (li + {{J}} * {{WG}}u < p.cols) {
    ss += x[{{J}}] * x[{{J}}];
  }
#end
  let inv = inv_rms(wg_sum(ss, li), p.cols, p.eps);
  var m = 0.0;
#if INT8
#unroll J RS
  if (li + {{J}} * {{WG}}u < p.cols) {
    m = max(m, abs(x[{{J}}] * inv * g2v[{{J}}]));
  }
#end
  m = wg_max(m, li);
#endif
  finish(row, base, cur, inv, m, li);
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
  var m = 0.0;
#if INT8
  for (var i = li; i < p.cols; i += {{WG}}u) {
    m = max(m, abs(a[cur + i] * inv * gain2(i)));
  }
  m = wg_max(m, li);
#endif
  finish(row, base, cur, inv, m, li);
}
#endif
