// sampling: picks the next token on the GPU as engine/sample's Sampler
// picks it from the same logits: repetition penalty over a history of ids,
// temperature, top-k, top-p, then one draw from a counter-based hash of
// the seed and the sampler's step. The id goes where the next step's
// embedding gather reads it and onto the history, and the step counter
// advances, so steps run back to back with nothing read back.
//
// Entry points, dispatched in order with nothing read back between. The
// _part kernels run a workgroup per RUN ids and leave per-workgroup
// results in sel (prep_part, draw_part) or add them into mass
// (mass_part*); the one workgroup after prep_part and draw_part merges
// their parts in workgroup order, so that every walk "in ascending id
// order" of engine/sample is a walk over parts, then invocations, then ids:
//   prep_part, prep_merge: steps 1-3;
//   top-p only: mass_part0..3, one per digit (8 bits of the key): the kept
//     mass per bin of the digit among ids that match the digits fixed so
//     far; each workgroup of the next kernel first fixes the digit before
//     its own from those masses (fix_digit: every workgroup alike, the
//     first also leaving it in sel for the kernels after);
//   draw_part, draw_pick: the last digit (draw_part), the ties at the cut
//     and step 5.
// A sampled step with top-p is 2 + 4 + 2 = 8 dispatches; without top-p
// 4; at temperature 0, 2 (prep_merge picks). Top-k's radix select still
// walks the vocabulary in prep_merge's one workgroup (only when top-k is
// on).
//   1. x = the last token's logits, NaN as -inf and +inf as the largest
//      float; penalised ids are rewritten from the history (each write
//      computes from the logit, so a repeated id is penalised once);
//   2. the argmax (temperature 0 ends here) and the largest logit;
//   3. top-k: the k-th largest key by a radix select (4 passes of 8 bits),
//      equal keys kept lowest id first;
//   4. p = exp((x - max) / T) in float32; top-p: the smallest key whose
//      strictly better mass stays below top_p times the kept mass, by
//      radix select over keys, and how many of its ties fit;
//   5. the draw: u = Uniform(seed, step); the first kept id, walked by id,
//      where the running sum of p passes u times the kept total.
// engine/sample sums in float64, this in float32 (the top-p masses exactly,
// in fixed point, then in float32 over bins): a pick can differ where
// u * total (or top_p * total) falls within float32 rounding of a boundary
// (see engine/webgpu's sampling test for how often).
#include "common.wgsl"

struct SampleParams {
  cols: u32,      // vocabulary size
  out_word: u32,  // where the id goes in ids
  top_k: u32,     // 0: off
  hist_cap: u32,  // ids the history holds
  inv_t: f32,     // 1 / temperature; 0: greedy
  top_p: f32,     // in (0, 1), else off
  penalty: f32,   // repetition penalty; 0 or 1: off
  seed_hash: u32, // pcg(pcg(seed_lo) + seed_hi): the seed's part of sample.Hash
}
@group(0) @binding(1) var<uniform> p: SampleParams;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
// state: [0] the sampler's step, [1] history length n, [2..2+n) the history.
@group(0) @binding(4) var<storage, read_write> state: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
// sel carries a pick's state from kernel to kernel: the words below, then
// from SEL_PARTS the _part kernels' results, 2 per prep_part or draw_part
// workgroup.
@group(0) @binding(6) var<storage, read_write> sel: array<u32>;
// mass holds the top-p search's masses: for each digit and bin, the kept
// p of the ids in it, in fixed point (units of 2^-40, low word then high
// word). WGSL has no float atomics, and sums must not depend on timing:
// integer sums are exact in any order. prep_merge zeroes it.
@group(0) @binding(7) var<storage, read_write> mass: array<atomic<u32>>;

