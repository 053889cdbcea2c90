// sample: picks the next token on the GPU, so that its id can feed the next
// step's embedding gather without a round trip. argmax: the first index of
// the largest logit of the step's last token.
#include "common.wgsl"

struct ArgmaxParams {
  cols: u32,     // vocabulary size
  out_word: u32, // where the id goes in out
  pad0: u32,
  pad1: u32,
}
@group(0) @binding(1) var<uniform> p: ArgmaxParams;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, {{WG}}>;
var<workgroup> best_i: array<u32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn argmax(@builtin(local_invocation_index) li: u32) {
  // The logits rows hold tokens step.first..; the last token's is the last.
  let base = (step.n - 1u - step.first) * p.cols;
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    let v = logits[base + i];
    if (v > bv) { // increasing i: ties keep the first
      bv = v;
      bi = i;
    }
  }
  best_v[li] = bv;
  best_i[li] = bi;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (li < s) {
      let v = best_v[li + s];
      let i = best_i[li + s];
      if (v > best_v[li] || (v == best_v[li] && i < best_i[li])) {
        best_v[li] = v;
        best_i[li] = i;
      }
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    out[p.out_word] = best_i[0];
  }
}
