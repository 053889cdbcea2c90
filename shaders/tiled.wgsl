// tiled: y = W x for the many tokens of a prefill step. A workgroup of 256
// computes a tile of 64 rows by 64 tokens; W and x pass through workgroup
// memory 32 columns at a time, as float32, and each invocation keeps a 4x4
// block of sums in registers, so every weight read from memory serves 64
// tokens. int8 (W8A8): the values are unpacked to exact floats and the
// products summed with float32 FMA, which is exact for up to 1024 products
// (their sums stay below 2^24); the sums move into int32 every 1024
// columns, so the result equals the int32 accumulation of matmul.wgsl.
//
// DOT4 (int8 only, browsers with packed_4x8_integer_dot_product): the tiles
// stay packed, four int8 to a word, 64 columns per pass, and the products
// go through dot4I8Packed straight into int32: no unpacking, a quarter of
// the instructions, and the same int32 sums.
//
// MATRIX (int8 only, chromium-experimental-subgroup-matrix: tensor cores):
// the tiles are staged packed as for DOT4, and each subgroup multiplies
// 16x16 blocks of the tile with subgroupMatrixMultiplyAccumulate on i8
// matrices into i32 ones: the same exact int32 sums, in another order
// (integer sums do not depend on it). The sums pass through workgroup
// memory once at the end, where every invocation dequantises its share.
//
// BIG (DOT4 with Key.Tile 128): a tile of 128 rows by 128 tokens, each
// invocation an 8x8 block of sums (twice the products per value read from
// workgroup memory of the 4x4 block), 32 int8 columns per pass, and two
// buffers of workgroup memory (16 KiB, WebGPU's default): each invocation
// reads pass k+1's words from storage into registers before it computes
// pass k, and stores them into the other buffer after, so storage latency
// hides behind the products and one barrier per pass suffices. Opt-in
// (Tiled): slower than the 64x64 tile on the H200 so far.
//
// SPLIT (BIG DOT4, Key.Split): the grid's z splits the columns' passes
// into slices, so a product of few rows (a 1B model's down product, 1,152
// rows of 6,912 columns: 36 tiles at 512 tokens) still has workgroups for
// every multiprocessor; each adds its int32 sums into part with atomics,
// exact in any order, and tiled_merge.wgsl dequantises them.
//
// UNROLL (Key.Tile 64, opt-in), the written-out 64x64 tiles. DOT4: the
// first tile's products with constant indices into the sums, and two
// buffers of workgroup memory with the next pass read into registers
// first, one barrier a pass (as the large tile). MATRIX (where the tier
// has MatrixTile): 96 int8 columns a pass, each of 8 subgroups a 16x32
// block of the tile (6 products a pass), the next pass read into registers
// first. Both have a SPLIT form, for products of few rows.
//
// BIG with MATRIX: the same tile, passes and buffers, the words kept as
// i32 for the matrix loads; each of 8 subgroups of 32 multiplies 2x4
// blocks of 16x16 (Tier.MatrixTile: subgroups of at most 32).
#if MATRIX
enable subgroups;
enable chromium_experimental_subgroup_matrix;
#endif
#include "common.wgsl"

#include "matmul_params.wgsl"
@group(0) @binding(1) var<uniform> p: MatmulParams;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<u32>;
#if SPLIT
// The split product adds its slice's int32 sums into part[(t - t0) *
// rows + row]; tiled_merge.wgsl dequantises them into y and zeroes part.
@group(0) @binding(4) var<storage, read_write> part: array<atomic<i32>>;
#else
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#endif

// out_sum takes a tile's int32 sum for (row, token t), t0 the step's
// first token: its split slice's share into part, else dequantised (and
// soft-capped) into y. Every int8 tile ends with it.
fn out_sum(t: u32, row: u32, t0: u32, sum: i32) {
#if SPLIT
  atomicAdd(&part[(t - t0) * p.rows + row], sum);
#else
  var v = f32(sum) * (bitcast<f32>(x[p.x_scale_word + t]) * bitcast<f32>(w[p.w_scale_word + row]));
  if (p.softcap > 0.0) {
    v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
  }
  y[(t - t0) * p.out_stride + p.out_row + row] = v;
#endif
}

const BM = 64u; // rows per tile
const BN = 64u; // tokens per tile
const BK = 32u; // columns per pass through workgroup memory