const SEL_DONE = 0u;   // 1: prepare made the pick (greedy, or every logit -inf)
const SEL_MAX = 1u;    // the largest logit (f32 bits)
const SEL_KTH = 2u;    // top-k's k-th largest key (0: top-k off)
const SEL_KTH_ID = 3u; // the last id kept among those with key kth
const SEL_TOTAL = 4u;  // the kept mass (f32 bits), once digit 0 is fixed
// SEL_SLOT + 2k, + 2k + 1: the top-p digits fixed before digit k, in
// place, and the kept mass of keys above their range (f32 bits); k 0 is
// prep_merge's, k 1..3 the first workgroup's of mass_part k, k 4 (the cut)
// draw_part's.
const SEL_SLOT = 8u;
const SEL_PREFIX = 16u; // slot 4: the cut's key
const SEL_ABOVE = 17u;  // the kept mass of keys above the cut
const SEL_PARTS = 32u;
// RUN is the ids of one _part workgroup (engine/webgpu's samplingRun), 16
// per invocation: a CPU adapter (lavapipe) runs workgroups one after
// another and pays for each one's barriers, so these one-pass kernels take
// few, wide workgroups (64 for 262,144 ids).
const RUN = 16u * {{WG}}u;

// red_f (common.wgsl) and red_u carry per-invocation values.
var<workgroup> red_u: array<u32, {{WG}}>;
var<workgroup> bins: array<atomic<u32>, 256>;
var<workgroup> bins_hi: array<atomic<u32>, 256>;
var<workgroup> wg_f: f32;
var<workgroup> wg_u: u32;
var<workgroup> wg_v: u32;
var<workgroup> wg_goal: f32;
var<workgroup> run_s: array<f32, 256>;
var<workgroup> run_t: array<u32, 256>;
var<workgroup> wg_keep: u32;
var<workgroup> bin_f: array<f32, 256>;
var<workgroup> group_f: array<f32, 16>;
// prep_part: a bit per id of the run (RUN = 16 * WG ids in WG words: room
// for twice as many), set for the history's ids.
var<workgroup> pen_bits: array<atomic<u32>, {{WG}}>;

const NEG_INF = 0xff800000u; // -inf's bits

// from_bits is the float of bits b, made at run time: WGSL's constant
// expressions hold finite values only (Tint rejects bitcast<f32>(NEG_INF):
// "value -inf cannot be represented as 'f32'"), and a parameter is never a
// constant expression, so from_bits(NEG_INF) is -inf in every compiler.
fn from_bits(b: u32) -> f32 {
  return bitcast<f32>(b);
}

fn clean(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    return from_bits(NEG_INF);
  }
  if (b == 0x7f800000u) {
    return bitcast<f32>(0x7f7fffffu);
  }
  return v;
}

fn is_neg_inf(v: f32) -> bool {
  return bitcast<u32>(v) == NEG_INF;
}

// key orders floats as unsigned integers: a larger float, a larger key;
// -0 and +0 are one key, as they compare equal.
fn key(v: f32) -> u32 {
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) {
    b = 0u;
  }
  if ((b & 0x80000000u) != 0u) {
    return ~b;
  }
  return b | 0x80000000u;
}

// unkey is the float of a key.
fn unkey(k: u32) -> f32 {
  if ((k & 0x80000000u) != 0u) {
    return bitcast<f32>(k & 0x7fffffffu);
  }
  return bitcast<f32>(~k);
}

fn pcg(v: u32) -> u32 {
  let h = v * 747796405u + 2891336453u;
  let word = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (word >> 22u) ^ word;
}

// prob is p of id i: exp((x - mx) / T), 0 for -inf.
fn prob(v: f32, mx: f32) -> f32 {
  if (is_neg_inf(v)) {
    return 0.0;
  }
  return exp((v - mx) * p.inv_t);
}

// sum_all is the workgroup's sum of v, the same in every invocation.
fn sum_all(v: f32, li: u32) -> f32 {
  red_f[li] = v;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      red_f[li] += red_f[li + s];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    wg_f = red_f[0];
  }
  return workgroupUniformLoad(&wg_f);
}

