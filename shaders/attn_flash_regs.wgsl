// attn_flash_regs: attend_flash's REGS variant, included by attn_flash.wgsl
// in place of the first one. The same blocks of FQ query rows of one KV
// head and tiles of FK keys, the same numerics (float q and probabilities,
// K/V dequantised by their row scales, online softmax, soft-cap, each
// row's own window), with the work of a tile spread so that no invocation
// walks a long chain of workgroup-memory loads:
// - scores: each invocation takes one (row, key) pair over a slice of the
//   head (FDS slices where the pairs are fewer than the invocations), q as
//   vec4 loads, each K word unpacked once per 4 products; the partial sums
//   meet in workgroup memory;
// - softmax: one invocation per (row, key): each finds its row's max by
//   reading the row's scores (the same loads for all of a warp: a
//   broadcast) and takes its own exponential, so no invocation loops over
//   a row of exponentials;
// - P.V: each invocation owns one quad of output dims of FPR rows in named
//   registers (a0..a3: written out, since dynamically indexed private
//   arrays were seen to spill to memory on the H200), each V word unpacked
//   once for all FPR rows; it keeps its rows' running sums itself;
// - the next tile's K rows and this tile's V rows are loaded from memory
//   into registers (wa, wb) a phase before they are stored into workgroup
//   memory, so the loads' latency overlaps the arithmetic.
const FQ = {{FQ}}u;
const FK = {{FK}}u;
const FQPR = {{HD}}u / 4u;      // quads per row
const FDS = {{FDS}}u;           // slices of a row's quads that a score is split over
const FQSL = FQPR / FDS;        // quads per slice
const FQSTRIDE = FQPR + 1u;     // vec4s per staged q row: rows start 4 banks apart
const FSTRIDE = ROW_WORDS + 1u; // words per staged K/V row: odd, over every bank
const FPR = {{FPR}}u;           // rows per invocation in P.V: 1, 2 or 4
const FPV = FQ / FPR * FQPR;    // P.V's invocations: (rows, quad) items, at most WG
const FW = {{FW}}u;             // tile words each invocation loads ahead: 1 to 8
const FPAIRS = FQ * FK;         // (row, key) pairs of a tile, at most WG
const MASKED = -3.0e38;         // a score outside its row's keys

var<workgroup> fq: array<vec4<f32>, {{FQV}}>; // the block's query rows, FQSTRIDE apart
var<workgroup> fkv: array<u32, {{FTILE}}>;    // FK staged K or V rows
// fs holds the partial scores [slice][row][key]; then the scores in
// slice 0's place and the exponentials [key][row] in slice 1's.
var<workgroup> fs: array<f32, {{FSW}}>;
var<workgroup> fks: array<f32, {{FK}}>;       // each tile key's K scale (1 in float32 mode)
var<workgroup> fvs: array<f32, {{FK}}>;       // each tile key's V scale
var<workgroup> fcorr: array<f32, {{FQ}}>;     // each row's rescale for this tile

