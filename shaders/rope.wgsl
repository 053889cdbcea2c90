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
fn headprep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
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