// scan_u replaces red_u[t] by the sum of red_u over invocations before t.
fn scan_u(v: u32, li: u32) -> u32 {
  red_u[li] = v;
  workgroupBarrier();
  if (li == 0u) {
    var acc = 0u;
    for (var t = 0u; t < {{WG}}u; t++) {
      let c = red_u[t];
      red_u[t] = acc;
      acc += c;
    }
  }
  workgroupBarrier();
  let r = red_u[li];
  workgroupBarrier();
  return r;
}

// kept is whether top-k keeps id i of key kk: keys above the k-th, and of
// its ties the lowest ids up to kth_id.
fn kept(kk: u32, i: u32, kth: u32, kth_id: u32) -> bool {
  return kk > kth || (kk == kth && i <= kth_id);
}

// prep_part: steps 1 and 2 over RUN ids: the cleaned and penalised logits
// into x, and the workgroup's argmax (lowest id among equals) into its two
// words of sel. Invocation li reads ids li, li + WG, ... of the run, so
// that neighbours read neighbours (the argmax breaks ties by id, so the
// order of the walk does not matter).
@compute @workgroup_size({{WG}})
fn prep_part(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let cols = p.cols;
  let lo = wid.x * RUN;
  let hi = min(lo + RUN, cols);
  // The logits rows hold tokens step.first..; the last token's is the last.
  let base = (step.n - 1u - step.first) * cols;

  // 1. Cleaned and penalised logits. The history's ids in the run are
  // marked in workgroup memory first, so that each id's one writer is the
  // invocation that owns it (an id the history holds twice had two
  // writers of x when the history's walkers wrote it), and reads it back
  // below itself.
  let pen = p.penalty;
  let penalise = pen != 0.0 && pen != 1.0;
  if (penalise) {
    atomicStore(&pen_bits[li], 0u); // a word an invocation
    workgroupBarrier();
    let n_hist = min(state[1], p.hist_cap);
    for (var j = li; j < n_hist; j += {{WG}}u) {
      let id = state[2u + j];
      if (id >= lo && id < hi) {
        atomicOr(&pen_bits[(id - lo) / 32u], 1u << ((id - lo) % 32u));
      }
    }
    workgroupBarrier();
  }
  for (var i = lo + li; i < hi; i += {{WG}}u) {
    var v = clean(logits[base + i]);
    if (penalise && (atomicLoad(&pen_bits[(i - lo) / 32u]) & (1u << ((i - lo) % 32u))) != 0u) {
      if (v < 0.0) {
        v = v * pen;
      } else {
        v = v / pen;
      }
    }
    x[i] = v;
  }

  // 2. The workgroup's argmax.
  var bv = from_bits(NEG_INF);
  var bi = 0xffffffffu;
  for (var i = lo + li; i < hi; i += {{WG}}u) {
    let v = x[i];
    if (bi == 0xffffffffu || v > bv) {
      bv = v;
      bi = i;
    }
  }
  arg_max(bv, bi, li);
  if (li == 0u) {
    sel[SEL_PARTS + 2u * wid.x] = bitcast<u32>(red_f[0]);
    sel[SEL_PARTS + 2u * wid.x + 1u] = red_u[0];
  }
}

// arg_max leaves in red_f[0] and red_u[0] the largest v of the workgroup
// and, among equals, the lowest id (0xffffffff: none).
fn arg_max(v: f32, id: u32, li: u32) {
  red_f[li] = v;
  red_u[li] = id;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ov = red_f[li + s];
      let oi = red_u[li + s];
      if (oi != 0xffffffffu && (red_u[li] == 0xffffffffu || ov > red_f[li] || (ov == red_f[li] && oi < red_u[li]))) {
        red_f[li] = ov;
        red_u[li] = oi;
      }
    }
    workgroupBarrier();
  }
}

