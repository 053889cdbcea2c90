// gemv: y = W x for the few tokens of a decode step, at the speed of
// streaming W. TPR invocations share a row and each reads 16 bytes of W per
// load (16 int8 values, or 4 float32), so a workgroup covers WG/TPR rows
// and the loads of neighbouring invocations are contiguous. The row's
// partial sums meet in workgroup memory, a tree of log2(TPR) barriers, or
// in the SUBGROUPS variants within subgroups (a butterfly of shuffles, or
// whole subgroups' sums and one barrier). Same parameters and result as
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
//
// The STAGED variants make their input row themselves, in workgroup
// memory, from what the step's previous kernels left (every workgroup
// repeats the same prologue, which saves a dispatch), holding the row in
// registers meanwhile (rows.wgsl; rows of up to 4*RQ*WG values):
// NORM_IN does prenorm.wgsl's work (residual add with the optional
// post-norm of the branch output b, RMSNorm, quantisation) and GATED_IN
// act.wgsl's gated_quant (gate|up row to act(gate)*up, quantised). The
// arithmetic is those kernels', step for step. The first workgroup of each
// token also writes what they would have written: the input row in the
// products' form (h) and, for NORM_IN, the new residual, into the other
// half of a (the residual is read from one half and written to the other:
// rewriting it in place would race with the other workgroups' reads).
// QUANT_IN (int8) only quantises a float32 row that the gated epilogue
// made, with the scale of the row's max |x| that the epilogue left in mx.
//
// The GATED_OUT variant (the gated epilogue) is the gate|up product that
// writes act(gate) * up itself, which saves act.wgsl's gated_quant, a
// one-workgroup dispatch over the whole FFN width: W holds the gate rows
// then the up rows (p.rows of each), and of a workgroup's RPW row slots
// the first half takes gate rows r and the second half up rows p.rows + r,
// so the dot products run as in the plain kernel; the two halves meet in
// workgroup memory and y gets h_r = act(gate_r) * up_r, p.rows values per
// token. In int8 mode the down product needs h quantised by the max |h|
// over the whole row, which spans many workgroups: each reduces its own
// and takes the max into the token's word of mx with one atomicMax (the
// bits of non-negative floats order as the floats do); down's QUANT_IN
// prologue reads it. The word must be 0 before the product runs (the
// engine clears it at the start of every step). The epilogue also takes
// the NORM_IN prologue (int8): gate|up then makes its own input row.
#include "common.wgsl"

#include "matmul_params.wgsl"
#if STAGED
#include "rows.wgsl"
#endif
#if GATED_ACT
#include "activation.wgsl"
#endif
#if GEMV_PARAMS

// GemvParams is MatmulParams followed by the prologue's and the epilogue's
// parameters.
struct GemvParams {
  rows: u32,
  cols: u32,
  w_scale_word: u32,
  x_scale_word: u32,
  out_row: u32,
  out_stride: u32,
  from_first: u32,
  softcap: f32,
  one_plus: u32,     // NORM_IN: norm weights are used as 1+w
  eps: f32,
  add: u32,          // NORM_IN: 1 to add b (normalised by the weights at g1_word when post_norm is 1) into a
  post_norm: u32,
  a_word: u32,       // NORM_IN: the residual rows, words into a
  a_out_word: u32,   // NORM_IN: where the new residual rows go (add only)
  g1_word: u32,      // NORM_IN: post-norm weights, words into g
  g2_word: u32,      // NORM_IN: pre-norm weights
  h_scale_word: u32, // int8: word offset of the per-token scales in h
  max_word: u32,     // GATED_OUT, QUANT_IN (int8): word of the first token's max |h| in mx
  pad1: u32,
  pad2: u32,
}
@group(0) @binding(1) var<uniform> p: GemvParams;
#else
@group(0) @binding(1) var<uniform> p: MatmulParams;
#endif
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
#if STAGED
#if NORM_IN
@group(0) @binding(3) var<storage, read_write> a: array<f32>;
#else
@group(0) @binding(3) var<storage, read> gu: array<f32>; // GATED_IN: gate|up rows; QUANT_IN: the epilogue's h rows
#endif
#else
@group(0) @binding(3) var<storage, read> x: array<vec4<u32>>;
#endif
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#if STAGED
@group(0) @binding(5) var<storage, read_write> h: array<u32>;
#if NORM_IN
@group(0) @binding(6) var<storage, read> b: array<f32>;
@group(0) @binding(7) var<storage, read> g: array<f32>;
#endif
#if QUANT_IN
@group(0) @binding(6) var<storage, read> mx: array<u32>;
#endif
#endif
#if GATED_OUT
#if INT8
// Its own buffer: a binding may not alias y, which is writable too. After
// the norm prologue's bindings where the product has that prologue.
#if NORM_IN
@group(0) @binding(8) var<storage, read_write> mx: array<atomic<u32>>;
#else
@group(0) @binding(5) var<storage, read_write> mx: array<atomic<u32>>;
#endif
#endif
// The dequantised dot products of the workgroup's row slots (gate, then up).
var<workgroup> gv: array<f32, {{RPW}}>;
#endif