#if BIG
const BIG_T = 128u;  // rows and tokens of the tile
const BIG_PW = 8u;   // words (4 int8 each) of a row per pass
#if MATRIX
// sm[buf * 2048 + r * 8 + word] is word `word` of the pass's 8 of tile row
// r of W in buffer buf, sm[buf * 2048 + 1024 + t * 8 + word] x's for token
// t. Subgroup sg < 8 owns tokens 32*(sg/2).. by rows 64*(sg%2)..: 2 by 4
// blocks of 16x16, so each pass loads 2 left and 4 right matrices for 8
// products (the 64x64 tile: 2 of each for 2). After the last pass sm holds
// 16 blocks of int32 sums at a time, four rounds.
const SM_M = 16u;
const SM_K = 32u;
const BYTES_PER_UNIT = 4u; // see the 64x64 MATRIX variant's
const HALF = 2048u;        // words of one buffer
const XOFF = 1024u;        // word offset of x's tile in a buffer
var<workgroup> sm: array<i32, 4096>;

fn big_store(buf: u32, sr: u32, sv: u32, wv: vec4<u32>, xv: vec4<u32>) {
  for (var e = 0u; e < 4u; e++) {
    sm[buf + sr * BIG_PW + sv * 4u + e] = bitcast<i32>(wv[e]);
    sm[buf + XOFF + sr * BIG_PW + sv * 4u + e] = bitcast<i32>(xv[e]);
  }
}

// big_round dequantises round h of the sums: element li of each of sm's 16
// slots (token li/16, row li%16 of its block: neighbours write
// neighbouring rows of y); slot s holds acc[2h + s%2] of subgroup s/2.
fn big_round(h: u32, li: u32, row0: u32, tok0: u32, t0: u32) {
  for (var s = 0u; s < 16u; s++) {
    let owner = s / 2u;
    let j = 2u * h + s % 2u;
    let t = tok0 + (2u * (owner / 2u) + j / 4u) * SM_M + li / SM_M;
    let row = row0 + (4u * (owner % 2u) + j % 4u) * SM_M + li % SM_M;
    if (t < step.n && row < p.rows) {
      out_sum(t, row, t0, sm[s * SM_M * SM_M + li]);
    }
  }
}
#else
// wb[buf * 256 + v * 128 + r] is vector v (16 int8 columns) of the pass's
// 32 columns of tile row r in buffer buf; xb likewise for tokens. An
// invocation's rows are lx + 16*i and its tokens ly + 16*j, so the 16
// invocations of a row of the workgroup read 16 neighbouring vectors of wb
// and one of xb, and its neighbours write neighbouring rows of y.
var<workgroup> wb: array<vec4<u32>, 512>;
var<workgroup> xb: array<vec4<u32>, 512>;
#endif
// big_load is vector sv of pass kt of row (or token) lim-checked r0 + sr
// of W (or x): zero past the matrix, so rows of any multiple of 4 columns.
fn big_load(src_w: bool, sr: u32, r0: u32, lim: u32, kt: u32, sv: u32, words: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (r0 + sr >= lim) {
    return v;
  }
  let word = kt * BIG_PW + sv * 4u;
  let base = (r0 + sr) * words;
  for (var e = 0u; e < 4u; e++) {
    if (word + e < words) {
      if (src_w) {
        v[e] = w[base + word + e];
      } else {
        v[e] = x[base + word + e];
      }
    }
  }
  return v;
}

#if !MATRIX
// big_out takes the sum of row lx + 16i, token ly + 16j of the tile: into
// y, dequantised, or (SPLIT) added into part.
fn big_out(i: u32, j: u32, sum: i32, row0: u32, tok0: u32, t0: u32, lx: u32, ly: u32) {
  let t = tok0 + ly + 16u * j;
  let row = row0 + lx + 16u * i;
  if (t >= step.n || row >= p.rows) {
    return;
  }
  out_sum(t, row, t0, sum);
}
#endif
#else
#if MATRIX
#if UNROLL
// The written-out 64x64 MATRIX tile (Key.Tile 64): 96 int8 columns (24
// words) a pass, so each of 8 subgroups (of at most 32: Tier.MatrixTile)
// does 6 products between barriers where the first MATRIX tile does 2; its
// two accumulators are plain variables (constant indices: registers); and
// each invocation reads its share of pass k+1 from storage into registers
// before it computes pass k, so storage latency hides behind the products.
// sm[r * 28 + word] is word `word` of the pass of tile row r of W, sm[MX +
// t * 28 + word] x's for token t: rows 112 bytes apart, so the 8 rows of
// 16 bytes that a matrix load reads at a time fall in 8 distinct groups
// of banks (rows 128 bytes apart, a pass of 128 columns, would all fall
// in one, and 36 words a row do not fit 16 KiB). After the last pass sm
// holds the tile's 16 blocks of int32 sums (all of its 16 KiB).
const SM_M = 16u;
const SM_K = 32u;
const MP = 24u;            // words of a tile row per pass (96 int8)
const MS = 28u;            // words from one row of sm to the next
const MX = 1792u;          // word offset of x's tile in sm (64 rows of W)
const MV = 6u;             // words each invocation stages per pass, of W and of x
const BYTES_PER_UNIT = 4u; // see the first MATRIX tile's
var<workgroup> sm: array<i32, 4096>;