// prep_merge: the argmax over prep_part's workgroups (temperature 0, or
// every logit -inf, picks here), then step 3, and sel's state for the
// kernels after it.
@compute @workgroup_size({{WG}})
fn prep_merge(@builtin(local_invocation_index) li: u32) {
  let cols = p.cols;
  let parts = (cols + RUN - 1u) / RUN;
  var bv = from_bits(NEG_INF);
  var bi = 0xffffffffu;
  for (var w = li; w < parts; w += {{WG}}u) {
    let v = bitcast<f32>(sel[SEL_PARTS + 2u * w]);
    let i = sel[SEL_PARTS + 2u * w + 1u];
    if (i != 0xffffffffu && (bi == 0xffffffffu || v > bv || (v == bv && i < bi))) {
      bv = v;
      bi = i;
    }
  }
  arg_max(bv, bi, li);
  if (li == 0u) {
    wg_u = red_u[0];
    wg_f = red_f[0];
  }
  let best = workgroupUniformLoad(&wg_u);
  let mx = workgroupUniformLoad(&wg_f);
  if (p.inv_t == 0.0 || is_neg_inf(mx)) {
    if (li == 0u) {
      var pick = best;
      if (p.inv_t != 0.0) {
        pick = 0u; // every logit -inf: engine/sample gives 0
      }
      finish(pick);
      sel[SEL_DONE] = 1u;
    }
    return;
  }
  let run = (cols + {{WG}}u - 1u) / {{WG}}u;
  let lo = min(li * run, cols);
  let hi = min(lo + run, cols);

  // 3. Top-k: kth is the k-th largest key; of the ids with that key, the
  // need lowest are kept, up to kth_id.
  let top_k = p.top_k > 0u && p.top_k < cols;
  var kth = 0u;
  var kth_id = 0xffffffffu;
  if (top_k) {
    var prefix = 0u;
    var mask = 0u;
    var need = p.top_k;
    for (var digit = 0u; digit < 4u; digit++) {
      let shift = 24u - 8u * digit;
      for (var b = li; b < 256u; b += {{WG}}u) {
        atomicStore(&bins[b], 0u);
      }
      workgroupBarrier();
      for (var i = lo; i < hi; i++) {
        let kk = key(x[i]);
        if ((kk & mask) == prefix) {
          atomicAdd(&bins[(kk >> shift) & 255u], 1u);
        }
      }
      workgroupBarrier();
      if (li == 0u) {
        var acc = 0u;
        var b = 255u;
        loop {
          let c = atomicLoad(&bins[b]);
          if (acc + c >= need || b == 0u) {
            break;
          }
          acc += c;
          b--;
        }
        wg_u = prefix | (b << shift);
        wg_v = need - acc;
      }
      prefix = workgroupUniformLoad(&wg_u);
      need = workgroupUniformLoad(&wg_v);
      mask |= 255u << shift;
    }
    kth = prefix;
    var ties = 0u;
    for (var i = lo; i < hi; i++) {
      if (key(x[i]) == kth) {
        ties++;
      }
    }
    let k_rank = scan_u(ties, li); // ties at kth before this run
    if (k_rank < need && need <= k_rank + ties) {
      var r = k_rank;
      for (var i = lo; i < hi; i++) {
        if (key(x[i]) == kth) {
          r++;
          if (r == need) {
            wg_u = i;
            break;
          }
        }
      }
    }
    kth_id = workgroupUniformLoad(&wg_u);
  }

  // The top-p search's masses start from 0 (mass_part adds to them).
  for (var w = li; w < 4u * 256u * 2u; w += {{WG}}u) {
    atomicStore(&mass[w], 0u);
  }
  if (li == 0u) {
    sel[SEL_DONE] = 0u;
    sel[SEL_MAX] = bitcast<u32>(mx);
    sel[SEL_KTH] = kth;
    sel[SEL_KTH_ID] = kth_id;
    sel[SEL_TOTAL] = 0u; // fixing digit 0 sums it (top-p alone needs it)
    sel[SEL_SLOT] = 0u;      // no digit fixed
    sel[SEL_SLOT + 1u] = 0u; // 0.0
  }
}

