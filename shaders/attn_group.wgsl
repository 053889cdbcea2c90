// attn_group: attn.wgsl's decode attention by KV head (its GROUP variants),
// included by attn.wgsl, whose bindings, parameters and helpers it uses.
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
// quantises them (as qkv_prep would) into the token's slot of the arena
// (attn.wgsl's locate: every position is read from the arena then) and
// reads them back from there. Without PREP, q holds the prepared query rows
// and the token's K/V are in the chunk.
// QUANT_OUT (Key.Out "quant", int8, a model of one KV head) is the whole
// step in one workgroup: it takes every tile of the span (grid (1, 1, 1),
// p.splits unused), then does combine_quant's work itself: each head's
// sums divided by its sum of exponentials, and the whole attention row
// (every query head: the workgroup holds them all) quantised by its max
// |x|, a workgroup reduction, into o as combine_quant writes it (packed
// int8 words, the scale at out_scale_word). The merge's dispatch is then
// not needed: short spans, where the merge is mostly a dispatch's fixed
// cost, run so (webgpu.Options.AttnWhole).
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
@group(0) @binding(5) var<storage, read> gn: array<f32>;
@group(0) @binding(6) var<storage, read> cs: array<f32>;

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

// put_kv quantises (int8) or copies the token's new K or V row of KV head g
// into its arena slot.
fn put_kv(li: u32, g: u32, values: bool, base: u32) {
  let row = locate(step.start, g).x;
  let vals = select(p.k_word, p.v_word, values) + row * ROW_WORDS;
#if INT8
  var m = 0.0;
  for (var i = li; i < HD; i += {{WG}}u) {
    m = max(m, abs(kv_src(values, base, i)));
  }
  let scale = quant_scale(wg_max(m, li));
  for (var w = li; w < ROW_WORDS; w += {{WG}}u) {
    let q4 = vec4<i32>(quant_i8(kv_src(values, base, 4u * w), scale), quant_i8(kv_src(values, base, 4u * w + 1u), scale),
                       quant_i8(kv_src(values, base, 4u * w + 2u), scale), quant_i8(kv_src(values, base, 4u * w + 3u), scale));
    kv[vals + w] = pack_i8(q4);
  }
  if (li == 0u) {
    kv[select(p.ks_word, p.vs_word, values) + row] = bitcast<u32>(scale);
  }
#else
  for (var i = li; i < HD; i += {{WG}}u) {
    kv[vals + i] = bitcast<u32>(kv_src(values, base, i));
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

// fetch_tile loads an invocation's words (tile_word's, k-th at li + k *
// WG) of the K and V rows of tile ti of the keys kr (first, count) into kw
// and vw, and returns key li's K and V scales (li < the tile's keys;
// KT <= WG).
fn fetch_tile(kr: vec2<u32>, ti: u32, g: u32, li: u32, kw: ptr<function, array<u32, TW>>, vw: ptr<function, array<u32, TW>>) -> vec2<f32> {
  let first = kr.x + ti * KT;
  let tn = min(KT, kr.y - ti * KT);
  for (var k = 0u; k < TW; k++) {
    let i = li + k * {{WG}}u;
    if (i < tn * ROW_WORDS) {
      (*kw)[k] = tile_word(first, g, i, false);
      (*vw)[k] = tile_word(first, g, i, true);
    }
  }
  var sc = vec2<f32>(0.0);
  if (li < tn) {
    let at = locate(first + li, g);
    sc = vec2<f32>(key_scale_direct(at), value_scale_direct(at));
  }
  return sc;
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
#if QUANT_OUT
  let per = tiles; // one run of every tile
#else
  let per = (tiles + p.splits - 1u) / p.splits; // tiles per split
#endif
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
    // V, into their arena slot.
    let kbase = (p.heads + g) * HD;
    let kinv = row_inv(kbase, li);
    for (var i = li; i < HD; i += {{WG}}u) {
      tile[i] = bitcast<u32>(prepped(kbase, i, kinv, p.k_norm));
    }
    workgroupBarrier();
    put_kv(li, g, false, 0u);
    put_kv(li, g, true, (p.heads + p.kv_heads + g) * HD);
    storageBarrier(); // the rows are read back below
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
  // The tile's K and V words and its scales wait in registers (V until
  // the K rows are done with): the next tile's are loaded as soon as this
  // one's are staged, so that a run of several tiles (long positions)
  // waits for memory once, not once a tile.
  var kw: array<u32, TW>;
  var vw: array<u32, TW>;
  var scales = fetch_tile(kr, t_lo, g, li, &kw, &vw);
  for (var ti = t_lo; ti < t_hi; ti++) {
    let tile0 = ti * KT;
    let tn = min(KT, kr.y - tile0);
    workgroupBarrier(); // the previous tile's value sums are done with tile
    if (li < tn) {
      gks[li] = scales.x;
      gvs[li] = scales.y;
    }
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
      // A count the compiler knows (unrolled, the quads' reads together).
      for (var c = 0u; c < (Q4 + SPL - 1u) / SPL; c++) {
        let a = s + c * SPL;
        if (a < Q4) {
          let k4 = quad(j, a);
          for (var h = 0u; h < G; h++) {
            d[h] += dot(gq[h * Q4 + a], k4);
          }
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
      } else {
        ges[i] = -3.0e38; // no key: below every score
      }
    }
    put_tile(tn, li, &vw); // the barrier above ended every read of the K rows
    if (ti + 1u < t_hi) {
      scales = fetch_tile(kr, ti + 1u, g, li, &kw, &vw);
    }
    workgroupBarrier();
    if (li < G) {
      // Over all KT entries, those past tn neutral: a loop whose bound the
      // compiler knows and unrolls, so its reads of workgroup memory are
      // in flight together rather than one after another (the same below).
      var mt = gm[li];
      for (var jj = 0u; jj < KT; jj++) {
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
      } else {
        ges[i] = 0.0;
        gev[i] = 0.0;
      }
    }
    workgroupBarrier();
    if (li < G) {
      var sum = 0.0;
      for (var jj = 0u; jj < KT; jj++) {
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
        for (var jj = 0u; jj < KT; jj++) {
          // Staged rows past tn are an earlier tile's (or zero): finite,
          // but kept out all the same.
          v += select(vec4<f32>(0.0), gev[h * KT + jj] * quad(jj, a), jj < tn);
        }
        acc[k] = v;
      }
    }
  }
  let head0 = g * G;
#if QUANT_OUT
  // Each head's sum of exponentials, into gm: no read of gm follows the
  // last tile's last barrier. Then the row (heads side by side, Q4 words
  // each) divided by it, its max |x| and its int8 words.
  if (li < G) {
    gm[li] = lsum;
  }
  workgroupBarrier();
  var mx = 0.0;
  for (var k = 0u; k < VPT; k++) {
    let i = li + k * {{WG}}u;
    if (i < GQ) {
      acc[k] = acc[k] / gm[i / Q4];
      let v = abs(acc[k]);
      mx = max(mx, max(max(v.x, v.y), max(v.z, v.w)));
    }
  }
  let scale = quant_scale(wg_max(mx, li));
  for (var k = 0u; k < VPT; k++) {
    let i = li + k * {{WG}}u;
    if (i < GQ) {
      let v = acc[k];
      o[head0 * Q4 + i] = pack_i8(vec4<i32>(quant_i8(v.x, scale), quant_i8(v.y, scale),
                                            quant_i8(v.z, scale), quant_i8(v.w, scale)));
    }
  }
  if (li == 0u) {
    o[p.out_scale_word] = bitcast<u32>(scale);
  }
#else
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
#endif
}