// m_word is word e*256 + li of pass kt of the tile of W (or x), whose rows
// (tokens) start at r0: row (e*256 + li) / 24, so a subgroup reads
// neighbouring words of a row or two. Zero past the matrix: rows of any
// multiple of 4 columns.
fn m_word(src_w: bool, e: u32, li: u32, r0: u32, lim: u32, kt: u32, words: u32) -> u32 {
  let idx = e * 256u + li;
  let r = r0 + idx / MP;
  let word = kt * MP + idx % MP;
  if (r >= lim || word >= words) {
    return 0u;
  }
  if (src_w) {
    return w[r * words + word];
  }
  return x[r * words + word];
}

// m_slot is where m_word's word e goes in sm (W's; x's at MX after it).
fn m_slot(e: u32, li: u32) -> u32 {
  let idx = e * 256u + li;
  return (idx / MP) * MS + idx % MP;
}
#else
// One pass stages 64 int8 columns (16 words) of the tile's 64 rows of W and
// 64 tokens of x, row after row: sm[r * 16 + word] is W's, sm[XT + t * 16 +
// word] x's. After the last pass the same memory holds 8 blocks of int32
// sums at a time. The shape is the i8 x i8 -> i32 configuration 16x16x32
// (M x N x K) that Tier.Matrix requires of the device.
const SM_M = 16u;
const SM_K = 32u;
const XT = 1024u;         // word offset of x's tile in sm
const PASS_WORDS = 16u;   // words of a tile row per pass (64 int8)
const BLOCKS = 16u;       // 16x16 blocks of sums in a 64x64 tile
const SLOTS = 8u;         // blocks of sums sm holds at once (8 x 256 words)
// A subgroup takes blocks sg, sg + n, ... (n subgroups): 8 of them where
// subgroups of 128 give two to a workgroup, 1 where subgroups of 16 or
// fewer give a block or none to each.
const ACC = 8u;
// BYTES_PER_UNIT is how many bytes of an i8 matrix one step of the matrix
// loads' offset and stride covers: one element of the array (an i32 word),
// as Dawn counts them.
const BYTES_PER_UNIT = 4u;
var<workgroup> sm: array<i32, 2048>;

fn stage_word(src_w: bool, r: u32, r0: u32, lim: u32, word: u32, words: u32) -> u32 {
  if (r0 + r >= lim || word >= words) {
    return 0u;
  }
  if (src_w) {
    return w[(r0 + r) * words + word];
  }
  return x[(r0 + r) * words + word];
}
#endif
#else
#if DOT4
// wp[v * 64 + slot(r)] is vector v (16 int8 columns) of the pass's 64
// columns of tile row r; xp likewise for tokens. slot puts row 4*q+i at
// i*16+q, so the invocations that share a row block (ty) or token block
// (tx) read neighbouring vectors: 16-byte reads spread over every bank of
// workgroup memory, where a row-major tile sends them to the same few.
#if UNROLL
// Two buffers of each (16 KiB in all): wp[256 * buf + v * 64 + slot(r)].
var<workgroup> wp: array<vec4<u32>, 512>;
var<workgroup> xp: array<vec4<u32>, 512>;
#else
var<workgroup> wp: array<vec4<u32>, 256>;
var<workgroup> xp: array<vec4<u32>, 256>;
#endif

fn slot(r: u32) -> u32 {
  return (r % 4u) * 16u + r / 4u;
}

// stage_word is word `word` of row (or token) r0 + r of W (or x), zero past
// the matrix: rows of any multiple of 4 columns, as the other variants take.
fn stage_word(src_w: bool, r: u32, r0: u32, lim: u32, word: u32, words: u32) -> u32 {
  if (r0 + r >= lim || word >= words) {
    return 0u;
  }
  if (src_w) {
    return w[(r0 + r) * words + word];
  }
  return x[(r0 + r) * words + word];
}
#if UNROLL
// small_load is vector sv of pass kt (16 words) of row (or token) r0 + sr
// of W (or x), zero past the matrix.
fn small_load(src_w: bool, sr: u32, r0: u32, lim: u32, kt: u32, sv: u32, words: u32) -> vec4<u32> {
  let word = kt * 16u + sv * 4u;
  var v: vec4<u32>;
  for (var e = 0u; e < 4u; e++) {
    v[e] = stage_word(src_w, sr, r0, lim, word + e, words);
  }
  return v;
}