const TPR = {{TPR}}u;
const RPW = {{WG}}u / {{TPR}}u;
#if GATED_OUT
const HR = RPW / 2u; // logical rows per workgroup
#endif

#if STAGED
var<workgroup> xs: array<vec4<u32>, {{XV}}>; // the input row (up to XV vectors), in the form x would hold it
#if INT8
const VW = 16u; // values per vector
#else
const VW = 4u;
#endif
var<workgroup> xscale: f32;                  // int8: its scale

// The prologues hold the row in registers (rows.wgsl: the caller makes
// sure that cols <= 4*RQ*WG): invocation li owns input vectors li,
// li + WG, ..., that is VQ quads each, k = j*VQ + e being quad e of its
// j-th vector, so it packs whole vectors itself.
const VQ = VW / 4u;

// quad_at is quad k's index in the row of invocation li.
fn quad_at(li: u32, k: u32) -> u32 {
  return (li + (k / VQ) * {{WG}}u) * VQ + k % VQ;
}

#if INT8
// row_scale is the int8 scale of token t's row x: package quant's, of the
// row's max |x|, which QUANT_IN reads from the epilogue's word, the other
// prologues reduce over the workgroup (each invocation holds a part).
fn row_scale(t: u32, li: u32, x: ptr<function, array<vec4<f32>, RQ>>) -> f32 {
#if QUANT_IN
  return quant_scale(bitcast<f32>(mx[p.max_word + t]));
#else
  var m = 0.0;
#unroll K RQ
  m = max(m, max4(abs((*x)[{{K}}])));
#end
  return quant_scale(wg_max(m, li));
#endif
}
#endif

// put_row stores the row x (scaled, quantised in int8 mode) through put.
fn put_row(t: u32, li: u32, x: ptr<function, array<vec4<f32>, RQ>>, first: bool) {
  let nv = p.cols / VW;
#if INT8
  let scale = row_scale(t, li, x);
#unroll J RV
  if (li + {{J}} * {{WG}}u < nv) {
    let k = {{J}} * VQ;
    put(t, li + {{J}} * {{WG}}u, vec4<u32>(quant4((*x)[k], scale), quant4((*x)[k + 1u], scale), quant4((*x)[k + 2u], scale), quant4((*x)[k + 3u], scale)), first);
  }
#end
  put_scale(t, scale, li, first);
#else
#unroll J RQ
  if (li + {{J}} * {{WG}}u < nv) {
    put(t, li + {{J}} * {{WG}}u, bitcast<vec4<u32>>((*x)[{{J}}]), first);
  }
#end
#endif
  workgroupBarrier();
}

#if NORM_IN
fn gain(at: u32, i: u32) -> f32 {
  return select(g[at + i], g[at + i] + 1.0, p.one_plus == 1u);
}

