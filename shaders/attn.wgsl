// attn: causal attention of the step's query tokens over the KV of earlier
// positions (read from the layer's region of the KV arena, a ring for local
// layers) and of the chunk's own positions (read from the chunk KV, which is
// committed to the arena only after the last layer: engine/cpu's scheme).
// attend_group with PREP (a one-token decode step, qkv_prep folded in) is
// the exception: it writes the token's K/V straight into its arena slot and
// reads every position from the arena, so the step has nothing to commit
// (a ring's slot for the token held a position the window no longer sees).
// attend_flash (at the end, the FLASH variants) is prefill's: a workgroup
// per block of query rows of one KV head, sharing each K/V tile through
// workgroup memory. attend (prefill with webgpu.Options.RowAttention): one
// workgroup per (query head, token); keys are taken in tiles
// with an online softmax, so no scores buffer is needed. HD is the head
// width. For decode, where a token's few heads would leave the GPU idle,
// attend_split gives each tile of KT keys its own workgroup (flash-decoding)
// and writes its partial softmax state; combine merges them. attend_split
// stages its tile's K rows and then its V rows through workgroup memory:
// every invocation loads a few words of them at once, instead of walking
// rows one load at a time.
#include "common.wgsl"

struct AttnParams {
  heads: u32,    // query heads
  kv_heads: u32, // K/V heads: query head h reads K/V head h / (heads / kv_heads)
  window: u32,   // positions attended to, its own included; 0 for global
  slots: u32,    // slots of the arena region
  ring: u32,     // 1: position p lives in slot p % slots
  scale: f32,    // scores are q.k * scale
  splits: u32,   // the most partial states per (token, head): the parts buffer's room
  tile: u32,     // keys per tile of the decode kernel (its KT); a partial state covers a run of whole tiles
  k_word: u32,   // arena region, words from its binding's start: K values
  v_word: u32,   // V values
  ks_word: u32,  // K scales (int8)
  vs_word: u32,  // V scales (int8)
  ck_word: u32,  // chunk KV, the same four arrays
  cv_word: u32,
  cks_word: u32,
  cvs_word: u32,
  out_scale_word: u32, // combine_quant: word offset of the per-token scales in o
  softcap: f32,  // scores become softcap*tanh(s/softcap); 0 is off
  norm: u32,     // attend_group: 1 for the QK-norm, weights at q_norm and k_norm (words into gn)
  one_plus: u32, // attend_group: norm weights are used as 1+w
  eps: f32,
  table: u32,    // attend_group: first float of this layer kind's RoPE table in cs
  q_norm: u32,
  k_norm: u32,
  prep_kv: u32,  // attend_group: 1 where the layer makes its own K/V (q holds Q|K|V)
  bias: u32,     // attend_group: 1 to add the projection's bias first, a row of HD floats per head row at bias_word (words into gn)
  bias_word: u32,
  rot_half: u32, // attend_group with PREP: rotated pairs per head, (i, i+rot_half), as qkv_prep's
}
@group(0) @binding(1) var<uniform> p: AttnParams;
@group(0) @binding(2) var<storage, read> q: array<f32>;
// o holds float32 bits, or packed int8 rows and their scales (combine_quant).
@group(0) @binding(3) var<storage, read_write> o: array<u32>;
#if PREP
@group(0) @binding(4) var<storage, read_write> kv: array<u32>; // attend_group writes the token's K/V
#else
@group(0) @binding(4) var<storage, read> kv: array<u32>;
@group(0) @binding(5) var<storage, read_write> ck: array<u32>;
#endif

const HD = {{HD}}u;
const HPT = {{HPT}}u; // head dims per invocation: ceil(HD / WG)
#if INT8
const ROW_WORDS = {{HD}}u / 4u;
#else
const ROW_WORDS = {{HD}}u;
#endif

const KT = {{KT}}u; // keys per tile: at most WG, and KT rows fit the tile buffer
const STRIDE = ROW_WORDS + 1u; // words per staged row: the odd stride spreads rows over banks

var<workgroup> qs: array<f32, {{HD}}>;
var<workgroup> es: array<f32, {{WG}}>; // exp(score - max) of the tile's keys
var<workgroup> ev: array<f32, {{WG}}>; // the same times the value row's scale
var<workgroup> tile: array<u32, {{TILE}}>; // KT staged K or V rows, STRIDE apart
var<workgroup> rows: array<u32, {{KT}}>;   // each tile key's row index in its array
var<workgroup> chunks: array<u32, {{KT}}>; // 1 where that row is in the chunk