// small_out takes the sum of row 4*ty + i, token 4*tx + j of the tile
// into y, dequantised.
fn small_out(i: u32, j: u32, sum: i32, row0: u32, tok0: u32, t0: u32, tx: u32, ty: u32) {
  let t = tok0 + 4u * tx + j;
  let row = row0 + 4u * ty + i;
  if (t >= step.n || row >= p.rows) {
    return;
  }
  out_sum(t, row, t0, sum);
}
#endif
#else
// ws[k * 16 + r / 4][r % 4] is W[row0 + r][k0 + k]; xs likewise for tokens.
var<workgroup> ws: array<vec4<f32>, 512>;
var<workgroup> xs: array<vec4<f32>, 512>;

#if INT8
// stage unpacks word kw (4 columns) of tile row r of src into dst.
fn stage_w(r: u32, kw: u32, v: u32) {
  let q = unpack_i8(v);
  for (var e = 0u; e < 4u; e++) {
    ws[(4u * kw + e) * 16u + r / 4u][r % 4u] = f32(q[e]);
  }
}

fn stage_x(r: u32, kw: u32, v: u32) {
  let q = unpack_i8(v);
  for (var e = 0u; e < 4u; e++) {
    xs[(4u * kw + e) * 16u + r / 4u][r % 4u] = f32(q[e]);
  }
}
#endif
#endif
#endif
#endif

