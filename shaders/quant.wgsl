// quant: per-row int8 quantisation (package quant's rule) of activations
// before a W8A8 matmul and of K/V rows into the chunk KV; in float32 mode a
// plain copy into the same layout.
#include "common.wgsl"

struct QuantParams {
  cols: u32,           // values per row
  rows_per_token: u32, // 1 for activations, KV heads for K/V
  dst_word: u32,       // word offset of the values in dst
  scale_word: u32,     // word offset of the per-row scales in dst (int8)
}
@group(0) @binding(1) var<uniform> p: QuantParams;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size({{WG}})
fn quantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n * p.rows_per_token) {
    return;
  }
  let base = row * p.cols;
#if INT8
  var m = 0.0;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    m = max(m, abs(src[base + i]));
  }
  let scale = quant_scale(wg_max(m, li));
  let words = p.cols / 4u;
  for (var i = li; i < words; i += {{WG}}u) {
    let b = base + 4u * i;
    let q = vec4<i32>(quant_i8(src[b], scale), quant_i8(src[b + 1u], scale),
                      quant_i8(src[b + 2u], scale), quant_i8(src[b + 3u], scale));
    dst[p.dst_word + row * words + i] = pack_i8(q);
  }
  if (li == 0u) {
    dst[p.scale_word + row] = bitcast<u32>(scale);
  }
#else
  for (var i = li; i < p.cols; i += {{WG}}u) {
    dst[p.dst_word + base + i] = bitcast<u32>(src[base + i]);
  }
#endif
}
