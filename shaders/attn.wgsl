// attn: causal attention of the step's query tokens over the KV of earlier
// positions (read from the layer's region of the KV arena, a ring for local
// layers) and of the chunk's own positions (read from the chunk KV, which is
// committed to the arena only after the last layer: engine/cpu's scheme).
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
@group(0) @binding(4) var<storage, read> kv: array<u32>;
@group(0) @binding(5) var<storage, read_write> ck: array<u32>; // attend_group writes the token's K/V

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
  if (j < step.start) {
    let slot = select(j, j % p.slots, p.ring == 1u);
    return vec2<u32>(slot * p.kv_heads + g, 0u);
  }
  return vec2<u32>((j - step.start) * p.kv_heads + g, 1u);
}

fn load(chunk: bool, i: u32) -> u32 {
  if (chunk) {
    return ck[i];
  }
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

// merged is dimensions 4w..4w+3 of a token's attention row (all heads side
// by side), from the token's n partial states at base; with weights, from
// cw (fast), else each state's weight computed here.
fn merged(base: u32, n: u32, w: u32, weights: bool) -> vec4<f32> {
  let head = 4u * w / HD;
  let d = 4u * w % HD;
  let b = base + head * p.splits * PART;
  var a = vec4<f32>(0.0);
  if (weights) {
    for (var i = 0u; i < n; i++) {
      let s = b + i * PART + 2u + d;
      a += vec4<f32>(q[s], q[s + 1u], q[s + 2u], q[s + 3u]) * cw[head * n + i];
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
// HD % 4 == 0 (int8 models only).
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
      let h0 = i - i % n;
      var m = -3.0e38;
      for (var k = 0u; k < n; k++) {
        m = max(m, cw[h0 + k]);
      }
      let e = exp(cw[i] - m);
      ce[i] = e;
      cl[i] = cl[i] * e;
    }
    workgroupBarrier();
    for (var i = li; i < pairs; i += {{WG}}u) {
      let h0 = i - i % n;
      var l = 0.0;
      for (var k = 0u; k < n; k++) {
        l += cl[h0 + k];
      }
      cw[i] = ce[i] / l;
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
// attend_group is a decode step's attention (one token) by KV head: the
// workgroup of (split, KV head g) takes every query head of g (G of them)
// over a run of whole tiles of KT keys (one at short positions; the plan's
// room for partial states, p.splits, bounds the runs, so long positions
// give each workgroup several tiles with an online softmax rather than the
// merge hundreds of states). Each K and V row is staged once for all G
// heads (MQA's saving). A key's scores are split over SPL invocations,
// each taking every SPL-th 4-value quad of the row for all G heads, summed
// through workgroup memory; the value sums are split by (head, quad). The
// partial states go to o as attend_split's, for combine or combine_quant.
// PREP folds rope.wgsl's qkv_prep in: q is then the token's raw Q|K|V
// product row, the query heads get the QK-norm and RoPE here (in every
// workgroup, a dimension at a time, with qkv_prep's arithmetic), and the
// workgroup of the last tile prepares the token's K (QK-norm, RoPE) and V,
// quantises them into the chunk KV (what qkv_prep would have written) and
// reads them back from there. Without PREP, q holds the prepared query rows.
const G = {{G}}u;
const SPL = {{SPL}}u; // invocations per key's score: KT * SPL = WG
const Q4 = HD / 4u;   // quads per head row
const GQ = {{GQ}}u;   // quads of the group's query rows, G * Q4
const VPT = {{VPT}}u; // (head, quad) value sums per invocation

var<workgroup> gq: array<vec4<f32>, {{GQ}}>; // the group's query rows, prepared
var<workgroup> gpart: array<f32, {{GP}}>;    // partial scores of (head h, key j) at (h * KT + j) * (SPL + 1)
var<workgroup> ges: array<f32, {{GKT}}>;     // scores of head h at h * KT + j, then exp(score - max)
var<workgroup> gev: array<f32, {{GKT}}>;     // exp(score - max) times the V row's scale
var<workgroup> gks: array<f32, {{KT}}>;      // each tile key's K scale
var<workgroup> gvs: array<f32, {{KT}}>;      // and V scale
var<workgroup> gm: array<f32, {{G}}>;        // each head's running max
var<workgroup> gc: array<f32, {{G}}>;        // exp(previous max - max) of the tile

#if PREP
@group(0) @binding(6) var<storage, read> gn: array<f32>;
@group(0) @binding(7) var<storage, read> cs: array<f32>;

fn gnorm(at: u32, i: u32) -> f32 {
  return select(gn[at + i], gn[at + i] + 1.0, p.one_plus == 1u);
}

// qv is value i of head row base / HD of the product (query heads, then
// K, then V), with its bias.
fn qv(base: u32, i: u32) -> f32 {
  if (p.bias == 1u) {
    return q[base + i] + gn[p.bias_word + base + i];
  }
  return q[base + i];
}

// row_inv is the QK-norm's 1/rms of the head row at base (1 without the
// norm).
fn row_inv(base: u32, li: u32) -> f32 {
  if (p.norm == 0u) {
    return 1.0;
  }
  var ss = 0.0;
  for (var i = li; i < HD; i += {{WG}}u) {
    ss += qv(base, i) * qv(base, i);
  }
  return inv_rms(wg_sum(ss, li), HD, p.eps);
}

// normed is value i of head row base after the QK-norm (weights at gw).
fn normed(base: u32, i: u32, inv: f32, gw: u32) -> f32 {
  if (p.norm == 1u) {
    return qv(base, i) * inv * gnorm(gw, i);
  }
  return qv(base, i);
}

// prepped is dimension i of head row base after the QK-norm and RoPE over
// the pairs (i, i + rot_half): qkv_prep's arithmetic, one output at a
// time.
fn prepped(base: u32, i: u32, inv: f32, gw: u32) -> f32 {
  let rh = p.rot_half;
  let a = normed(base, i, inv, gw);
  if (i >= 2u * rh) {
    return a;
  }
  if (i < rh) {
    let b = normed(base, i + rh, inv, gw);
    return a * cs[p.table + i] - b * cs[p.table + rh + i];
  }
  let j = i - rh;
  let b = normed(base, j, inv, gw);
  return a * cs[p.table + j] + b * cs[p.table + rh + j];
}

// kv_src is value i of the token's new K row (prepared, staged in tile) or
// V row (from q at base).
fn kv_src(values: bool, base: u32, i: u32) -> f32 {
  if (values) {
    return qv(base, i);
  }
  return bitcast<f32>(tile[i]);
}

// put_kv quantises (int8) or copies the token's new K or V row into chunk
// row g of its array.
fn put_kv(li: u32, g: u32, values: bool, base: u32) {
  let vals = select(p.ck_word, p.cv_word, values) + g * ROW_WORDS;
#if INT8
  var m = 0.0;
  for (var i = li; i < HD; i += {{WG}}u) {
    m = max(m, abs(kv_src(values, base, i)));
  }
  let scale = quant_scale(wg_max(m, li));
  for (var w = li; w < ROW_WORDS; w += {{WG}}u) {
    let q4 = vec4<i32>(quant_i8(kv_src(values, base, 4u * w), scale), quant_i8(kv_src(values, base, 4u * w + 1u), scale),
                       quant_i8(kv_src(values, base, 4u * w + 2u), scale), quant_i8(kv_src(values, base, 4u * w + 3u), scale));
    ck[vals + w] = pack_i8(q4);
  }
  if (li == 0u) {
    ck[select(p.cks_word, p.cvs_word, values) + g] = bitcast<u32>(scale);
  }
#else
  for (var i = li; i < HD; i += {{WG}}u) {
    ck[vals + i] = bitcast<u32>(kv_src(values, base, i));
  }
#endif
}
#endif

fn key_scale_direct(at: vec2<u32>) -> f32 {
#if INT8
  let chunk = at.y == 1u;
  return bitcast<f32>(load(chunk, select(p.ks_word, p.cks_word, chunk) + at.x));
#else
  return 1.0;
#endif
}

// TW is how many words of a tile's K (and of its V) rows each invocation
// loads.
const TW = (KT * ROW_WORDS + {{WG}}u - 1u) / {{WG}}u;

// tile_word is word i of the K (values false) or V rows of the tile of
// KV head g's keys from position first, row after row.
fn tile_word(first: u32, g: u32, i: u32, values: bool) -> u32 {
  let at = locate(first + i / ROW_WORDS, g);
  let chunk = at.y == 1u;
  var base = select(p.k_word, p.ck_word, chunk);
  if (values) {
    base = select(p.v_word, p.cv_word, chunk);
  }
  return load(chunk, base + at.x * ROW_WORDS + i % ROW_WORDS);
}

// put_tile stores an invocation's loaded words (tile_word's, k-th at
// li + k * WG) of the tile's tn rows into tile.
fn put_tile(tn: u32, li: u32, w: ptr<function, array<u32, TW>>) {
  for (var k = 0u; k < TW; k++) {
    let i = li + k * {{WG}}u;
    if (i < tn * ROW_WORDS) {
      tile[(i / ROW_WORDS) * STRIDE + i % ROW_WORDS] = (*w)[k];
    }
  }
}

// quad is dimensions 4a..4a+3 of staged row j (K or V), unscaled.
fn quad(j: u32, a: u32) -> vec4<f32> {
#if INT8
  return vec4<f32>(unpack_i8(tile[j * STRIDE + a]));
#else
  let b = j * STRIDE + 4u * a;
  return vec4<f32>(bitcast<f32>(tile[b]), bitcast<f32>(tile[b + 1u]), bitcast<f32>(tile[b + 2u]), bitcast<f32>(tile[b + 3u]));
#endif
}

@compute @workgroup_size({{WG}})
fn attend_group(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let split = wg.x;
  let g = wg.y;
  let kr = keys(0u);
  let tiles = (kr.y + KT - 1u) / KT;
  let per = (tiles + p.splits - 1u) / p.splits; // tiles per split
  let n = (tiles + per - 1u) / per;
  if (step.n != 1u || split >= n) {
    return; // the whole workgroup
  }
  let t_lo = split * per;
  let t_hi = min(tiles, t_lo + per);
#if PREP
  // The group's query heads, QK-normed and roped, into gq.
  var inv: array<f32, G>;
  for (var h = 0u; h < G; h++) {
    inv[h] = 1.0;
  }
  if (p.norm == 1u) {
    // The G rows' sums of squares in one reduction (gpart is free until
    // the first tile's partial scores).
    var ss: array<f32, G>;
    for (var h = 0u; h < G; h++) {
      ss[h] = 0.0;
      for (var i = li; i < HD; i += {{WG}}u) {
        let v = qv((g * G + h) * HD, i);
        ss[h] += v * v;
      }
    }
#if SUBGROUPS
    for (var h = 0u; h < G; h++) {
      let sum = subgroupAdd(ss[h]);
      if (sg_lane == 0u) {
        gpart[h * SG_SLOTS + sg_id] = sum;
      }
    }
    workgroupBarrier();
    for (var h = 0u; h < G; h++) {
      var sum = 0.0;
      for (var i = 0u; i < SG_SLOTS; i++) {
        sum += select(0.0, gpart[h * SG_SLOTS + i], i < sg_count);
      }
      inv[h] = inv_rms(sum, HD, p.eps);
    }
#else
    for (var h = 0u; h < G; h++) {
      gpart[h * {{WG}}u + li] = ss[h];
    }
    workgroupBarrier();
    for (var st = {{WG}}u / 2u; st > 0u; st = st / 2u) {
      if (li < st) {
        for (var h = 0u; h < G; h++) {
          gpart[h * {{WG}}u + li] += gpart[h * {{WG}}u + li + st];
        }
      }
      workgroupBarrier();
    }
    for (var h = 0u; h < G; h++) {
      inv[h] = inv_rms(gpart[h * {{WG}}u], HD, p.eps);
    }
#endif
  }
  for (var i = li; i < GQ; i += {{WG}}u) {
    let h = i / Q4;
    let base = (g * G + h) * HD;
    let d = 4u * (i % Q4);
    gq[i] = vec4<f32>(prepped(base, d, inv[h], p.q_norm), prepped(base, d + 1u, inv[h], p.q_norm),
                      prepped(base, d + 2u, inv[h], p.q_norm), prepped(base, d + 3u, inv[h], p.q_norm));
  }
  if (p.prep_kv == 1u && t_hi == tiles) {
    // The token's own K (normed and roped, staged in tile as floats) and
    // V, into chunk row g.
    let kbase = (p.heads + g) * HD;
    let kinv = row_inv(kbase, li);
    for (var i = li; i < HD; i += {{WG}}u) {
      tile[i] = bitcast<u32>(prepped(kbase, i, kinv, p.k_norm));
    }
    workgroupBarrier();
    put_kv(li, g, false, 0u);
    put_kv(li, g, true, (p.heads + p.kv_heads + g) * HD);
    storageBarrier(); // the chunk rows are read back below
  }
#else
  for (var i = li; i < GQ; i += {{WG}}u) {
    let b = g * G * HD + 4u * i;
    gq[i] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
  }
#endif
  if (li < G) {
    gm[li] = -3.0e38; // exp(gm - the first tile's max) is 0
  }
  var lsum = 0.0; // invocation h < G: head h's sum of exp(score - running max)
  var acc: array<vec4<f32>, VPT>;
  for (var k = 0u; k < VPT; k++) {
    acc[k] = vec4<f32>(0.0);
  }
  for (var ti = t_lo; ti < t_hi; ti++) {
    let tile0 = ti * KT;
    let tn = min(KT, kr.y - tile0);
    // The tile's K and V words and scales, loaded at once: V waits in
    // registers until the K rows are done with.
    var kw: array<u32, TW>;
    var vw: array<u32, TW>;
    for (var k = 0u; k < TW; k++) {
      let i = li + k * {{WG}}u;
      if (i < tn * ROW_WORDS) {
        kw[k] = tile_word(kr.x + tile0, g, i, false);
        vw[k] = tile_word(kr.x + tile0, g, i, true);
      }
    }
    for (var j = li; j < tn; j += {{WG}}u) {
      let at = locate(kr.x + tile0 + j, g);
      gks[j] = key_scale_direct(at);
      gvs[j] = value_scale_direct(at);
    }
    workgroupBarrier(); // the previous tile's value sums are done with tile
    put_tile(tn, li, &kw);
    workgroupBarrier();
    // Partial scores: invocation li takes key li / SPL, quads li % SPL + k*SPL.
    let j = li / SPL;
    let s = li % SPL;
    var d: array<f32, G>;
    for (var h = 0u; h < G; h++) {
      d[h] = 0.0;
    }
    if (j < tn) {
      for (var a = s; a < Q4; a += SPL) {
        let k4 = quad(j, a);
        for (var h = 0u; h < G; h++) {
          d[h] += dot(gq[h * Q4 + a], k4);
        }
      }
    }
    for (var h = 0u; h < G; h++) {
      gpart[(h * KT + j) * (SPL + 1u) + s] = d[h];
    }
    workgroupBarrier();
    for (var i = li; i < G * KT; i += {{WG}}u) {
      let jj = i % KT;
      if (jj < tn) {
        var sc = 0.0;
        for (var k = 0u; k < SPL; k++) {
          sc += gpart[i * (SPL + 1u) + k];
        }
        ges[i] = capped(sc * gks[jj] * p.scale);
      }
    }
    put_tile(tn, li, &vw); // the barrier above ended every read of the K rows
    workgroupBarrier();
    if (li < G) {
      var mt = gm[li];
      for (var jj = 0u; jj < tn; jj++) {
        mt = max(mt, ges[li * KT + jj]);
      }
      gc[li] = exp(gm[li] - mt);
      gm[li] = mt;
    }
    workgroupBarrier();
    for (var i = li; i < G * KT; i += {{WG}}u) {
      let jj = i % KT;
      if (jj < tn) {
        let e = exp(ges[i] - gm[i / KT]);
        ges[i] = e;
        gev[i] = e * gvs[jj];
      }
    }
    workgroupBarrier();
    if (li < G) {
      var sum = 0.0;
      for (var jj = 0u; jj < tn; jj++) {
        sum += ges[li * KT + jj];
      }
      lsum = lsum * gc[li] + sum;
    }
    for (var k = 0u; k < VPT; k++) {
      let i = li + k * {{WG}}u;
      if (i < GQ) {
        let h = i / Q4;
        let a = i % Q4;
        var v = acc[k] * gc[h];
        for (var jj = 0u; jj < tn; jj++) {
          v += gev[h * KT + jj] * quad(jj, a);
        }
        acc[k] = v;
      }
    }
  }
  let head0 = g * G;
  if (li < G) {
    let out = ((head0 + li) * p.splits + split) * PART;
    o[out] = bitcast<u32>(gm[li]);
    o[out + 1u] = bitcast<u32>(lsum);
  }
  for (var k = 0u; k < VPT; k++) {
    let i = li + k * {{WG}}u;
    if (i < GQ) {
      let out = ((head0 + i / Q4) * p.splits + split) * PART + 2u + 4u * (i % Q4);
      o[out] = bitcast<u32>(acc[k].x);
      o[out + 1u] = bitcast<u32>(acc[k].y);
      o[out + 2u] = bitcast<u32>(acc[k].z);
      o[out + 3u] = bitcast<u32>(acc[k].w);
    }
  }
}
#endif

#if FLASH
// attend_flash: prefill attention, flash-style. A workgroup takes FQ query
// rows of one KV head g: rows are (token, query head of g) pairs in that
// order, so a block holds every query head of the KV head (MQA and GQA read
// each K/V row once for all of them) for FQ / group tokens, or a part of
// one token's heads where the group is larger. Keys pass in tiles of FK
// through workgroup memory, shared by the block's rows: K rows, the
// block's scores, then V rows, with an online softmax per row (the
// numerics of attend: float q and probabilities, K/V dequantised by their
// row scales). Each row masks the keys outside its own window. FQ and FK
// are sized so that everything fits WebGPU's default 16 KiB of workgroup
// memory (shaders.FlashShape).
const FQ = {{FQ}}u;
const FK = {{FK}}u;
const FSTRIDE = ROW_WORDS + 1u; // words per staged row: odd, over every bank
const FOUT = ({{FQ}}u * {{HD}}u + {{WG}}u - 1u) / {{WG}}u; // outputs per invocation

var<workgroup> fq: array<f32, {{FQHD}}>;          // the block's query rows
var<workgroup> fkv: array<u32, {{FTILE}}>;        // FK staged K or V rows
var<workgroup> fp: array<f32, {{FQFK}}>;          // scores, then exp(score - max)
var<workgroup> frows: array<u32, {{FK}}>;         // each tile key's row in its array
var<workgroup> fchunks: array<u32, {{FK}}>;       // 1 where that row is in the chunk
var<workgroup> fvs: array<f32, {{FK}}>;           // each tile key's V scale
var<workgroup> fm: array<f32, {{FQ}}>;            // each row's running max
var<workgroup> fl: array<f32, {{FQ}}>;            // each row's running sum
var<workgroup> fcorr: array<f32, {{FQ}}>;         // each row's rescale for this tile

// flash_keys returns the first key position and the last one (inclusive)
// query row qr (of the n * group rows of a KV head) attends to.
fn flash_keys(qr: u32, group: u32) -> vec2<u32> {
  let kr = keys(qr / group);
  return vec2<u32>(kr.x, kr.x + kr.y - 1u);
}

@compute @workgroup_size({{WG}})
fn attend_flash(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let group = p.heads / p.kv_heads;
  let g = wg.y;
  let rows = step.n * group;
  let qr0 = wg.x * FQ;
  if (qr0 >= rows) {
    return; // the whole workgroup
  }
  let nr = min(FQ, rows - qr0);
  // Keys from the first row's first to the last row's last.
  let k0 = flash_keys(qr0, group).x;
  let k1 = flash_keys(qr0 + nr - 1u, group).y;
  for (var i = li; i < FQ * HD; i += {{WG}}u) {
    let r = i / HD;
    var v = 0.0;
    if (r < nr) {
      let qr = qr0 + r;
      let head = g * group + qr % group;
      v = q[((qr / group) * p.heads + head) * HD + i % HD];
    }
    fq[i] = v;
  }
  if (li < FQ) {
    fm[li] = -3.0e38;
    fl[li] = 0.0;
  }
  var acc: array<f32, FOUT>;
  for (var k = 0u; k < FOUT; k++) {
    acc[k] = 0.0;
  }
  for (var tile0 = k0; tile0 <= k1; tile0 += FK) {
    let tn = min(FK, k1 + 1u - tile0);
    for (var j = li; j < tn; j += {{WG}}u) {
      let at = locate(tile0 + j, g);
      frows[j] = at.x;
      fchunks[j] = at.y;
    }
    workgroupBarrier();
    flash_stage(tn, false, li);
    workgroupBarrier();
    // Scores: row i / FK, key i % FK.
    for (var i = li; i < FQ * FK; i += {{WG}}u) {
      let r = i / FK;
      let j = i % FK;
      var s = 0.0;
      if (r < nr && j < tn) {
        s = flash_score(r, j);
      }
      fp[i] = s;
    }
    workgroupBarrier();
    // Each row's online softmax over the tile (its own keys only), while
    // every invocation stages the V rows over the K rows.
    if (li < nr) {
      let kr = flash_keys(qr0 + li, group);
      var tm = -3.0e38;
      for (var j = 0u; j < tn; j++) {
        let pos = tile0 + j;
        if (pos >= kr.x && pos <= kr.y) {
          tm = max(tm, fp[li * FK + j]);
        }
      }
      let m = fm[li];
      let nm = max(m, tm);
      let corr = exp(m - nm);
      var sum = 0.0;
      for (var j = 0u; j < FK; j++) {
        let pos = tile0 + j;
        var e = 0.0;
        if (j < tn && pos >= kr.x && pos <= kr.y) {
          e = exp(fp[li * FK + j] - nm);
        }
        fp[li * FK + j] = e;
        sum += e;
      }
      fm[li] = nm;
      fl[li] = fl[li] * corr + sum;
      fcorr[li] = corr;
    }
    flash_stage(tn, true, li);
    for (var j = li; j < tn; j += {{WG}}u) {
      let chunk = fchunks[j] == 1u;
#if INT8
      fvs[j] = bitcast<f32>(load(chunk, select(p.vs_word, p.cvs_word, chunk) + frows[j]));
#else
      fvs[j] = 1.0;
#endif
    }
    workgroupBarrier();
    // Outputs: row o / HD, dimension o % HD.
    for (var k = 0u; k < FOUT; k++) {
      let o = li + k * {{WG}}u;
      let r = o / HD;
      if (r < nr) {
        let d = o % HD;
        var a = acc[k] * fcorr[r];
        for (var j = 0u; j < tn; j++) {
          a += (fp[r * FK + j] * fvs[j]) * flash_value(j, d);
        }
        acc[k] = a;
      }
    }
    workgroupBarrier();
  }
  for (var k = 0u; k < FOUT; k++) {
    let oi = li + k * {{WG}}u;
    let r = oi / HD;
    if (r < nr) {
      let qr = qr0 + r;
      let head = g * group + qr % group;
      o[((qr / group) * p.heads + head) * HD + oi % HD] = bitcast<u32>(acc[k] / fl[r]);
    }
  }
}

// flash_stage copies the tile's tn K rows (values false) or V rows into fkv.
fn flash_stage(tn: u32, values: bool, li: u32) {
  for (var i = li; i < tn * ROW_WORDS; i += {{WG}}u) {
    let j = i / ROW_WORDS;
    let chunk = fchunks[j] == 1u;
    var base = select(p.k_word, p.ck_word, chunk);
    if (values) {
      base = select(p.v_word, p.cv_word, chunk);
    }
    fkv[j * FSTRIDE + i % ROW_WORDS] = load(chunk, base + frows[j] * ROW_WORDS + i % ROW_WORDS);
  }
}

// flash_score is q.k * scale of block row r and staged K row j, soft-capped.
fn flash_score(r: u32, j: u32) -> f32 {
  var s = 0.0;
  let b = j * FSTRIDE;
  let qb = r * HD;
#if INT8
  for (var w = 0u; w < ROW_WORDS; w++) {
    let k = unpack_i8(fkv[b + w]);
    s += dot(vec4<f32>(fq[qb + 4u * w], fq[qb + 4u * w + 1u], fq[qb + 4u * w + 2u], fq[qb + 4u * w + 3u]), vec4<f32>(k));
  }
  let chunk = fchunks[j] == 1u;
  s = s * bitcast<f32>(load(chunk, select(p.ks_word, p.cks_word, chunk) + frows[j]));
#else
  for (var d = 0u; d < HD; d++) {
    s += fq[qb + d] * bitcast<f32>(fkv[b + d]);
  }
#endif
  return capped(s * p.scale);
}

// flash_value is dimension d of staged V row j, unscaled.
fn flash_value(j: u32, d: u32) -> f32 {
#if INT8
  return f32(i8_at(fkv[j * FSTRIDE + d / 4u], d % 4u));
#else
  return bitcast<f32>(fkv[j * FSTRIDE + d]);
#endif
}
#endif