// Where key/value position j of KV head g lives: .x is the row index in
// its array, .y is 1 when the row is in the chunk.
fn locate(j: u32, g: u32) -> vec2<u32> {
#if !PREP
  if (j >= step.start) {
    return vec2<u32>((j - step.start) * p.kv_heads + g, 1u);
  }
#endif
  let slot = select(j, j % p.slots, p.ring == 1u);
  return vec2<u32>(slot * p.kv_heads + g, 0u);
}

fn load(chunk: bool, i: u32) -> u32 {
#if !PREP
  if (chunk) {
    return ck[i];
  }
#endif
  return kv[i];
}

// locate_tile fills rows and chunks for the tn keys from position first.
fn locate_tile(first: u32, tn: u32, g: u32, li: u32) {
  for (var j = li; j < tn; j += {{WG}}u) {
    let at = locate(first + j, g);
    rows[j] = at.x;
    chunks[j] = at.y;
  }
}

// stage copies the tile's tn K rows (values false) or V rows into tile.
// Call after locate_tile and a barrier.
fn stage(tn: u32, values: bool, li: u32) {
  for (var i = li; i < tn * ROW_WORDS; i += {{WG}}u) {
    let j = i / ROW_WORDS;
    let chunk = chunks[j] == 1u;
    var base = select(p.k_word, p.ck_word, chunk);
    if (values) {
      base = select(p.v_word, p.cv_word, chunk);
    }
    tile[j * STRIDE + i % ROW_WORDS] = load(chunk, base + rows[j] * ROW_WORDS + i % ROW_WORDS);
  }
}

// capped applies the attention-logit soft-cap (Gemma 2) to a scaled score.
fn capped(s: f32) -> f32 {
  if (p.softcap > 0.0) {
    return p.softcap * tanh(clamp(s / p.softcap, -10.0, 10.0));
  }
  return s;
}

// score is q.k * scale of staged K row j, soft-capped.
fn score(j: u32) -> f32 {
  var s = 0.0;
  let b = j * STRIDE;
#if INT8
  for (var w = 0u; w < ROW_WORDS; w++) {
    let k = unpack_i8(tile[b + w]);
    s += dot(vec4<f32>(qs[4u * w], qs[4u * w + 1u], qs[4u * w + 2u], qs[4u * w + 3u]), vec4<f32>(k));
  }
  let chunk = chunks[j] == 1u;
  s = s * bitcast<f32>(load(chunk, select(p.ks_word, p.cks_word, chunk) + rows[j]));
#else
  for (var d = 0u; d < HD; d++) {
    s += qs[d] * bitcast<f32>(tile[b + d]);
  }
#endif
  return capped(s * p.scale);
}

// value is dimension d of staged V row j, unscaled.
fn value(j: u32, d: u32) -> f32 {
#if INT8
  return f32(i8_at(tile[j * STRIDE + d / 4u], d % 4u));
#else
  return bitcast<f32>(tile[j * STRIDE + d]);
#endif
}

fn value_scale(j: u32) -> f32 {
#if INT8
  let chunk = chunks[j] == 1u;
  return bitcast<f32>(load(chunk, select(p.vs_word, p.cvs_word, chunk) + rows[j]));
#else
  return 1.0;
#endif
}

// attend reads K and V rows straight from memory: a step's
// many (head, token) workgroups hide the latency of its loads, and staging
// tiles through workgroup memory measured slower there (bench/RESULTS.md).
fn score_direct(j: u32, g: u32) -> f32 {
  let at = locate(j, g);
  let chunk = at.y == 1u;
  var s = 0.0;
  let base = select(p.k_word, p.ck_word, chunk) + at.x * ROW_WORDS;
#if INT8
  for (var w = 0u; w < ROW_WORDS; w++) {
    let k = unpack_i8(load(chunk, base + w));
    s += dot(vec4<f32>(qs[4u * w], qs[4u * w + 1u], qs[4u * w + 2u], qs[4u * w + 3u]), vec4<f32>(k));
  }
  s = s * bitcast<f32>(load(chunk, select(p.ks_word, p.cks_word, chunk) + at.x));
#else
  for (var d = 0u; d < HD; d++) {
    s += qs[d] * bitcast<f32>(load(chunk, base + d));
  }
#endif
  return capped(s * p.scale);
}