fn gain4(at: u32, c: u32) -> vec4<f32> {
  return vec4<f32>(gain(at, c), gain(at, c + 1u), gain(at, c + 2u), gain(at, c + 3u));
}

fn stage(t: u32, li: u32, first: bool) {
  let base = t * p.cols;
  let nq = p.cols / 4u;
  let add = p.add == 1u;
  let post = add && p.post_norm == 1u;
  // Every load up front: one latency for the whole row.
  var x: array<vec4<f32>, RQ>;
  var y: array<vec4<f32>, RQ>;
  var g1q: array<vec4<f32>, RQ>;
  var g2q: array<vec4<f32>, RQ>;
#unroll K RQ
  if (quad_at(li, {{K}}) < nq) {
    let c = 4u * quad_at(li, {{K}});
    let s = p.a_word + base + c;
    x[{{K}}] = vec4<f32>(a[s], a[s + 1u], a[s + 2u], a[s + 3u]);
    g2q[{{K}}] = gain4(p.g2_word, c);
    if (add) {
      let d = base + c;
      y[{{K}}] = vec4<f32>(b[d], b[d + 1u], b[d + 2u], b[d + 3u]);
    }
    if (post) {
      g1q[{{K}}] = gain4(p.g1_word, c);
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
    {
      var v = y[{{K}}];
      if (post) {
        v = v * inv1 * g1q[{{K}}];
      }
      x[{{K}}] = x[{{K}}] + v;
      if (first && quad_at(li, {{K}}) < nq) {
        let o = p.a_out_word + base + 4u * quad_at(li, {{K}});
        a[o] = x[{{K}}].x;
        a[o + 1u] = x[{{K}}].y;
        a[o + 2u] = x[{{K}}].z;
        a[o + 3u] = x[{{K}}].w;
      }
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
  put_row(t, li, &x, first);
}
#endif
#if QUANT_IN
// quant_quad quantises the 4 values of h from word d.
fn quant_quad(d: u32, scale: f32) -> u32 {
  return quant4(vec4<f32>(gu[d], gu[d + 1u], gu[d + 2u], gu[d + 3u]), scale);
}

// QUANT_IN knows its scale before it reads the row (the epilogue's max),
// so it quantises each vector as it loads it, holding nothing across a
// reduction: the loop over an invocation's vectors is written out (XVI =
// XV / WG of them, guarded) so that every load is issued before the first
// result is needed, one latency for the row rather than one a vector.
fn stage(t: u32, li: u32, first: bool) {
  let base = t * p.cols;
  let nv = p.cols / 16u;
  let scale = quant_scale(bitcast<f32>(mx[p.max_word + t]));
#unroll J XVI
  if (li + {{J}} * {{WG}}u < nv) {
    let c = base + 16u * (li + {{J}} * {{WG}}u);
    put(t, li + {{J}} * {{WG}}u, vec4<u32>(quant_quad(c, scale), quant_quad(c + 4u, scale), quant_quad(c + 8u, scale), quant_quad(c + 12u, scale)), first);
  }
#end
  put_scale(t, scale, li, first);
  workgroupBarrier();
}
#endif
#if GATED_IN
fn stage(t: u32, li: u32, first: bool) {
  let base = t * 2u * p.cols;
  let nq = p.cols / 4u;
  var x: array<vec4<f32>, RQ>;
  var u: array<vec4<f32>, RQ>;
#unroll K RQ
  if (quad_at(li, {{K}}) < nq) {
    let c = base + 4u * quad_at(li, {{K}});
    x[{{K}}] = vec4<f32>(gu[c], gu[c + 1u], gu[c + 2u], gu[c + 3u]);
    let d = c + p.cols;
    u[{{K}}] = vec4<f32>(gu[d], gu[d + 1u], gu[d + 2u], gu[d + 3u]);
  }
#end
#unroll K RQ
  x[{{K}}] = vec4<f32>(act(x[{{K}}].x), act(x[{{K}}].y), act(x[{{K}}].z), act(x[{{K}}].w)) * u[{{K}}];
#end
  put_row(t, li, &x, first);
}
#endif

// xwords is the words per token of h.
fn xwords() -> u32 {
#if INT8
  return p.cols / 4u;
#else
  return p.cols;
#endif
}

// put stores vector v of token t's input row: in workgroup memory, and by
// the first workgroup in h. Whole vectors: invocations writing parts of
// one vector could race where a store of a vector element rewrites all of it.
fn put(t: u32, v: u32, w4: vec4<u32>, first: bool) {
  xs[v] = w4;
  if (first) {
    let o = t * xwords() + 4u * v;
    h[o] = w4.x;
    h[o + 1u] = w4.y;
    h[o + 2u] = w4.z;
    h[o + 3u] = w4.w;
  }
}

fn put_scale(t: u32, scale: f32, li: u32, first: bool) {
  if (li == 0u) {
    xscale = scale;
    if (first) {
      h[p.h_scale_word + t] = bitcast<u32>(scale);
    }
  }
}

// xin is vector i of token t's input row.
fn xin(t: u32, i: u32) -> vec4<u32> {
  return xs[i];
}

fn x_scale(t: u32) -> f32 {
  return xscale;
}
#else
fn xin(t: u32, i: u32) -> vec4<u32> {
#if INT8
  return x[t * (p.cols / 16u) + i];
#else
  return x[t * (p.cols / 4u) + i];
#endif
}

fn x_scale(t: u32) -> f32 {
  return bitcast<f32>(word(x[(p.x_scale_word + t) / 4u], p.x_scale_word + t));
}
#endif

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

// red_get and red_set reach a row sum's slot in workgroup memory (int32
// in int8 mode, float32 in float32 mode).
#if INT8
fn red_get(i: u32) -> i32 {
  return red_i[i];
}

fn red_set(i: u32, v: i32) {
  red_i[i] = v;
}
#else
fn red_get(i: u32) -> f32 {
  return red_f[i];
}

fn red_set(i: u32, v: f32) {
  red_f[i] = v;
}
#endif

// tree_sum adds the TPR values of each row (invocations li with li / TPR
// its slot, li % TPR its lane) in a tree in workgroup memory; the row's
// first invocation gets the sum. Call in uniform control flow.
#if INT8
fn tree_sum(v: i32, li: u32, lane: u32) -> i32 {
#else
fn tree_sum(v: f32, li: u32, lane: u32) -> f32 {
#endif
  red_set(li, v);
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s = s / 2u) {
    if (lane < s) {
      red_set(li, red_get(li) + red_get(li + s));
    }
    workgroupBarrier();
  }
  return red_get(li);
}

@compute @workgroup_size({{WG}})
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sg_sz: u32,
#endif
        @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  var lane = li % TPR;
  var slot = li / TPR;
#if SUBGROUPS
  // Where every subgroup is full (num_subgroups times subgroup_size is the
  // workgroup: uniform values tell), the invocations take rows in the
  // order of subgroup_id and subgroup_invocation_id, so that a row's TPR
  // invocations are neighbouring lanes of one subgroup (TPR at most the
  // subgroup size) or whole subgroups, and the row's sum needs no
  // workgroup barrier (below). WebGPU promises no layout of
  // invocations into subgroups, and this order assumes none; elsewhere
  // rows go by local_invocation_index and a tree in workgroup memory.
  let full = sg_n * sg_sz == {{WG}}u;
  if (full) {
    let lin = sg_i * sg_sz + sg_l;
    lane = lin % TPR;
    slot = lin / TPR;
  }
#endif
  let wgi = wg_linear(wg, vec3<u32>(nwg.x, nwg.y, 1u));
#if GATED_OUT
  // Logical rows r < p.rows: slot s < HR takes gate row r, slot s + HR up row p.rows + r.
  let r = wgi * HR + slot % HR;
  let valid = r < p.rows;
  let row = r + select(0u, p.rows, slot >= HR);
#else
  let row = wgi * RPW + slot;
  let valid = row < p.rows;
#endif
  let t0 = select(0u, step.first, p.from_first == 1u);
  let t = t0 + wg.z;
  if (t >= step.n) {
    return; // the whole workgroup: barriers below stay uniform
  }
#if STAGED
  stage(t, li, wg.x == 0u && wg.y == 0u);
#endif
#if INT8
  let vecs = p.cols / 16u;
  var acc = 0;
  if (valid) {
    let wb = row * vecs;
#if FMA
    for (var i0 = lane; i0 < vecs; i0 += 64u * TPR) {
      var f = 0.0;
      for (var i = i0; i < min(vecs, i0 + 64u * TPR); i += TPR) {
        f += dot16(w[wb + i], xin(t, i));
      }
      acc += i32(f);
    }
#else
    // Two vectors per iteration: two loads in flight per invocation.
    var acc1 = 0;
    var i = lane;
    for (; i + TPR < vecs; i += 2u * TPR) {
      let a0 = w[wb + i];
      let b0 = xin(t, i);
      let a1 = w[wb + i + TPR];
      let b1 = xin(t, i + TPR);
      acc += dot16_i8(a0, b0);
      acc1 += dot16_i8(a1, b1);
    }
    if (i < vecs) {
      acc += dot16_i8(w[wb + i], xin(t, i));
    }
    acc += acc1;
#endif
  }
#else
  let vecs = p.cols / 4u;
  var acc = 0.0;
  if (valid) {
    let wb = row * vecs;
    for (var i = lane; i < vecs; i += TPR) {
      acc += dot(bitcast<vec4<f32>>(w[wb + i]), bitcast<vec4<f32>>(xin(t, i)));
    }
  }
#endif
  // The row's sum, in its first invocation (lane 0).
  var sum = acc;
#if SUBGROUPS
  if (full) {
    if (TPR <= sg_sz) {
      // A butterfly over the row's lanes: every one ends with the sum.
      for (var s = 1u; s < TPR; s = s * 2u) {
        sum += subgroupShuffleXor(sum, s);
      }
    } else {
      // Whole subgroups a row (TPR a multiple of the subgroup size, both
      // powers of two): each subgroup's sum in its slot, the row's first
      // invocation (its first subgroup's first lane) adds its subgroups'.
      sum = subgroupAdd(sum);
      if (sg_l == 0u) {
        red_set(sg_i, sum);
      }
      workgroupBarrier();
      if (lane == 0u) {
        for (var k = 1u; k < TPR / sg_sz; k++) {
          sum += red_get(sg_i + k);
        }
      }
    }
  } else {
    sum = tree_sum(sum, li, lane);
  }
#else
  sum = tree_sum(sum, li, lane);
#endif
  if (lane == 0u && valid) {
#if INT8
    let ws = bitcast<f32>(word(w[(p.w_scale_word + row) / 4u], p.w_scale_word + row));
    var v = f32(sum) * (x_scale(t) * ws);
#else
    var v = sum;
#endif
    if (p.softcap > 0.0) {
      v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
    }
#if GATED_OUT
    gv[slot] = v;
#else
    y[(t - t0) * p.out_stride + p.out_row + row] = v;
#endif
  }
#if GATED_OUT
  workgroupBarrier();
  let hr = wgi * HR + li;
  var hm = 0.0;
  if (li < HR && hr < p.rows) {
    let hv = act(gv[li]) * gv[li + HR];
    y[(t - t0) * p.out_stride + p.out_row + hr] = hv;
    hm = abs(hv);
  }
#if INT8
  let m = wg_max(hm, li);
  if (li == 0u) {
    atomicMax(&mx[p.max_word + t], bitcast<u32>(m));
  }
#endif
#endif
}