// mass_part0..3: the top-p search's pass for digit k over RUN ids (the
// digits before it fixed first, fix_digit): the kept ids whose key
// matches them add their p, in fixed point, to their bin of digit k in
// mass. Every sum is of integers, so no order of the atomic adds changes
// it, and the search fixes the same cut on every device and tier.
@compute @workgroup_size({{WG}})
fn mass_part0(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  mass_of(0u, li, wid.x);
}

@compute @workgroup_size({{WG}})
fn mass_part1(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  mass_of(1u, li, wid.x);
}

@compute @workgroup_size({{WG}})
fn mass_part2(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  mass_of(2u, li, wid.x);
}

@compute @workgroup_size({{WG}})
fn mass_part3(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  mass_of(3u, li, wid.x);
}

fn mass_of(k: u32, li: u32, w: u32) {
  if (li == 0u) {
    wg_u = sel[SEL_DONE];
  }
  if (workgroupUniformLoad(&wg_u) != 0u) {
    return;
  }
  var prefix = 0u;
  if (k > 0u) {
    prefix = fix_digit(k - 1u, li, w == 0u);
  }
  let mx = bitcast<f32>(sel[SEL_MAX]);
  let kth = sel[SEL_KTH];
  let kth_id = sel[SEL_KTH_ID];
  var mask = 0u;
  for (var d = 0u; d < k; d++) {
    mask |= 255u << (24u - 8u * d);
  }
  let shift = 24u - 8u * k;
  for (var b = li; b < 256u; b += {{WG}}u) {
    atomicStore(&bins[b], 0u);
    atomicStore(&bins_hi[b], 0u);
  }
  workgroupBarrier();
  let lo = w * RUN;
  let hi = min(lo + RUN, p.cols);
  for (var i = lo + li; i < hi; i += {{WG}}u) {
    let v = x[i];
    let kk = key(v);
    if ((kk & mask) == prefix && kept(kk, i, kth, kth_id)) {
      let f = fixed(prob(v, mx));
      let b = (kk >> shift) & 255u;
      // The carry out of the low word: the words hold the exact sum of
      // every add, whatever their order.
      let old = atomicAdd(&bins[b], f.y);
      let hw = f.x + select(0u, 1u, old + f.y < old);
      if (hw != 0u) {
        atomicAdd(&bins_hi[b], hw);
      }
    }
  }
  workgroupBarrier();
  for (var b = li; b < 256u; b += {{WG}}u) {
    let lw = atomicLoad(&bins[b]);
    let hw = atomicLoad(&bins_hi[b]);
    if ((lw | hw) != 0u) {
      let at = 2u * (256u * k + b);
      let old = atomicAdd(&mass[at], lw);
      let carry = hw + select(0u, 1u, old + lw < old);
      if (carry != 0u) {
        atomicAdd(&mass[at + 1u], carry);
      }
    }
  }
}

// fixed is p (in [0, 1]) in units of 2^-40 as (high word, low word): the
// scalings are by powers of two and exact, so no compiler's rounding or
// fused multiply-add changes it; what falls below 2^-40 is dropped (less
// than 2^-22 of the mass over Gemma's 262,144 ids, 2^-18 over 4M, against
// a kept total of at least 1).
fn fixed(pv: f32) -> vec2<u32> {
  let t = pv * 256.0;
  let h = u32(t);
  return vec2<u32>(h, u32((t - f32(h)) * 4294967296.0));
}

// mass_f is the mass of bin b of digit k as a float.
fn mass_f(k: u32, b: u32) -> f32 {
  let at = 2u * (256u * k + b);
  return f32(atomicLoad(&mass[at + 1u])) * (1.0 / 256.0) + f32(atomicLoad(&mass[at])) * (1.0 / 1099511627776.0);
}