#if BIG
#if MATRIX
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(subgroup_id) sg: u32) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row0 = wg.x * BIG_T;
  let tok0 = t0 + wg.y * BIG_T;
  if (tok0 >= step.n) {
    return; // the whole workgroup
  }
  // acc[ti * 4 + ri]: tokens 16*(2*(sg/2) + ti).. by rows 16*(4*(sg%2) + ri)..
  var acc: array<subgroup_matrix_result<i32, SM_M, SM_M>, 8>;
  let words = p.cols / 4u;
  let passes = (words + BIG_PW - 1u) / BIG_PW;
  let sr = li / 2u;
  let sv = li % 2u;
  var wv = big_load(true, sr, row0, p.rows, 0u, sv, words);
  var xv = big_load(false, sr, tok0, step.n, 0u, sv, words);
  big_store(0u, sr, sv, wv, xv);
  workgroupBarrier();
  let lt = XOFF + (sg / 2u) * 2u * SM_M * BIG_PW;
  let rr = (sg % 2u) * 4u * SM_M * BIG_PW;
  for (var kt = 0u; kt < passes; kt++) {
    let cur = (kt % 2u) * HALF;
    let more = kt + 1u < passes;
    if (more) {
      wv = big_load(true, sr, row0, p.rows, kt + 1u, sv, words);
      xv = big_load(false, sr, tok0, step.n, kt + 1u, sv, words);
    }
    if (sg < 8u) {
      let l0 = subgroupMatrixLoad<subgroup_matrix_left<i8, SM_K, SM_M>, row_major>(
        &sm, (cur + lt) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      let l1 = subgroupMatrixLoad<subgroup_matrix_left<i8, SM_K, SM_M>, row_major>(
        &sm, (cur + lt + SM_M * BIG_PW) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      // Row blocks 0..3 of the subgroup's, written out: constant indices
      // keep acc in registers (see shaders.bigDots).
      let r0 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
        &sm, (cur + rr) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      acc[0] = subgroupMatrixMultiplyAccumulate(l0, r0, acc[0]);
      acc[4] = subgroupMatrixMultiplyAccumulate(l1, r0, acc[4]);
      let r1 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
        &sm, (cur + rr + SM_M * BIG_PW) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      acc[1] = subgroupMatrixMultiplyAccumulate(l0, r1, acc[1]);
      acc[5] = subgroupMatrixMultiplyAccumulate(l1, r1, acc[5]);
      let r2 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
        &sm, (cur + rr + 2u * SM_M * BIG_PW) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      acc[2] = subgroupMatrixMultiplyAccumulate(l0, r2, acc[2]);
      acc[6] = subgroupMatrixMultiplyAccumulate(l1, r2, acc[6]);
      let r3 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
        &sm, (cur + rr + 3u * SM_M * BIG_PW) * 4u / BYTES_PER_UNIT, BIG_PW * 4u / BYTES_PER_UNIT);
      acc[3] = subgroupMatrixMultiplyAccumulate(l0, r3, acc[3]);
      acc[7] = subgroupMatrixMultiplyAccumulate(l1, r3, acc[7]);
    }
    if (more) {
      // The other buffer: every subgroup finished reading it (pass kt-1)
      // before the barrier that ended that pass.
      big_store(HALF - cur, sr, sv, wv, xv);
    }
    workgroupBarrier();
  }
  // Round h: subgroup sg stores acc[2h] and acc[2h+1] into slots 2sg and
  // 2sg+1, and big_round dequantises them; the rounds written out, with
  // constant indices into acc.
  if (sg < 8u) {
    subgroupMatrixStore<row_major>(&sm, (2u * sg) * SM_M * SM_M, acc[0], SM_M);
    subgroupMatrixStore<row_major>(&sm, (2u * sg + 1u) * SM_M * SM_M, acc[1], SM_M);
  }
  workgroupBarrier();
  big_round(0u, li, row0, tok0, t0);
  workgroupBarrier();
  if (sg < 8u) {
    subgroupMatrixStore<row_major>(&sm, (2u * sg) * SM_M * SM_M, acc[2], SM_M);
    subgroupMatrixStore<row_major>(&sm, (2u * sg + 1u) * SM_M * SM_M, acc[3], SM_M);
  }
  workgroupBarrier();
  big_round(1u, li, row0, tok0, t0);
  workgroupBarrier();
  if (sg < 8u) {
    subgroupMatrixStore<row_major>(&sm, (2u * sg) * SM_M * SM_M, acc[4], SM_M);
    subgroupMatrixStore<row_major>(&sm, (2u * sg + 1u) * SM_M * SM_M, acc[5], SM_M);
  }
  workgroupBarrier();
  big_round(2u, li, row0, tok0, t0);
  workgroupBarrier();
  if (sg < 8u) {
    subgroupMatrixStore<row_major>(&sm, (2u * sg) * SM_M * SM_M, acc[6], SM_M);
    subgroupMatrixStore<row_major>(&sm, (2u * sg + 1u) * SM_M * SM_M, acc[7], SM_M);
  }
  workgroupBarrier();
  big_round(3u, li, row0, tok0, t0);
}
#else
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(num_workgroups) nwg: vec3<u32>) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row0 = wg.x * BIG_T;
  let tok0 = t0 + wg.y * BIG_T;
  if (tok0 >= step.n) {
    return; // the whole workgroup
  }
  let lx = li % 16u; // rows lx + 16*i
  let ly = li / 16u; // tokens ly + 16*j
  var acc: array<array<i32, 8>, 8>; // acc[i][j]: row lx+16i, token ly+16j
  let words = p.cols / 4u;
  // The grid's z splits the passes into slices (SPLIT; one slice else):
  // this workgroup takes passes k0..k1.
  let all = (words + BIG_PW - 1u) / BIG_PW;
  let per = (all + nwg.z - 1u) / nwg.z;
  let k0 = min(all, wg.z * per);
  let k1 = min(all, k0 + per);
  if (k0 >= k1) {
    return; // the whole workgroup: a slice past the columns
  }
  // Each invocation stages one vector of W and one of x per pass: rows
  // (tokens) sr, vector sv of the pass's two.
  let sr = li / 2u;
  let sv = li % 2u;
  var wv = big_load(true, sr, row0, p.rows, k0, sv, words);
  var xv = big_load(false, sr, tok0, step.n, k0, sv, words);
  wb[sv * BIG_T + sr] = wv;
  xb[sv * BIG_T + sr] = xv;
  workgroupBarrier();
  for (var kt = k0; kt < k1; kt++) {
    let cur = ((kt - k0) % 2u) * 256u;
    let more = kt + 1u < k1;
    if (more) {
      wv = big_load(true, sr, row0, p.rows, kt + 1u, sv, words);
      xv = big_load(false, sr, tok0, step.n, kt + 1u, sv, words);
    }
    for (var v = 0u; v < 2u; v++) {
      let o = cur + v * BIG_T;
      // b0..b7 = xb[o + 16j + ly]; then for each row i, a = wb[o + 16i +
      // lx] and acc[i][j] += the dot of a and bj: written out by
      // shaders.bigDots with constant indices, so that acc stays in
      // registers (a loop the driver leaves rolled indexes it at run
      // time, which puts it in memory).
      {{BIG_DOTS}}
    }
    if (more) {
      // The other buffer: every invocation finished reading it (pass
      // kt-1) before the barrier that ended that pass.
      let nxt = 256u - cur;
      wb[nxt + sv * BIG_T + sr] = wv;
      xb[nxt + sv * BIG_T + sr] = xv;
    }
    workgroupBarrier();
  }
  // big_out for every acc[i][j], with constant indices (shaders.bigDots).
  {{BIG_OUT}}
}
#endif
#else
#if MATRIX
#if UNROLL
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(subgroup_id) sg: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row0 = wg.x * BM;
  let tok0 = t0 + wg.y * BN;
  if (tok0 >= step.n) {
    return; // the whole workgroup
  }
  let words = p.cols / 4u;
  // The grid's z splits the passes into slices (SPLIT; one slice else):
  // this workgroup takes passes k0..k1.
  let all = (words + MP - 1u) / MP;
  let per = (all + nwg.z - 1u) / nwg.z;
  let k0 = min(all, wg.z * per);
  let k1 = min(all, k0 + per);
  // (An empty slice, k0 = k1, adds zeros: no return before the barriers.)
  var wv: array<u32, MV>;
  var xv: array<u32, MV>;