fn value_direct(at: vec2<u32>, d: u32) -> f32 {
  let chunk = at.y == 1u;
#if INT8
  return f32(i8_at(load(chunk, select(p.v_word, p.cv_word, chunk) + at.x * ROW_WORDS + d / 4u), d % 4u));
#else
  return bitcast<f32>(load(chunk, select(p.v_word, p.cv_word, chunk) + at.x * ROW_WORDS + d));
#endif
}

fn value_scale_direct(at: vec2<u32>) -> f32 {
#if INT8
  let chunk = at.y == 1u;
  return bitcast<f32>(load(chunk, select(p.vs_word, p.cvs_word, chunk) + at.x));
#else
  return 1.0;
#endif
}

// attend takes keys in tiles of WG.
@compute @workgroup_size({{WG}})
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let head = wg.x;
  let t = wg.y;
  if (t >= step.n) {
    return;
  }
  let g = head / (p.heads / p.kv_heads);
  let pos = step.start + t;
  var first = 0u;
  if (p.window > 0u && pos + 1u > p.window) {
    first = pos + 1u - p.window;
  }
  let count = pos + 1u - first;
  let qbase = (t * p.heads + head) * HD;
  for (var d = li; d < HD; d += {{WG}}u) {
    qs[d] = q[qbase + d];
  }
  workgroupBarrier();

  var m = -3.0e38; // running max; exp(m - new max) is 0 before the first tile
  var l = 0.0;     // running sum of exp(score - m)
  var acc: array<f32, HPT>;
  for (var k = 0u; k < HPT; k++) {
    acc[k] = 0.0;
  }
  for (var tile0 = 0u; tile0 < count; tile0 += {{WG}}u) {
    let tn = min({{WG}}u, count - tile0);
    var s = -3.0e38;
    if (li < tn) {
      s = score_direct(first + tile0 + li, g);
    }
    let nm = max(m, wg_max(s, li));
    let corr = exp(m - nm);
    if (li < tn) {
      let e = exp(s - nm);
      es[li] = e;
      ev[li] = e * value_scale_direct(locate(first + tile0 + li, g));
    }
    workgroupBarrier();
    var sum = 0.0;
    for (var j = 0u; j < tn; j++) {
      sum += es[j];
    }
    l = l * corr + sum;
    for (var k = 0u; k < HPT; k++) {
      let d = li + k * {{WG}}u;
      if (d < HD) {
        var a = acc[k] * corr;
        for (var j = 0u; j < tn; j++) {
          a += ev[j] * value_direct(locate(first + tile0 + j, g), d);
        }
        acc[k] = a;
      }
    }
    m = nm;
    workgroupBarrier();
  }
  for (var k = 0u; k < HPT; k++) {
    let d = li + k * {{WG}}u;
    if (d < HD) {
      o[qbase + d] = bitcast<u32>(acc[k] / l);
    }
  }
}

// The partial state of one tile: its running max, its sum of exp(score -
// max), then HD sums of exp(score - max) * v. attend_split writes them into
// o, at ((t * heads + head) * splits + split) * (HD + 2).
const PART = HD + 2u;

// keys returns the first key position and the count a token attends to.
fn keys(t: u32) -> vec2<u32> {
  let pos = step.start + t;
  var first = 0u;
  if (p.window > 0u && pos + 1u > p.window) {
    first = pos + 1u - p.window;
  }
  return vec2<u32>(first, pos + 1u - first);
}

@compute @workgroup_size({{WG}})
fn attend_split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let split = wg.x;
  let head = wg.y;
  let t = wg.z;
  let kr = keys(t);
  let tile0 = split * KT;
  if (t >= step.n || tile0 >= kr.y) {
    return; // the whole workgroup
  }
  let g = head / (p.heads / p.kv_heads);
  let qbase = (t * p.heads + head) * HD;
  for (var d = li; d < HD; d += {{WG}}u) {
    qs[d] = q[qbase + d];
  }
  let tn = min(KT, kr.y - tile0);
  locate_tile(kr.x + tile0, tn, g, li);
  workgroupBarrier();
  stage(tn, false, li);
  workgroupBarrier();
  var s = -3.0e38;
  if (li < tn) {
    s = score(li);
  }
  let m = wg_max(s, li);
  if (li < tn) {
    let e = exp(s - m);
    es[li] = e;
    ev[li] = e * value_scale(li);
  }
  stage(tn, true, li); // wg_max's barriers ended every read of the K rows
  workgroupBarrier();
  let out = ((t * p.heads + head) * p.splits + split) * PART;
  if (li == 0u) {
    var sum = 0.0;
    for (var j = 0u; j < tn; j++) {
      sum += es[j];
    }
    o[out] = bitcast<u32>(m);
    o[out + 1u] = bitcast<u32>(sum);
  }
  for (var d = li; d < HD; d += {{WG}}u) {
    var a = 0.0;
    for (var j = 0u; j < tn; j++) {
      a += ev[j] * value(j, d);
    }
    o[out + 2u + d] = bitcast<u32>(a);
  }
}

