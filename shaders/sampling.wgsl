// sampling: picks the next token on the GPU as engine/sample's Sampler
// picks it from the same logits: repetition penalty over a history of ids,
// temperature, top-k, top-p, then one draw from a counter-based hash of
// the seed and the sampler's step. The id goes where the next step's
// embedding gather reads it and onto the history, and the step counter
// advances, so steps run back to back with nothing read back.
//
// One workgroup does it all, each invocation owning a contiguous run of
// ids, so that every walk "in ascending id order" of engine/sample is a
// walk over invocations in order, then over one run:
//   1. x = the last token's logits, NaN as -inf and +inf as the largest
//      float; penalised ids are rewritten from the history (each write
//      computes from the logit, so a repeated id is penalised once);
//   2. the argmax (temperature 0 ends here) and the largest logit;
//   3. top-k: the k-th largest key by a radix select (4 passes of 8 bits),
//      equal keys kept lowest id first;
//   4. p = exp((x - max) / T) in float32; top-p: the smallest key whose
//      strictly better mass stays below top_p times the kept mass, by
//      binary search over keys, and how many of its ties fit;
//   5. the draw: u = Uniform(seed, step); the first kept id, walked by id,
//      where the running sum of p passes u times the kept total.
// engine/sample sums in float64, this in float32: a pick can differ where
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

// red_f (common.wgsl) and red_u carry per-invocation values.
var<workgroup> red_u: array<u32, {{WG}}>;
var<workgroup> bins: array<atomic<u32>, 256>;
var<workgroup> wg_f: f32;
var<workgroup> wg_u: u32;
var<workgroup> wg_v: u32;

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