#unroll E 6
  wv[{{E}}] = m_word(true, {{E}}, li, row0, p.rows, k0, words);
  xv[{{E}}] = m_word(false, {{E}}, li, tok0, step.n, k0, words);
#end
  // Subgroup sg < 8 owns tokens 16*(sg/2).. (the left matrix: x's tile,
  // tokens by columns, row-major) by rows 32*(sg%2).. (two right ones: W's
  // tile seen as columns by rows, column-major): acc0 and acc1 its two
  // 16x16 blocks of sums, tokens by rows.
  var acc0: subgroup_matrix_result<i32, SM_M, SM_M>;
  var acc1: subgroup_matrix_result<i32, SM_M, SM_M>;
  let lo = MX + (sg / 2u) * SM_M * MS;
  let ro = (sg % 2u) * 2u * SM_M * MS;
  for (var kt = k0; kt < k1; kt++) {
#unroll E 6
    sm[m_slot({{E}}, li)] = bitcast<i32>(wv[{{E}}]);
    sm[MX + m_slot({{E}}, li)] = bitcast<i32>(xv[{{E}}]);
#end
    workgroupBarrier();
    if (kt + 1u < k1) {
#unroll E 6
      wv[{{E}}] = m_word(true, {{E}}, li, row0, p.rows, kt + 1u, words);
      xv[{{E}}] = m_word(false, {{E}}, li, tok0, step.n, kt + 1u, words);
#end
    }
    if (sg < 8u) {
      // The pass's 3 steps of 32 columns (8 words), written out.
#unroll S 3
      {
        let l = subgroupMatrixLoad<subgroup_matrix_left<i8, SM_K, SM_M>, row_major>(
          &sm, (lo + {{S}} * 8u) * 4u / BYTES_PER_UNIT, MS * 4u / BYTES_PER_UNIT);
        let r0 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
          &sm, (ro + {{S}} * 8u) * 4u / BYTES_PER_UNIT, MS * 4u / BYTES_PER_UNIT);
        let r1 = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
          &sm, (ro + SM_M * MS + {{S}} * 8u) * 4u / BYTES_PER_UNIT, MS * 4u / BYTES_PER_UNIT);
        acc0 = subgroupMatrixMultiplyAccumulate(l, r0, acc0);
        acc1 = subgroupMatrixMultiplyAccumulate(l, r1, acc1);
      }