// parts_of is how many partial states a decode step's attention over
// keys keys leaves: tiles of p.tile keys, split into at most p.splits
// runs of equally many tiles (attend_split: one tile each, as its planned
// room holds every tile; attend_group: several at long positions).
fn parts_of(keys: u32) -> u32 {
  let tiles = (keys + p.tile - 1u) / p.tile;
  let per = (tiles + p.splits - 1u) / p.splits;
  return (tiles + per - 1u) / per;
}

// combine merges a (token, head)'s partial states, bound as q, into o:
// the overall max and sum by workgroup reductions over the states, then
// each dimension as the states' sums weighted by exp(max_i - max) / sum.
@compute @workgroup_size({{WG}})
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let head = wg.x;
  let t = wg.y;
  if (t >= step.n) {
    return;
  }
  let n = parts_of(keys(t).y);
  let base = (t * p.heads + head) * p.splits * PART;
  var mx = -3.0e38;
  for (var i = li; i < n; i += {{WG}}u) {
    mx = max(mx, q[base + i * PART]);
  }
  let m = wg_max(mx, li);
  var ls = 0.0;
  for (var i = li; i < n; i += {{WG}}u) {
    ls += q[base + i * PART + 1u] * exp(q[base + i * PART] - m);
  }
  let l = wg_sum(ls, li);
  for (var d = li; d < HD; d += {{WG}}u) {
    var a = 0.0;
    for (var i = 0u; i < n; i++) {
      a += q[base + i * PART + 2u + d] * (exp(q[base + i * PART] - m) / l);
    }
    o[(t * p.heads + head) * HD + d] = bitcast<u32>(a);
  }
}

// combine_quant's weights: exp(max_i - max) / sum of each (head, state),
// at head * n + i; cl and ce hold each state's scaled sum and exponential
// while they are made.
const CW = 1024u;
var<workgroup> cw: array<f32, CW>;
var<workgroup> cl: array<f32, CW>;
var<workgroup> ce: array<f32, CW>;
const MW = 4u; // row words each invocation keeps between the max and the quantisation
// MU is how many partial states an invocation of the merge loads at once,
// in a loop whose bound the compiler knows and unrolls, so that MU loads
// are in flight together: a loop over the states one at a time waited for
// each load in turn (at 4096 keys the 1B shape's combine_quant took 16 us
// for a global layer's 52 states per head and a local layer's 32, against
// 7 us for 9 at position 128). 16: a local layer's 32 states in two
// batches; the registers are there, as one workgroup runs the merge.
const MU = 16u;

// head_max is the maximum of a head's n state maxima in cw from h0, and
// head_sum the sum of its n scaled sums in cl: four reads of workgroup
// memory at a time, for the same reason as MU.
fn head_max(h0: u32, n: u32) -> f32 {
  var m = -3.0e38;
  for (var k = 0u; k < n; k += 4u) {
    let e = n - 1u; // reads past the head's last value repeat it
    m = max(m, max(max(cw[h0 + k], cw[h0 + min(k + 1u, e)]), max(cw[h0 + min(k + 2u, e)], cw[h0 + min(k + 3u, e)])));
  }
  return m;
}

fn head_sum(h0: u32, n: u32) -> f32 {
  var l = 0.0;
  for (var k = 0u; k < n; k += 4u) {
    let e = n - 1u;
    let v = vec4<f32>(cl[h0 + k], cl[h0 + min(k + 1u, e)], cl[h0 + min(k + 2u, e)], cl[h0 + min(k + 3u, e)]);
    l += dot(v, select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n)));
  }
  return l;
}