// fix_digit fixes digit k of the top-p cut, the smallest key whose strictly
// better kept mass stays below want = top_p * total, from digit k's masses
// and slot k: from the top bin down, the first bin b where the mass above
// the slot's range plus the bins above b stays below want and adding b's
// does not (bin 0 if none). It returns slot k+1's digits; with write, it
// stores slot k+1 in sel (and, for digit 0, whose bins hold every kept id,
// the total). The sums run in one fixed order, sixteen bins at a time, so
// every workgroup that fixes a digit fixes the same one.
fn fix_digit(k: u32, li: u32, write: bool) -> u32 {
  for (var b = li; b < 256u; b += {{WG}}u) {
    bin_f[b] = mass_f(k, b);
  }
  workgroupBarrier();
  for (var g = li; g < 16u; g += {{WG}}u) {
    var s = 0.0;
    for (var j = 0u; j < 16u; j++) {
      s += bin_f[16u * g + 15u - j];
    }
    group_f[g] = s;
  }
  workgroupBarrier();
  if (li == 0u) {
    var total = 0.0;
    if (k == 0u) {
      for (var j = 0u; j < 16u; j++) {
        total += group_f[15u - j];
      }
    } else {
      total = bitcast<f32>(sel[SEL_TOTAL]);
    }
    let prefix = sel[SEL_SLOT + 2u * k];
    let want = p.top_p * total;
    var acc = bitcast<f32>(sel[SEL_SLOT + 2u * k + 1u]);
    var g = 15u;
    loop {
      let c = group_f[g];
      if (g == 0u || acc + c >= want) {
        break;
      }
      acc += c;
      g--;
    }
    var b = 16u * g + 15u;
    loop {
      let c = bin_f[b];
      if (b == 16u * g || acc + c >= want) {
        break;
      }
      acc += c;
      b--;
    }
    let cut = prefix | (b << (24u - 8u * k));
    if (write) {
      sel[SEL_SLOT + 2u * k + 2u] = cut;
      sel[SEL_SLOT + 2u * k + 3u] = bitcast<u32>(acc);
      if (k == 0u) {
        sel[SEL_TOTAL] = bitcast<u32>(total);
      }
    }
    wg_v = cut;
  }
  return workgroupUniformLoad(&wg_v);
}

// draw_part: for the draw, the workgroup's RUN ids' kept mass (with
// top-p, of the keys above the cut alone) and, with top-p, how many kept
// ids have the cut's key: its two words of sel. The mass is summed as
// draw_pick walks it: each invocation's ids in order, then the
// invocations in order.
@compute @workgroup_size({{WG}})
fn draw_part(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  if (li == 0u) {
    wg_u = sel[SEL_DONE];
  }
  if (workgroupUniformLoad(&wg_u) != 0u) {
    return;
  }
  let mx = bitcast<f32>(sel[SEL_MAX]);
  let kth = sel[SEL_KTH];
  let kth_id = sel[SEL_KTH_ID];
  let top_p = p.top_p > 0.0 && p.top_p < 1.0;
  var cut = 0u;
  if (top_p) {
    cut = fix_digit(3u, li, wid.x == 0u); // the last digit: the cut's key
  }
  let first = wid.x * RUN + 16u * li;
  var s = 0.0;
  var ties = 0u;
  for (var k = 0u; k < 16u; k++) {
    let i = first + k;
    if (i < p.cols) {
      let v = x[i];
      let kk = key(v);
      if (kept(kk, i, kth, kth_id)) {
        if (!top_p || kk > cut) {
          s += prob(v, mx);
        } else if (kk == cut) {
          ties++;
        }
      }
    }
  }
  red_f[li] = s;
  red_u[li] = ties;
  workgroupBarrier();
  if (li == 0u) {
    var acc = 0.0;
    var n = 0u;
    for (var t = 0u; t < {{WG}}u; t++) {
      acc += red_f[t];
      n += red_u[t];
    }
    sel[SEL_PARTS + 2u * wid.x] = bitcast<u32>(acc);
    sel[SEL_PARTS + 2u * wid.x + 1u] = n;
  }
}