#end
    }
    // The next pass overwrites sm: every subgroup must be done with it.
    workgroupBarrier();
  }
  // The 16 blocks of sums through sm (block b: tokens 16*(b/4).., rows
  // 16*(b%4)..), then each invocation takes element li of every block
  // (token li/16, row li%16: neighbours write neighbouring rows of y).
  if (sg < 8u) {
    let b0 = (sg / 2u) * 4u + (sg % 2u) * 2u;
    subgroupMatrixStore<row_major>(&sm, b0 * SM_M * SM_M, acc0, SM_M);
    subgroupMatrixStore<row_major>(&sm, (b0 + 1u) * SM_M * SM_M, acc1, SM_M);
  }
  workgroupBarrier();
  for (var b = 0u; b < 16u; b++) {
    let t = tok0 + (b / 4u) * SM_M + li / SM_M;
    let row = row0 + (b % 4u) * SM_M + li % SM_M;
    if (t < step.n && row < p.rows) {
      let sum = sm[b * SM_M * SM_M + li];
      out_sum(t, row, t0, sum);
    }
  }
}
#else
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) sgn: u32) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row0 = wg.x * BM;
  let tok0 = t0 + wg.y * BN;
  if (tok0 >= step.n) {
    return; // the whole workgroup
  }
  // Block b holds tokens 16*(b/4).. by rows 16*(b%4)..: the left matrix is
  // x's tile (tokens by columns, row-major), the right one W's tile seen
  // as columns by rows (column-major), the result tokens by rows.
  var acc: array<subgroup_matrix_result<i32, SM_M, SM_M>, ACC>;
  let words = p.cols / 4u;
  let passes = (words + PASS_WORDS - 1u) / PASS_WORDS;
  let sr = li / 4u;
  let sv = li % 4u;
  for (var kt = 0u; kt < passes; kt++) {
    let word = kt * PASS_WORDS + sv * 4u;
    for (var e = 0u; e < 4u; e++) {
      sm[sr * PASS_WORDS + sv * 4u + e] = bitcast<i32>(stage_word(true, sr, row0, p.rows, word + e, words));
      sm[XT + sr * PASS_WORDS + sv * 4u + e] = bitcast<i32>(stage_word(false, sr, tok0, step.n, word + e, words));
    }
    workgroupBarrier();
    for (var j = 0u; j < ACC; j++) {
      let b = sg + j * sgn;
      if (b < BLOCKS) {
        let tb = b / 4u;
        let rb = b % 4u;
        for (var kk = 0u; kk < PASS_WORDS * 4u / SM_K; kk++) {
          let kw = kk * SM_K / 4u;
          let l = subgroupMatrixLoad<subgroup_matrix_left<i8, SM_K, SM_M>, row_major>(
            &sm, (XT + tb * SM_M * PASS_WORDS + kw) * 4u / BYTES_PER_UNIT, PASS_WORDS * 4u / BYTES_PER_UNIT);
          let r = subgroupMatrixLoad<subgroup_matrix_right<i8, SM_M, SM_K>, col_major>(
            &sm, (rb * SM_M * PASS_WORDS + kw) * 4u / BYTES_PER_UNIT, PASS_WORDS * 4u / BYTES_PER_UNIT);
          acc[j] = subgroupMatrixMultiplyAccumulate(l, r, acc[j]);
        }
      }
    }
    workgroupBarrier();
  }
  // Blocks 8*h.. go through slots 0..7 of sm: each invocation then
  // dequantises element li of every slot (token li/16, row li%16 of its
  // block: neighbouring invocations write neighbouring rows of y).
  for (var h = 0u; h < BLOCKS / SLOTS; h++) {
    for (var j = 0u; j < ACC; j++) {
      let b = sg + j * sgn;
      if (b < BLOCKS && b / SLOTS == h) {
        subgroupMatrixStore<row_major>(&sm, (b % SLOTS) * SM_M * SM_M, acc[j], SM_M);
      }
    }
    workgroupBarrier();
    for (var s = 0u; s < SLOTS; s++) {
      let b = h * SLOTS + s;
      let t = tok0 + (b / 4u) * SM_M + li / SM_M;
      let row = row0 + (b % 4u) * SM_M + li % SM_M;
      if (t < step.n && row < p.rows) {
        out_sum(t, row, t0, sm[s * SM_M * SM_M + li]);
      }
    }
    workgroupBarrier();
  }
}
#endif
#else
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(num_workgroups) nwg: vec3<u32>) {
  let t0 = select(0u, step.first, p.from_first == 1u);
  let row0 = wg.x * BM;
  let tok0 = t0 + wg.y * BN;
  if (tok0 >= step.n) {
    return; // the whole workgroup
  }
  let ty = li / 16u; // rows 4*ty..
  let tx = li % 16u; // tokens 4*tx..
#if DOT4
  var iacc: array<vec4<i32>, 4>; // iacc[j][i]: token 4*tx+j, row 4*ty+i
  let words = p.cols / 4u;
  let passes = (words + 15u) / 16u;
  // The grid's z splits the passes into slices (SPLIT, the written-out
  // tile's; one slice else): this workgroup takes passes k0..k1.
  let per = (passes + nwg.z - 1u) / nwg.z;
  let k0 = min(passes, wg.z * per);
  let k1 = min(passes, k0 + per);
  // Each invocation stages one vector (4 words) of W and one of x per pass.
  let sr = li / 4u;
  let sv = li % 4u;
#if UNROLL
  // Two buffers: pass kt+1's vectors come from storage into registers
  // before pass kt's products and go into the other buffer after them, so
  // storage latency hides behind the products and one barrier a pass
  // suffices (the first tile has two and waits for each pass's loads).
  var wv = small_load(true, sr, row0, p.rows, k0, sv, words);
  var xv = small_load(false, sr, tok0, step.n, k0, sv, words);
  wp[sv * 64u + slot(sr)] = wv;
  xp[sv * 64u + slot(sr)] = xv;
  workgroupBarrier();
  for (var kt = k0; kt < k1; kt++) {
    let cur = ((kt - k0) % 2u) * 256u;
    let more = kt + 1u < k1;
    if (more) {
      wv = small_load(true, sr, row0, p.rows, kt + 1u, sv, words);
      xv = small_load(false, sr, tok0, step.n, kt + 1u, sv, words);
    }
    for (var v = 0u; v < 4u; v++) {
      let o = cur + v * 64u;
      // The loops of the first tile's products written out by
      // shaders.smallDots, with constant indices into iacc (see the large
      // tile's).
      {{SMALL_DOTS}}
    }
    if (more) {
      // The other buffer: every invocation finished reading it (pass
      // kt-1) before the barrier that ended that pass.
      wp[256u - cur + sv * 64u + slot(sr)] = wv;
      xp[256u - cur + sv * 64u + slot(sr)] = xv;
    }
    workgroupBarrier();
  }
#else
  for (var kt = k0; kt < k1; kt++) {
    let word = kt * 16u + sv * 4u;
    var wv: vec4<u32>;
    var xv: vec4<u32>;
    for (var e = 0u; e < 4u; e++) {
      wv[e] = stage_word(true, sr, row0, p.rows, word + e, words);
      xv[e] = stage_word(false, sr, tok0, step.n, word + e, words);
    }
    wp[sv * 64u + slot(sr)] = wv;
    xp[sv * 64u + slot(sr)] = xv;
    workgroupBarrier();
    for (var v = 0u; v < 4u; v++) {
      var a: array<vec4<u32>, 4>;
      var b: array<vec4<u32>, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = wp[v * 64u + i * 16u + ty];
        b[i] = xp[v * 64u + i * 16u + tx];
      }
      for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
          iacc[j][i] += dot4I8Packed(a[i].x, b[j].x) + dot4I8Packed(a[i].y, b[j].y) +
                        dot4I8Packed(a[i].z, b[j].z) + dot4I8Packed(a[i].w, b[j].w);
        }
      }
    }
    workgroupBarrier();
  }