@compute @workgroup_size({{WG}})
fn attend_flash(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let group = p.heads / p.kv_heads;
  let g = wg.y;
  let rows = step.n * group;
  // The last block first: a causal step's later rows have the most keys,
  // so where the GPU cannot hold every workgroup at once the longest
  // start first rather than last.
  let qr0 = (nwg.x - 1u - wg.x) * FQ;
  if (qr0 >= rows) {
    return; // the whole workgroup
  }
  let nr = min(FQ, rows - qr0);
  // Keys from the first row's first to the last row's last.
  let k0 = flash_keys(qr0, group).x;
  let k1 = flash_keys(qr0 + nr - 1u, group).y;
  for (var i = li; i < FQ * FQPR; i += {{WG}}u) {
    let r = i / FQPR;
    let c = i % FQPR;
    var v = vec4<f32>(0.0);
    if (r < nr) {
      let qr = qr0 + r;
      let b = ((qr / group) * p.heads + g * group + qr % group) * HD + 4u * c;
      v = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
    }
    fq[r * FQSTRIDE + c] = v;
  }
  // The softmax's pair: row er, key ej; its row's keys (none past nr).
  let er = li / FK;
  let ej = li % FK;
  var ekr = vec2<u32>(1u, 0u);
  if (li < FPAIRS && er < nr) {
    ekr = flash_keys(qr0 + er, group);
  }
  var m = MASKED; // row er's running max
  // P.V's item: rows pr..pr+FPR-1, dims 4*pc..4*pc+3.
  let pc = li % FQPR;
  let pr = li / FQPR * FPR;
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  var l0 = 0.0;
  var l1 = 0.0;
  var l2 = 0.0;
  var l3 = 0.0;
  // The first tile's K words and this invocation's key's scales.
  var tn = min(FK, k1 + 1u - k0);
  var wa = flash_fetch(k0, tn, false, g, li, 0u);
  var wb = vec4<u32>(0u);
  if (FW > 4u) {
    wb = flash_fetch(k0, tn, false, g, li, 1u);
  }
  var sk = 1.0;
  var sv = 1.0;
  flash_scales(&sk, &sv, k0, tn, g, li);
  for (var tile0 = k0; tile0 <= k1; tile0 += FK) {
    flash_put(wa, li, 0u);
    if (FW > 4u) {
      flash_put(wb, li, 1u);
    }
    if (li < FK) {
      fks[li] = sk;
      fvs[li] = sv;
    }
    workgroupBarrier();
    // This tile's V words load while the scores are made.
    wa = flash_fetch(tile0, tn, true, g, li, 0u);
    if (FW > 4u) {
      wb = flash_fetch(tile0, tn, true, g, li, 1u);
    }
    if (li < FPAIRS * FDS) {
      // li is [slice][row][key]: fs's own order.
      fs[li] = flash_partial(li / FK % FQ, li % FK, li / FPAIRS);
    }
    workgroupBarrier();
    // V over K, which no one reads now.
    flash_put(wa, li, 0u);
    if (FW > 4u) {
      flash_put(wb, li, 1u);
    }
    if (li < FPAIRS) {
      var s = fs[li];
      for (var h = 1u; h < FDS; h++) {
        s += fs[h * FPAIRS + li];
      }
      s = capped(s * fks[ej] * p.scale);
      let pos = tile0 + ej;
      if (ej >= tn || pos < ekr.x || pos > ekr.y) {
        s = MASKED;
      }
      fs[li] = s; // only this invocation reads or writes fs[li] here
    }
    workgroupBarrier();
    // The next tile's K words load while the softmax and P.V run.
    let next = tile0 + FK;
    if (next <= k1) {
      let nn = min(FK, k1 + 1u - next);
      wa = flash_fetch(next, nn, false, g, li, 0u);
      if (FW > 4u) {
        wb = flash_fetch(next, nn, false, g, li, 1u);
      }
      flash_scales(&sk, &sv, next, nn, g, li);
    }
    if (li < FPAIRS) {
      let tm = flash_row_max(er);
      let nm = max(m, tm);
      let pos = tile0 + ej;
      var e = 0.0;
      if (ej < tn && pos >= ekr.x && pos <= ekr.y) {
        e = exp(fs[li] - nm);
      }
      fs[FPAIRS + ej * FQ + er] = e;
      if (ej == 0u) {
        fcorr[er] = exp(m - nm);
      }
      m = nm;
    }
    workgroupBarrier();
    if (li < FPV) {
      let c0 = fcorr[pr];
      a0 *= c0;
      l0 *= c0;
      if (FPR > 1u) {
        let c1 = fcorr[pr + 1u];
        a1 *= c1;
        l1 *= c1;
      }
      if (FPR > 2u) {
        let c2 = fcorr[pr + 2u];
        let c3 = fcorr[pr + 3u];
        a2 *= c2;
        l2 *= c2;
        a3 *= c3;
        l3 *= c3;
      }
      for (var j = 0u; j < tn; j++) {
        let v = flash_vquad(j, pc);
        let vs = fvs[j];
        let eb = FPAIRS + j * FQ + pr;
        let e0 = fs[eb];
        a0 += (e0 * vs) * v;
        l0 += e0;
        if (FPR > 1u) {
          let e1 = fs[eb + 1u];
          a1 += (e1 * vs) * v;
          l1 += e1;
        }
        if (FPR > 2u) {
          let e2 = fs[eb + 2u];
          let e3 = fs[eb + 3u];
          a2 += (e2 * vs) * v;
          l2 += e2;
          a3 += (e3 * vs) * v;
          l3 += e3;
        }
      }
    }
    workgroupBarrier();
    tn = min(FK, k1 + 1u - min(next, k1));
  }
  if (li < FPV) {
    flash_out(a0, l0, qr0, pr, nr, pc, g, group);
    if (FPR > 1u) {
      flash_out(a1, l1, qr0, pr + 1u, nr, pc, g, group);
    }
    if (FPR > 2u) {
      flash_out(a2, l2, qr0, pr + 2u, nr, pc, g, group);
      flash_out(a3, l3, qr0, pr + 3u, nr, pc, g, group);
    }
  }
}

// flash_row_max is the largest of block row r's FK scores in fs, four
// independent loads a pass.
fn flash_row_max(r: u32) -> f32 {
  let b = r * FK;
  var m0 = MASKED;
  var m1 = MASKED;
  var m2 = MASKED;
  var m3 = MASKED;
  var j = 0u;
  for (; j + 3u < FK; j += 4u) {
    m0 = max(m0, fs[b + j]);
    m1 = max(m1, fs[b + j + 1u]);
    m2 = max(m2, fs[b + j + 2u]);
    m3 = max(m3, fs[b + j + 3u]);
  }
  for (; j < FK; j++) {
    m0 = max(m0, fs[b + j]);
  }
  return max(max(m0, m1), max(m2, m3));
}

