// attn_flash: attn.wgsl's flash prefill attention (its FLASH variants),
// included by attn.wgsl, whose bindings, parameters and helpers it uses.
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
// memory (shaders.FlashShape). The REGS variant (attn_flash_regs.wgsl)
// spreads each tile's work over the invocations with its sums in registers.

// flash_keys returns the first key position and the last one (inclusive)
// query row qr (of the n * group rows of a KV head) attends to.
fn flash_keys(qr: u32, group: u32) -> vec2<u32> {
  let kr = keys(qr / group);
  return vec2<u32>(kr.x, kr.x + kr.y - 1u);
}

#if REGS
#include "attn_flash_regs.wgsl"
#else
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