// draw_pick: the ties at the top-p cut (how many of them, lowest ids
// first, the top-p mass keeps), then step 5: the workgroup whose kept mass
// passes the goal, found over draw_part's sums, and in it the id, walked
// as draw_part summed it.
@compute @workgroup_size({{WG}})
fn draw_pick(@builtin(local_invocation_index) li: u32) {
  if (li == 0u) {
    wg_u = sel[SEL_DONE];
  }
  if (workgroupUniformLoad(&wg_u) != 0u) {
    return;
  }
  let parts = (p.cols + RUN - 1u) / RUN;
  let mx = bitcast<f32>(sel[SEL_MAX]);
  let kth = sel[SEL_KTH];
  let kth_id = sel[SEL_KTH_ID];
  let top_p = p.top_p > 0.0 && p.top_p < 1.0;
  var cut = 0u;
  if (top_p) {
    cut = sel[SEL_PREFIX];
  }
  // The parts' words into workgroup memory, all invocations at once: the
  // walks below are one invocation's, and a load from memory at each of
  // their steps cost ~1 us each on the H200.
  for (var w = li; w < min(parts, 256u); w += {{WG}}u) {
    run_s[w] = bitcast<f32>(sel[SEL_PARTS + 2u * w]);
    run_t[w] = sel[SEL_PARTS + 2u * w + 1u];
  }
  workgroupBarrier();
  if (li == 0u) {
    // Ties at cut, all of one p, each kept while the mass before it (the
    // select's mass above the cut, then the ties kept) stays below want.
    var cut_keep = 0xffffffffu;
    var tp = 0.0; // without top-p no id is a tie (unkey(0) is NaN)
    if (top_p) {
      tp = prob(unkey(cut), mx);
      var n_ties = 0u;
      for (var w = 0u; w < parts; w++) {
        n_ties += part_ties(w);
      }
      let want = p.top_p * bitcast<f32>(sel[SEL_TOTAL]);
      var acc = bitcast<f32>(sel[SEL_ABOVE]);
      var t = 0u;
      loop {
        if (acc >= want || t >= n_ties) {
          break;
        }
        acc += tp;
        t++;
      }
      cut_keep = t;
    }
    // Each part's kept mass: its sum above the cut and its kept ties.
    var total = 0.0;
    var before = 0u;
    for (var w = 0u; w < parts; w++) {
      let ties = part_ties(w);
      total += part_sum(w) + f32(clamp(cut_keep, before, before + ties) - before) * tp;
      before += ties;
    }
    let u = f32(pcg(p.seed_hash + state[0]) >> 8u) * (1.0 / 16777216.0);
    let goal = u * total;
    // The first part whose end passes the goal; else (float32 rounding)
    // the last with kept mass.
    var owner = 0xffffffffu;
    var owner_start = 0.0;
    var owner_before = 0u;
    var last = 0u;
    var last_start = 0.0;
    var last_before = 0u;
    var acc = 0.0;
    before = 0u;
    for (var w = 0u; w < parts; w++) {
      let ties = part_ties(w);
      let m = part_sum(w) + f32(clamp(cut_keep, before, before + ties) - before) * tp;
      if (m > 0.0) {
        if (owner == 0xffffffffu && acc + m > goal) {
          owner = w;
          owner_start = acc;
          owner_before = before;
        }
        last = w;
        last_start = acc;
        last_before = before;
      }
      acc += m;
      before += ties;
    }
    var g = goal;
    if (owner == 0xffffffffu) {
      owner = last;
      owner_start = last_start;
      owner_before = last_before;
      g = bitcast<f32>(0x7f7fffffu); // past every id: the part's last kept one
    }
    wg_u = owner;
    wg_v = owner_before;
    wg_f = owner_start;
    wg_goal = g;
    wg_keep = cut_keep;
  }
  let owner = workgroupUniformLoad(&wg_u);
  let before = workgroupUniformLoad(&wg_v);
  let cut_keep = workgroupUniformLoad(&wg_keep);

  // The owner part: each invocation's rank among the ties at cut, its
  // kept mass, then the invocation and the id that pass the goal.
  let first = owner * RUN + 16u * li;
  var ties = 0u;
  if (top_p) {
    for (var k = 0u; k < 16u; k++) {
      let i = first + k;
      if (i < p.cols) {
        let kk = key(x[i]);
        if (kk == cut && kept(kk, i, kth, kth_id)) {
          ties++;
        }
      }
    }
  }
  let p_rank = before + scan_u(ties, li);
  var run_sum = 0.0;
  var rp = p_rank;
  var last = 0xffffffffu;
  for (var k = 0u; k < 16u; k++) {
    let i = first + k;
    if (i < p.cols) {
      let pi = kept_p(x[i], i, mx, kth, kth_id, cut, cut_keep, &rp, top_p);
      if (pi > 0.0) {
        run_sum += pi;
        last = i;
      }
    }
  }
  red_f[li] = run_sum;
  red_u[li] = last;
  workgroupBarrier();
  if (li == 0u) {
    let goal = wg_goal;
    var acc = wg_f;
    var owner_t = 0xffffffffu;
    var fallback = 0u;
    for (var t = 0u; t < {{WG}}u; t++) {
      let c = red_f[t];
      red_f[t] = acc;
      if (red_u[t] != 0xffffffffu) {
        fallback = red_u[t];
        if (owner_t == 0xffffffffu && acc + c > goal) {
          owner_t = t;
        }
      }
      acc += c;
    }
    wg_u = owner_t;
    wg_v = fallback;
  }
  let owner_t = workgroupUniformLoad(&wg_u);
  if (li == owner_t) {
    let goal = wg_goal;
    let start = red_f[li];
    var part = 0.0;
    var pick = last;
    rp = p_rank;
    for (var k = 0u; k < 16u; k++) {
      let i = first + k;
      if (i < p.cols) {
        let pi = kept_p(x[i], i, mx, kth, kth_id, cut, cut_keep, &rp, top_p);
        if (pi > 0.0) {
          part += pi;
          if (start + part > goal) {
            pick = i;
            break;
          }
        }
      }
    }
    finish(pick);
  } else if (li == 0u && owner_t == 0xffffffffu) {
    finish(wg_v);
  }
}

