// embed: gathers the embedding rows of the step's tokens, dequantised and
// scaled. A matrix split by rows over several buffers is gathered by one
// dispatch per part; each writes only the tokens whose rows it holds.
#include "common.wgsl"

struct EmbedParams {
  cols: u32,       // hidden width
  row_lo: u32,     // first row held by this part
  rows: u32,       // rows held by this part
  scale_word: u32, // word offset of the per-row scales in w (int8)
  scale: f32,      // the model's embedding multiplier
  pad0: u32,
  pad1: u32,
  pad2: u32,
}
@group(0) @binding(1) var<uniform> p: EmbedParams;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size({{WG}})
fn embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = wg.x;
  if (t >= step.n) {
    return;
  }
  let id = ids[t];
  if (id < p.row_lo || id >= p.row_lo + p.rows) {
    return;
  }
  let r = id - p.row_lo;
  let out = t * p.cols;
#if INT8
  let s = bitcast<f32>(w[p.scale_word + r]);
  let words = p.cols / 4u;
  for (var i = li; i < words; i += {{WG}}u) {
    let q = unpack_i8(w[r * words + i]);
    x[out + 4u * i] = f32(q.x) * s * p.scale;
    x[out + 4u * i + 1u] = f32(q.y) * s * p.scale;
    x[out + 4u * i + 2u] = f32(q.z) * s * p.scale;
    x[out + 4u * i + 3u] = f32(q.w) * s * p.scale;
  }
#else
  for (var i = li; i < p.cols; i += {{WG}}u) {
    x[out + i] = bitcast<f32>(w[r * p.cols + i]) * p.scale;
  }
#endif
}