#endif
#else
  var acc: array<vec4<f32>, 4>; // acc[j][i]: token 4*tx+j, row 4*ty+i
#if INT8
  var iacc: array<vec4<i32>, 4>;
  let words = p.cols / 4u;
  let passes = (words + 7u) / 8u;
#else
  let passes = (p.cols + BK - 1u) / BK;
#endif
  for (var kt = 0u; kt < passes; kt++) {
#if INT8
    // 64 rows x 8 words of W and of x: two words of each per invocation.
    for (var j = 0u; j < 2u; j++) {
      let idx = li + j * 256u;
      let r = idx / 8u;
      let kw = idx % 8u;
      let word = kt * 8u + kw;
      var wv = 0u;
      if (row0 + r < p.rows && word < words) {
        wv = w[(row0 + r) * words + word];
      }
      stage_w(r, kw, wv);
      var xv = 0u;
      if (tok0 + r < step.n && word < words) {
        xv = x[(tok0 + r) * words + word];
      }
      stage_x(r, kw, xv);
    }
#else
    // 64 rows x 32 columns of W and of x: eight values of each per invocation.
    for (var j = 0u; j < 8u; j++) {
      let idx = li + j * 256u;
      let r = idx / BK;
      let k = idx % BK;
      let col = kt * BK + k;
      var wv = 0.0;
      if (row0 + r < p.rows && col < p.cols) {
        wv = bitcast<f32>(w[(row0 + r) * p.cols + col]);
      }
      ws[k * 16u + r / 4u][r % 4u] = wv;
      var xv = 0.0;
      if (tok0 + r < step.n && col < p.cols) {
        xv = bitcast<f32>(x[(tok0 + r) * p.cols + col]);
      }
      xs[k * 16u + r / 4u][r % 4u] = xv;
    }
#endif
    workgroupBarrier();
    for (var k = 0u; k < BK; k++) {
      let a = ws[k * 16u + ty];
      let b = xs[k * 16u + tx];
      acc[0] += a * b.x;
      acc[1] += a * b.y;
      acc[2] += a * b.z;
      acc[3] += a * b.w;
    }
    workgroupBarrier();
#if INT8
    if (kt % 32u == 31u || kt + 1u == passes) {
      for (var j = 0u; j < 4u; j++) {
        iacc[j] += vec4<i32>(acc[j]);
        acc[j] = vec4<f32>(0.0);
      }
    }
#endif
  }
#endif
#if UNROLL
  // small_out for every iacc[j][i], with constant indices (shaders.smallDots).
  {{SMALL_OUT}}
#else
  for (var j = 0u; j < 4u; j++) {
    let t = tok0 + 4u * tx + j;
    if (t >= step.n) {
      continue;
    }
#if INT8
    let xsc = bitcast<f32>(x[p.x_scale_word + t]);
#endif
    for (var i = 0u; i < 4u; i++) {
      let row = row0 + 4u * ty + i;
      if (row >= p.rows) {
        continue;
      }
#if INT8
      var v = f32(iacc[j][i]) * (xsc * bitcast<f32>(w[p.w_scale_word + row]));
#else
      var v = acc[j][i];
#endif
      if (p.softcap > 0.0) {
        v = p.softcap * tanh(clamp(v / p.softcap, -10.0, 10.0));
      }
      y[(t - t0) * p.out_stride + p.out_row + row] = v;
    }
  }
#endif
}
#endif
#endif