// part_sum and part_ties are draw_part's words of part w: from workgroup
// memory for the first 256 parts (1,048,576 ids), else from sel.
fn part_sum(w: u32) -> f32 {
  if (w < 256u) {
    return run_s[w];
  }
  return bitcast<f32>(sel[SEL_PARTS + 2u * w]);
}

fn part_ties(w: u32) -> u32 {
  if (w < 256u) {
    return run_t[w];
  }
  return sel[SEL_PARTS + 2u * w + 1u];
}

// kept_p is p of id i walked in order within a run, 0 unless top-k and
// top-p keep it; rp counts the run's kept ties at cut so far.
fn kept_p(v: f32, i: u32, mx: f32, kth: u32, kth_id: u32, cut: u32, cut_keep: u32, rp: ptr<function, u32>, top_p: bool) -> f32 {
  let kk = key(v);
  if (!kept(kk, i, kth, kth_id)) {
    return 0.0;
  }
  if (top_p) {
    if (kk < cut) {
      return 0.0;
    }
    if (kk == cut) {
      let t = *rp;
      *rp += 1u;
      if (t >= cut_keep) {
        return 0.0;
      }
    }
  }
  return prob(v, mx);
}

// finish writes the pick where the next step's embedding reads it, appends
// it to the history and advances the step.
fn finish(pick: u32) {
  ids[p.out_word] = pick;
  let n = state[1];
  if (n < p.hist_cap) {
    state[2u + n] = pick;
    state[1] = n + 1u;
  }
  state[0] = state[0] + 1u;
}
