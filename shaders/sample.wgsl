// sample: picks the next token on the GPU, so that its id can feed the next
// step's embedding gather without a round trip. argmax: the first index of
// the largest logit of the step's last token, by one workgroup.
// argmax_part and argmax_merge take it in two dispatches that keep the GPU
// busy over a large vocabulary: a workgroup per block of logits writes its
// best (value, index) pair into out, then one workgroup merges the pairs,
// bound as logits, into out[out_word] of its own binding.
#include "common.wgsl"

struct ArgmaxParams {
  cols: u32,     // vocabulary size
  out_word: u32, // where the id goes in out
  block: u32,    // argmax_part, argmax_merge: logits per workgroup of argmax_part
  pad1: u32,
}
@group(0) @binding(1) var<uniform> p: ArgmaxParams;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, {{WG}}>;
var<workgroup> best_i: array<u32, {{WG}}>;

// pick_best reduces each invocation's (bv, bi) over the workgroup into
// best_v[0], best_i[0]: the largest value, the lowest index among equals.
fn pick_best(bv: f32, bi: u32, li: u32) {
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
}

// last_row is the offset of the step's last token's logits: the logits
// rows hold tokens step.first.., so the last token's is the last.
fn last_row() -> u32 {
  return (step.n - 1u - step.first) * p.cols;
}

@compute @workgroup_size({{WG}})
fn argmax(@builtin(local_invocation_index) li: u32) {
  let base = last_row();
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = li; i < p.cols; i += {{WG}}u) {
    let v = logits[base + i];
    if (v > bv) { // increasing i: ties keep the first
      bv = v;
      bi = i;
    }
  }
  pick_best(bv, bi, li);
  if (li == 0u) {
    out[p.out_word] = best_i[0];
  }
}

@compute @workgroup_size({{WG}})
fn argmax_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let base = last_row();
  let lo = wg.x * p.block;
  let hi = min(p.cols, lo + p.block);
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = lo + li; i < hi; i += {{WG}}u) {
    let v = logits[base + i];
    if (v > bv) {
      bv = v;
      bi = i;
    }
  }
  pick_best(bv, bi, li);
  if (li == 0u) {
    out[2u * wg.x] = bitcast<u32>(best_v[0]);
    out[2u * wg.x + 1u] = best_i[0];
  }
}

@compute @workgroup_size({{WG}})
fn argmax_merge(@builtin(local_invocation_index) li: u32) {
  // The min never binds (parts < 65535): reading step keeps the Step block
  // in this entry's layout, which every site binds at @binding(0).
  let parts = min((p.cols + p.block - 1u) / p.block, max(step.n, 1u) * 0xffffu);
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = li; i < parts; i += {{WG}}u) {
    let v = logits[2u * i];
    let j = bitcast<u32>(logits[2u * i + 1u]);
    if (v > bv || (v == bv && j < bi)) {
      bv = v;
      bi = j;
    }
  }
  pick_best(bv, bi, li);
  if (li == 0u) {
    out[p.out_word] = best_i[0];
  }
}
