// rope: prepares query or key heads in place: the optional QK-norm
// (RMSNorm over each head row), then RoPE from the cos|sin table that the
// host computes in float64 (model.RopeCosSin): no GPU trigonometry.
#include "common.wgsl"

struct RopeParams {
  heads: u32,    // head rows per token
  head_dim: u32, // values per head row
  norm: u32,     // 1: RMSNorm each head row first
  one_plus: u32, // 1: the norm weight is used as 1+w
  eps: f32,
  table: u32,    // first float of this layer kind's table in cs: [token][cos half | sin half]
  pad0: u32,
  pad1: u32,
}
@group(0) @binding(1) var<uniform> p: RopeParams;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read> cs: array<f32>;

// headprep runs one workgroup per (head, token): x = wg.x, y = wg.y.
@compute @workgroup_size({{WG}})
fn headprep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let t = wg.y;
  if (t >= step.n) {
    return;
  }
  let hd = p.head_dim;
  let half = hd / 2u;
  let base = (t * p.heads + wg.x) * hd;
  var inv = 1.0;
  if (p.norm == 1u) {
    var ss = 0.0;
    for (var i = li; i < hd; i += {{WG}}u) {
      ss += x[base + i] * x[base + i];
    }
    inv = inv_rms(wg_sum(ss, li), hd, p.eps);
  }
  let tab = p.table + t * hd;
  for (var i = li; i < half; i += {{WG}}u) {
    var a = x[base + i];
    var b = x[base + i + half];
    if (p.norm == 1u) {
      a = a * inv * select(g[i], g[i] + 1.0, p.one_plus == 1u);
      b = b * inv * select(g[i + half], g[i + half] + 1.0, p.one_plus == 1u);
    }
    let c = cs[tab + i];
    let s = cs[tab + half + i];
    x[base + i] = a * c - b * s;
    x[base + i + half] = b * c + a * s;
  }
}

// qkv_prep prepares the fused Q|K|V product of a step for attention, in
// one dispatch: a token row of x holds its query heads, then (on layers
// that produce KV) its K heads and V heads, stride floats apart. Query
// heads get the QK-norm and RoPE and go to qo, [token][head][head_dim];
// K heads get the QK-norm and RoPE in place, then like V heads are
// quantised per (token, KV head) into the chunk KV (int8, package quant's
// rule; a copy in float32 mode). One workgroup per (head row, token):
// x = wg.x over query, K, then V heads, y = wg.y.
struct QKVParams {
  heads: u32,    // query heads
  kv_heads: u32, // K/V heads (0 where the layer reads another's KV: only x = query heads run)
  head_dim: u32,
  stride: u32,   // floats per token row of x
  norm: u32,     // 1: QK-norm, weights at q_norm and k_norm (words into g)
  one_plus: u32, // 1: norm weights are used as 1+w
  eps: f32,
  table: u32,    // first float of this layer kind's RoPE table in cs
  q_norm: u32,
  k_norm: u32,
  k_word: u32,   // chunk KV, words into dst: K values, K scales, V values, V scales
  ks_word: u32,
  v_word: u32,
  vs_word: u32,
  bias: u32,      // 1: add the projection's bias first, stride floats at bias_word (words into g)
  bias_word: u32,
  rot_half: u32,  // rotated pairs per head, (i, i+rot_half); dims from 2*rot_half on are only normed
  pad0: u32,
  pad1: u32,
  pad2: u32,
}
@group(0) @binding(1) var<uniform> qp: QKVParams;
@group(0) @binding(5) var<storage, read_write> qo: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size({{WG}})
fn qkv_prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let t = wg.y;
  if (t >= step.n) {
    return;
  }
  let hd = qp.head_dim;
  let half = hd / 2u;
  let r = wg.x;
  let base = t * qp.stride + r * hd;
  let is_k = r >= qp.heads;
  if (qp.bias == 1u) {
    // Each invocation adds to values the norm and RoPE loops below read
    // across the workgroup: the barrier publishes them.
    for (var i = li; i < hd; i += {{WG}}u) {
      x[base + i] += g[qp.bias_word + r * hd + i];
    }
    storageBarrier();
  }
  if (r < qp.heads + qp.kv_heads) {
    var inv = 1.0;
    let gw = select(qp.q_norm, qp.k_norm, is_k);
    if (qp.norm == 1u) {
      var ss = 0.0;
      for (var i = li; i < hd; i += {{WG}}u) {
        ss += x[base + i] * x[base + i];
      }
      inv = inv_rms(wg_sum(ss, li), hd, qp.eps);
    }
    let tab = qp.table + t * hd;
    let rh = qp.rot_half;
    // Invocation i handles one rotated pair (i, i+rh), or past rh two of
    // the unrotated dimensions: each dimension once either way.
    for (var i = li; i < half; i += {{WG}}u) {
      var ia = i;
      var ib = i + rh;
      if (i >= rh) {
        ia = 2u * i;
        ib = ia + 1u;
      }
      var a = x[base + ia];
      var b = x[base + ib];
      if (qp.norm == 1u) {
        a = a * inv * select(g[gw + ia], g[gw + ia] + 1.0, qp.one_plus == 1u);
        b = b * inv * select(g[gw + ib], g[gw + ib] + 1.0, qp.one_plus == 1u);
      }
      var ra = a;
      var rb = b;
      if (i < rh) {
        let c = cs[tab + i];
        let s = cs[tab + rh + i];
        ra = a * c - b * s;
        rb = b * c + a * s;
      }
      if (is_k) {
        x[base + ia] = ra;
        x[base + ib] = rb;
      } else {
        let o = (t * qp.heads + r) * hd;
        qo[o + ia] = ra;
        qo[o + ib] = rb;
      }
    }
  }
  if (!is_k) {
    return; // query heads are done; the rest of the workgroup is K or V
  }
  // K (roped in place above: a barrier makes it visible) and V rows.
  storageBarrier();
  let is_v = r >= qp.heads + qp.kv_heads;
  let row = t * qp.kv_heads + (r - qp.heads) % qp.kv_heads;
#if INT8
  var m = 0.0;
  for (var i = li; i < hd; i += {{WG}}u) {
    m = max(m, abs(x[base + i]));
  }
  let scale = quant_scale(wg_max(m, li));
  let words = hd / 4u;
  let vals = select(qp.k_word, qp.v_word, is_v) + row * words;
  for (var i = li; i < words; i += {{WG}}u) {
    let b = base + 4u * i;
    let q = vec4<i32>(quant_i8(x[b], scale), quant_i8(x[b + 1u], scale),
                      quant_i8(x[b + 2u], scale), quant_i8(x[b + 3u], scale));
    dst[vals + i] = pack_i8(q);
  }
  if (li == 0u) {
    dst[select(qp.ks_word, qp.vs_word, is_v) + row] = bitcast<u32>(scale);
  }
#else
  let vals = select(qp.k_word, qp.v_word, is_v) + row * hd;
  for (var i = li; i < hd; i += {{WG}}u) {
    dst[vals + i] = bitcast<u32>(x[base + i]);
  }
#endif
}