// merged is dimensions 4w..4w+3 of a token's attention row (all heads side
// by side), from the token's n partial states at base; with weights, from
// cw (fast), else each state's weight computed here.
fn merged(base: u32, n: u32, w: u32, weights: bool) -> vec4<f32> {
  let head = 4u * w / HD;
  let d = 4u * w % HD;
  let b = base + head * p.splits * PART;
  var a = vec4<f32>(0.0);
  if (weights) {
    for (var i0 = 0u; i0 < n; i0 += MU) {
      // MU states' words at once (past the last state, the last again:
      // never a word outside the token's states, and never a product with
      // a poisoned word), then their weighted sum.
      var x: array<vec4<f32>, MU>;
      for (var k = 0u; k < MU; k++) {
        let s = b + min(i0 + k, n - 1u) * PART + 2u + d;
        x[k] = vec4<f32>(q[s], q[s + 1u], q[s + 2u], q[s + 3u]);
      }
      for (var k = 0u; k < MU; k++) {
        let i = min(i0 + k, n - 1u);
        a += select(vec4<f32>(0.0), x[k] * cw[head * n + i], i0 + k < n);
      }
    }
    return a;
  }
  var m = -3.0e38;
  for (var i = 0u; i < n; i++) {
    m = max(m, q[b + i * PART]);
  }
  var l = 0.0;
  for (var i = 0u; i < n; i++) {
    l += q[b + i * PART + 1u] * exp(q[b + i * PART] - m);
  }
  for (var i = 0u; i < n; i++) {
    let s = b + i * PART;
    a += vec4<f32>(q[s + 2u + d], q[s + 3u + d], q[s + 4u + d], q[s + 5u + d]) * (exp(q[s] - m) / l);
  }
  return a;
}

// combine_quant is combine for every head of a token in one workgroup,
// followed by quant.wgsl's int8 quantisation of the token's row: the decode
// step's attention output goes to the output product without a quantize
// dispatch. o is the int8 activation buffer (rows of heads * HD / 4 words,
// scales at out_scale_word). The states' weights are made once, in
// parallel over (head, state), where they fit workgroup memory (each
// reading its head's maxima and sums: no invocation walks a head alone); each
// invocation keeps its words of the merged row (up to MW) for the
// quantisation, and merges again the words of rows wider than that. Needs
// HD % 4 == 0 (int8 models only). attend_group's QUANT_OUT variant does
// this work itself where one workgroup takes a short step's every key
// (attn_group.wgsl), and this dispatch is not planned for that step.
@compute @workgroup_size({{WG}})
fn combine_quant(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let t = wg.x;
  if (t >= step.n) {
    return;
  }
  let n = parts_of(keys(t).y);
  let base = t * p.heads * p.splits * PART;
  let words = p.heads * HD / 4u;
  let pairs = p.heads * n;
  let fast = pairs <= CW;
  if (fast) {
    for (var i = li; i < pairs; i += {{WG}}u) {
      let s = base + ((i / n) * p.splits + i % n) * PART;
      cw[i] = q[s];
      cl[i] = q[s + 1u];
    }
    workgroupBarrier();
    // Each (head, state) reads its head's maxima (every invocation of a
    // head the same words) and makes its own exp; then its head's sum.
    for (var i = li; i < pairs; i += {{WG}}u) {
      let e = exp(cw[i] - head_max(i - i % n, n));
      ce[i] = e;
      cl[i] = cl[i] * e;
    }
    workgroupBarrier();
    for (var i = li; i < pairs; i += {{WG}}u) {
      cw[i] = ce[i] / head_sum(i - i % n, n);
    }
    workgroupBarrier();
  }
  var kept: array<vec4<f32>, MW>;
  var mx = 0.0;
  for (var k = 0u; k < MW; k++) {
    let w = li + k * {{WG}}u;
    if (w < words) {
      kept[k] = merged(base, n, w, fast);
      let v = abs(kept[k]);
      mx = max(mx, max(max(v.x, v.y), max(v.z, v.w)));
    }
  }
  for (var w = li + MW * {{WG}}u; w < words; w += {{WG}}u) {
    let v = abs(merged(base, n, w, fast));
    mx = max(mx, max(max(v.x, v.y), max(v.z, v.w)));
  }
  let scale = quant_scale(wg_max(mx, li));
  for (var w = li; w < words; w += {{WG}}u) {
    var v: vec4<f32>;
    if (w < MW * {{WG}}u) {
      v = kept[w / {{WG}}u];
    } else {
      v = merged(base, n, w, fast);
    }
    o[t * words + w] = pack_i8(vec4<i32>(quant_i8(v.x, scale), quant_i8(v.y, scale),
                                         quant_i8(v.z, scale), quant_i8(v.w, scale)));
  }
  if (li == 0u) {
    o[p.out_scale_word + t] = bitcast<u32>(scale);
  }
}

#if GROUP
#include "attn_group.wgsl"
#endif

#if FLASH
#include "attn_flash.wgsl"
#endif