@compute @workgroup_size({{WG}})
fn sample(@builtin(local_invocation_index) li: u32) {
  let cols = p.cols;
  let run = (cols + {{WG}}u - 1u) / {{WG}}u;
  let lo = min(li * run, cols);
  let hi = min(lo + run, cols);
  // The logits rows hold tokens step.first..; the last token's is the last.
  let base = (step.n - 1u - step.first) * cols;

  // 1. Cleaned and penalised logits.
  for (var i = lo; i < hi; i++) {
    x[i] = clean(logits[base + i]);
  }
  storageBarrier();
  let pen = p.penalty;
  let n_hist = min(state[1], p.hist_cap);
  if (pen != 0.0 && pen != 1.0) {
    for (var j = li; j < n_hist; j += {{WG}}u) {
      let id = state[2u + j];
      if (id < cols) {
        let v = clean(logits[base + id]);
        if (v < 0.0) {
          x[id] = v * pen;
        } else {
          x[id] = v / pen;
        }
      }
    }
  }
  storageBarrier();

  // 2. The argmax, lowest id among equals.
  var bv = from_bits(NEG_INF);
  var bi = 0xffffffffu;
  for (var i = lo; i < hi; i++) {
    let v = x[i];
    if (bi == 0xffffffffu || v > bv) {
      bv = v;
      bi = i;
    }
  }
  red_f[li] = bv;
  red_u[li] = bi;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ov = red_f[li + s];
      let oi = red_u[li + s];
      if (ov > red_f[li] || (ov == red_f[li] && oi < red_u[li])) {
        red_f[li] = ov;
        red_u[li] = oi;
      }
    }
    workgroupBarrier();
  }
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
    }
    return;
  }

  // 3. Top-k: kth is the k-th largest key; of the ids with that key, the
  // need lowest are kept.
  let top_k = p.top_k > 0u && p.top_k < cols;
  var kth = 0u;
  var need = 0xffffffffu;
  var k_rank = 0u; // kept ties before this invocation's run
  if (top_k) {
    var prefix = 0u;
    var mask = 0u;
    need = p.top_k;
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
    k_rank = scan_u(ties, li);
  }

  // 4. Probabilities of the kept ids, their total, and top-p.
  var total_run = 0.0;
  var r = k_rank;
  for (var i = lo; i < hi; i++) {
    let kk = key(x[i]);
    var kept = kk > kth;
    if (kk == kth) {
      kept = r < need;
      r++;
    }
    if (kept) {
      total_run += prob(x[i], mx);
    }
  }
  let total = sum_all(total_run, li);
  let top_p = p.top_p > 0.0 && p.top_p < 1.0;
  var cut = 0u;          // the top-p boundary key
  var cut_keep = 0xffffffffu; // ties at cut that are kept
  var p_rank = 0u;       // this run's first tie at cut among the kept ones
  if (top_p) {
    let want = p.top_p * total;
    // cut = the smallest key whose strictly better kept mass is below want.
    var a = 0u;
    var z = 0xffffffffu;
    loop {
      if (a >= z) {
        break;
      }
      let mid = a + (z - a) / 2u;
      var part = 0.0;
      r = k_rank;
      for (var i = lo; i < hi; i++) {
        let kk = key(x[i]);
        var kept = kk > kth;
        if (kk == kth) {
          kept = r < need;
          r++;
        }
        if (kept && kk > mid) {
          part += prob(x[i], mx);
        }
      }
      if (sum_all(part, li) < want) {
        z = mid;
      } else {
        a = mid + 1u;
      }
    }
    cut = a;
    // Mass strictly better than cut and the kept ties at cut, all of one
    // p, each kept while the mass before it stays below want.
    var part = 0.0;
    var ties = 0u;
    r = k_rank;
    for (var i = lo; i < hi; i++) {
      let kk = key(x[i]);
      var kept = kk > kth;
      if (kk == kth) {
        kept = r < need;
        r++;
      }
      if (kept && kk > cut) {
        part += prob(x[i], mx);
      }
      if (kept && kk == cut) {
        ties++;
      }
    }
    let above = sum_all(part, li);
    let n_ties = u32(sum_all(f32(ties), li));
    p_rank = scan_u(ties, li);
    if (li == 0u) {
      let tp = prob(unkey(cut), mx);
      var acc = above;
      var t = 0u;
      loop {
        if (acc >= want || t >= n_ties) {
          break;
        }
        acc += tp;
        t++;
      }
      wg_u = t;
    }
    cut_keep = workgroupUniformLoad(&wg_u);
  }

  // 5. The draw over the kept ids in id order.
  var run_sum = 0.0;
  var last = 0xffffffffu;
  r = k_rank;
  var rp = p_rank;
  for (var i = lo; i < hi; i++) {
    let pi = kept_p(x[i], mx, kth, need, &r, cut, cut_keep, &rp, top_p);
    if (pi > 0.0) {
      run_sum += pi;
      last = i;
    }
  }
  red_f[li] = run_sum;
  red_u[li] = last;
  workgroupBarrier();
  if (li == 0u) {
    // Exclusive prefix sums in invocation order, then the first run whose
    // end passes the goal.
    var acc = 0.0;
    for (var t = 0u; t < {{WG}}u; t++) {
      let c = red_f[t];
      red_f[t] = acc;
      acc = acc + c;
    }
    let u = f32(pcg(p.seed_hash + state[0]) >> 8u) * (1.0 / 16777216.0);
    let goal = u * acc;
    var owner = 0xffffffffu;
    var fallback = 0u;
    for (var t = 0u; t < {{WG}}u; t++) {
      if (red_u[t] != 0xffffffffu) {
        fallback = red_u[t];
        var end = acc;
        if (t + 1u < {{WG}}u) {
          end = red_f[t + 1u];
        }
        if (owner == 0xffffffffu && end > goal) {
          owner = t;
        }
      }
    }
    wg_u = owner;
    wg_v = fallback;
    wg_f = goal;
  }
  let owner = workgroupUniformLoad(&wg_u);
  if (li == owner) {
    let start = red_f[li];
    let goal = wg_f;
    var part = 0.0;
    var pick = wg_v;
    r = k_rank;
    rp = p_rank;
    for (var i = lo; i < hi; i++) {
      let pi = kept_p(x[i], mx, kth, need, &r, cut, cut_keep, &rp, top_p);
      if (pi > 0.0) {
        part += pi;
        if (start + part > goal) {
          pick = i;
          break;
        }
      }
    }
    finish(pick);
  } else if (li == 0u && owner == 0xffffffffu) {
    finish(wg_v);
  }
}

// kept_p is p of an id walked in order within a run, 0 unless top-k and
// top-p keep it; r and rp count the run's ties at kth and at cut so far.
fn kept_p(v: f32, mx: f32, kth: u32, need: u32, r: ptr<function, u32>, cut: u32, cut_keep: u32, rp: ptr<function, u32>, top_p: bool) -> f32 {
  let kk = key(v);
  var kept = kk > kth;
  if (kk == kth) {
    kept = *r < need;
    *r += 1u;
  }
  if (!kept) {
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