// flash_out writes block row r's output dims 4*c..4*c+3 (a over its sum l).
fn flash_out(a: vec4<f32>, l: f32, qr0: u32, r: u32, nr: u32, c: u32, g: u32, group: u32) {
  if (r >= nr) {
    return;
  }
  let qr = qr0 + r;
  let b = ((qr / group) * p.heads + g * group + qr % group) * HD + 4u * c;
  let v = a / l;
  o[b] = bitcast<u32>(v.x);
  o[b + 1u] = bitcast<u32>(v.y);
  o[b + 2u] = bitcast<u32>(v.z);
  o[b + 3u] = bitcast<u32>(v.w);
}

// flash_word is word i of the tile of tn keys from position tile0 (its K
// rows, or its V rows where values), 0 past the tile's keys.
fn flash_word(tile0: u32, tn: u32, i: u32, values: bool, g: u32) -> u32 {
  let j = i / ROW_WORDS;
  if (j >= tn) {
    return 0u;
  }
  let at = locate(tile0 + j, g);
  let chunk = at.y == 1u;
  var base = select(p.k_word, p.ck_word, chunk);
  if (values) {
    base = select(p.v_word, p.cv_word, chunk);
  }
  return load(chunk, base + at.x * ROW_WORDS + i % ROW_WORDS);
}

// flash_fetch loads this invocation's words 4*part.. 4*part+3 of a tile
// (tile words li + (4*part + c) * WG), those past FW left 0.
fn flash_fetch(tile0: u32, tn: u32, values: bool, g: u32, li: u32, part: u32) -> vec4<u32> {
  var w = vec4<u32>(0u);
  let i = li + 4u * part * {{WG}}u;
  w.x = flash_word(tile0, tn, i, values, g);
  if (4u * part + 1u < FW) {
    w.y = flash_word(tile0, tn, i + {{WG}}u, values, g);
  }
  if (4u * part + 2u < FW) {
    w.z = flash_word(tile0, tn, i + 2u * {{WG}}u, values, g);
  }
  if (4u * part + 3u < FW) {
    w.w = flash_word(tile0, tn, i + 3u * {{WG}}u, values, g);
  }
  return w;
}

// flash_scales loads the K and V scales of the tile's key li (1 past the
// tile, and in float32 mode).
fn flash_scales(sk: ptr<function, f32>, sv: ptr<function, f32>, tile0: u32, tn: u32, g: u32, li: u32) {
#if INT8
  if (li < tn) {
    let at = locate(tile0 + li, g);
    let chunk = at.y == 1u;
    *sk = bitcast<f32>(load(chunk, select(p.ks_word, p.cks_word, chunk) + at.x));
    *sv = bitcast<f32>(load(chunk, select(p.vs_word, p.cvs_word, chunk) + at.x));
  }
#endif
}

// flash_put stores the words flash_fetch loaded into their staged rows.
fn flash_put(w: vec4<u32>, li: u32, part: u32) {
  let i = li + 4u * part * {{WG}}u;
  flash_put1(w.x, i);
  flash_put1(w.y, i + {{WG}}u);
  flash_put1(w.z, i + 2u * {{WG}}u);
  flash_put1(w.w, i + 3u * {{WG}}u);
}

fn flash_put1(w: u32, i: u32) {
  if (i < FK * ROW_WORDS) {
    fkv[i / ROW_WORDS * FSTRIDE + i % ROW_WORDS] = w;
  }
}

// flash_partial is q.k over slice h of block row r and staged K row j
// (unscaled): four quads a pass into four sums, so that each pass's loads
// are independent of one another and of the adds of the pass before.
fn flash_partial(r: u32, j: u32, h: u32) -> f32 {
  let qb = r * FQSTRIDE + h * FQSL;
  let kc = h * FQSL;
  var s0 = 0.0;
  var s1 = 0.0;
  var s2 = 0.0;
  var s3 = 0.0;
  var c = 0u;
  for (; c + 3u < FQSL; c += 4u) {
    s0 += dot(fq[qb + c], flash_kquad(j, kc + c));
    s1 += dot(fq[qb + c + 1u], flash_kquad(j, kc + c + 1u));
    s2 += dot(fq[qb + c + 2u], flash_kquad(j, kc + c + 2u));
    s3 += dot(fq[qb + c + 3u], flash_kquad(j, kc + c + 3u));
  }
  for (; c < FQSL; c++) {
    s0 += dot(fq[qb + c], flash_kquad(j, kc + c));
  }
  return (s0 + s1) + (s2 + s3);
}

// flash_kquad is quad c of staged K row j, unscaled.
fn flash_kquad(j: u32, c: u32) -> vec4<f32> {
#if INT8
  return vec4<f32>(unpack_i8(fkv[j * FSTRIDE + c]));
#else
  let b = j * FSTRIDE + 4u * c;
  return vec4<f32>(bitcast<f32>(fkv[b]), bitcast<f32>(fkv[b + 1u]), bitcast<f32>(fkv[b + 2u]), bitcast<f32>(fkv[b + 3u]));
#endif
}

// flash_vquad is quad c of staged V row j, unscaled.
fn flash_vquad(j: u32, c: u32) -> vec4<f32> {
  return flash_kquad(j, c);
}
