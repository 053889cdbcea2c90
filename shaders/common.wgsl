// Shared by every kernel family (each family file includes it first).
#if SUBGROUPS
enable subgroups;
#endif

// Step is what changes from one forward step to the next: every kernel
// binds it at @binding(0) and reads it, so one write per step serves all.
struct Step {
  start: u32, // absolute position of the chunk's first token
  n: u32,     // tokens in the chunk
  first: u32, // first token whose logits are computed (n: none)
  pad: u32,
}
@group(0) @binding(0) var<uniform> step: Step;

// wg_linear numbers workgroups of a 2D grid: the host spreads counts above
// 65535 (maxComputeWorkgroupsPerDimension) over y.
fn wg_linear(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.x + wg.y * nwg.x;
}

// int8 values are packed four to a u32, element 0 in the low byte. This
// naga has no unpack4xI8: shift each byte to the top, then arithmetic-shift
// it back down to sign-extend.
fn unpack_i8(w: u32) -> vec4<i32> {
  let v = bitcast<i32>(w);
  return vec4<i32>((v << 24u) >> 24u, (v << 16u) >> 24u, (v << 8u) >> 24u, v >> 24u);
}

fn i8_at(w: u32, k: u32) -> i32 {
  return (bitcast<i32>(w) << (24u - 8u * k)) >> 24u;
}

fn pack_i8(q: vec4<i32>) -> u32 {
  let u = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
  return u.x | (u.y << 8u) | (u.z << 16u) | (u.w << 24u);
}

// dot_i8 is the int32 dot product of two packed int8 quads.
fn dot_i8(a: u32, b: u32) -> i32 {
#if DOT4
  return dot4I8Packed(a, b);
#else
  let x = unpack_i8(a);
  let y = unpack_i8(b);
  return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
#endif
}

// div_rn is a / b rounded as the CPU rounds it, where the compiler keeps
// IEEE semantics: WGSL lets division be 2.5 ULP off, which moves
// quantisation scales by an ULP and values across rounding ties, and one
// FMA-computed remainder corrects that. NVIDIA's Vulkan compiler still
// gives scales 1 ULP off (seen on the H100: it likely folds the correction
// away), a 6e-8 relative difference from engine/cpu.
fn div_rn(a: f32, b: f32) -> f32 {
  let q = a / b;
  return q + fma(-q, b, a) / b;
}

// quant_scale is package quant's per-row scale from the row's max |x|,
// m / 127 rounded exactly as float32 division rounds it: in integers, since
// div_rn's FMA correction is folded or unfused by some compilers (scales 1
// ULP off engine/cpu were seen on lavapipe under both WebGPUs and on
// NVIDIA). m = M * 2^(e-150) with a 24-bit M; (M << 8) / 127 has 25 or 26
// bits, rounded to 24 half to even with the remainder as sticky bit. Zero,
// subnormal and non-finite m (and results that would be subnormal) take
// the float path: scales of rows that small do not occur in practice.
fn quant_scale(m: f32) -> f32 {
  let b = bitcast<u32>(m);
  let e = (b >> 23u) & 0xffu;
  if (e == 0u || e == 255u || e < 8u) {
    return div_rn(m, 127.0);
  }
  let n = ((b & 0x7fffffu) | 0x800000u) << 8u;
  let q = n / 127u;
  let sticky = n % 127u != 0u;
  var k = 1u;
  if (q >= 0x2000000u) {
    k = 2u;
  }
  var keep = q >> k;
  let rem = q & ((1u << k) - 1u);
  let half = 1u << (k - 1u);
  if (rem > half || (rem == half && (sticky || (keep & 1u) == 1u))) {
    keep++;
  }
  if (keep == 0x1000000u) {
    keep = keep >> 1u;
    k++;
  }
  return bitcast<f32>(((e + k - 8u) << 23u) | (keep & 0x7fffffu));
}

// quant_i8 is package quant's rule: v / scale rounded to float32, then
// to an integer half to even (WGSL round), clamped to [-127, 127]; a zero
// scale gives 0. The quotient is taken as v times 1/scale: that is within
// a few ULPs of v / scale (WGSL's division is within 2.5, the product adds
// one), under 6e-5 for the quotients that are not clamped (|q| < 128), so
// it rounds to the same integer unless a rounding tie k + 1/2 is that
// close; only those quotients take quant_tie. Every workgroup of a product
// with a quant prologue quantises the whole row (6912 values for a 1B
// model's down product, hundreds of workgroups): two divisions a value
// were most of that prologue.
const TIE = 2.5e-4; // 4x the largest error of the product

fn quant_i8(v: f32, scale: f32) -> i32 {
  if (scale == 0.0) {
    return 0;
  }
  return quant_q(v, scale, v * (1.0 / scale));
}

// quant4 packs four values quantised by quant_i8's rule, with one
// reciprocal for the four.
fn quant4(v: vec4<f32>, scale: f32) -> u32 {
  if (scale == 0.0) {
    return 0u;
  }
  let q = v * (1.0 / scale);
  return pack_i8(vec4<i32>(quant_q(v.x, scale, q.x), quant_q(v.y, scale, q.y), quant_q(v.z, scale, q.z), quant_q(v.w, scale, q.w)));
}

// quant_q is quant_i8 of v given q, v times 1/scale.
fn quant_q(v: f32, scale: f32, q: f32) -> i32 {
  let a = abs(q);
  if (abs(fract(a) - 0.5) < TIE || !(a < 1.0e6)) {
    return quant_tie(v, scale, a);
  }
  return i32(clamp(round(q), -127.0, 127.0));
}

// quant_tie is quant_i8 of v whose quotient a (estimated, |v| * 1/scale) is
// near the tie t = k + 1/2, k = floor(a), decided exactly: v / scale
// rounds to t when |v| / scale lies within half an ULP of t, and below or
// above that to the floats either side, so it compares |v| with (t +/- half
// an ULP of t) * scale in 64-bit integers. No float arithmetic is exact
// enough for it: div_rn's FMA correction needs a fused fma, which WGSL does
// not promise (lavapipe's is not: it gave 1.4999999 for 1.5 = 0.87443024 /
// 0.5829535). Non-finite estimates and subnormal operands keep div_rn.
fn quant_tie(v: f32, scale: f32, a: f32) -> i32 {
  let vb = bitcast<u32>(abs(v));
  let sb = bitcast<u32>(scale);
  let ve = i32(vb >> 23u);
  let se = i32((sb >> 23u) & 0xffu);
  if (!(a < 1.0e6) || ve == 0 || ve == 255 || se == 0 || se == 255) {
    return i32(clamp(round(div_rn(v, scale)), -127.0, 127.0));
  }
  let sign = select(1, -1, v < 0.0);
  let k = u32(a);
  if (k >= 127u) {
    return sign * 127; // 127 or 128 before the clamp
  }
  // t = odd / 2 lies in [2^e, 2^(e+1)), e = b - 1 for odd's top bit b;
  // t = n * 2^(e-24) with n = odd << (24 - b), of 25 bits, and half an
  // ULP of t is 2^(e-24): the bounds are (n -/+ 1) * 2^(e-24).
  let odd = 2u * k + 1u;
  let bit = firstLeadingBit(odd);
  let n = odd << (24u - bit);
  let mv = (vb & 0x7fffffu) | 0x800000u; // |v| = mv * 2^(ve - 150)
  let ms = (sb & 0x7fffffu) | 0x800000u; // scale = ms * 2^(se - 150)
  // |v| vs bound * scale  <=>  mv * 2^d vs (n -/+ 1) * ms
  let d = ve - se - (i32(bit) - 1) + 24;
  if (d < 0 || d > 40) { // mv << d must fit 64 bits
    return i32(clamp(round(div_rn(v, scale)), -127.0, 127.0));
  }
  let lhs = shl64(mv, u32(d));
  var r = k + (k & 1u); // on t: to even
  if (cmp64(lhs, mul64(n - 1u, ms)) < 0) {
    r = k;
  } else if (cmp64(lhs, mul64(n + 1u, ms)) > 0) {
    r = k + 1u;
  }
  return sign * i32(min(r, 127u));
}

// mul64 is a * b as (high, low) words.
fn mul64(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p00 = a0 * b0;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return vec2<u32>(a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), (p00 & 0xffffu) | (mid << 16u));
}

// shl64 is m << d as (high, low) words, for m << d below 2^64.
fn shl64(m: u32, d: u32) -> vec2<u32> {
  if (d == 0u) {
    return vec2<u32>(0u, m);
  }
  if (d < 32u) {
    return vec2<u32>(m >> (32u - d), m << d);
  }
  return vec2<u32>(m << (d - 32u), 0u);
}

// cmp64 is -1, 0 or 1 as x is below, equal to or above y.
fn cmp64(x: vec2<u32>, y: vec2<u32>) -> i32 {
  if (x.x != y.x) {
    return select(-1, 1, x.x > y.x);
  }
  if (x.y != y.y) {
    return select(-1, 1, x.y > y.y);
  }
  return 0;
}

// inv_rms is RMSNorm's 1/sqrt(mean(x^2) + eps) from the sum of squares.
fn inv_rms(ss: f32, n: u32, eps: f32) -> f32 {
  return 1.0 / sqrt(ss / f32(n) + eps);
}

var<workgroup> red_f: array<f32, {{WG}}>;
var<workgroup> red_i: array<i32, {{WG}}>;

// wg_sum, wg_max and wg_sum_i reduce one value per invocation over the
// workgroup; every invocation gets the result. Call in uniform control flow.
#if SUBGROUPS
// The SUBGROUPS variants (browsers with the subgroups feature and WGSL's
// subgroup_id) reduce within each subgroup first, then across subgroups
// through one slot each: two barriers instead of log2(WG). They hold for
// any subgroup size WebGPU allows (4 to 128), assume no layout of
// invocations into subgroups (subgroup_id numbers them), and every entry
// point of such a variant starts with sg_begin ({{SG_BEGIN}}).
const SG_SLOTS = {{WG}}u / 4u; // subgroups of 4, WebGPU's smallest, give the most
var<workgroup> red_sg_f: array<f32, SG_SLOTS>;
var<workgroup> red_sg_i: array<i32, SG_SLOTS>;
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn sg_begin(lane: u32, id: u32, count: u32) {
  sg_lane = lane;
  sg_id = id;
  sg_count = count;
}

// The cross-subgroup steps read the slots that subgroups wrote, sg_count
// of them (8 at 256 invocations in subgroups of 32), not every slot that
// subgroups of 4 would need: a loop of constant trip count that the driver
// leaves rolled costs a dependent load of workgroup memory per slot, 64 of
// them at 256 invocations. The bound is non-uniform to WGSL's analysis,
// which is allowed: the loops hold no barrier.
fn wg_sum(v: f32, li: u32) -> f32 {
  let s = subgroupAdd(v);
  if (sg_lane == 0u) {
    red_sg_f[sg_id] = s;
  }
  workgroupBarrier();
  var r = 0.0;
  for (var i = 0u; i < sg_count; i++) {
    r += red_sg_f[i];
  }
  workgroupBarrier();
  return r;
}

fn wg_max(v: f32, li: u32) -> f32 {
  let s = subgroupMax(v);
  if (sg_lane == 0u) {
    red_sg_f[sg_id] = s;
  }
  workgroupBarrier();
  var r = red_sg_f[0];
  for (var i = 1u; i < sg_count; i++) {
    r = max(r, red_sg_f[i]);
  }
  workgroupBarrier();
  return r;
}

fn wg_sum_i(v: i32, li: u32) -> i32 {
  let s = subgroupAdd(v);
  if (sg_lane == 0u) {
    red_sg_i[sg_id] = s;
  }
  workgroupBarrier();
  var r = 0;
  for (var i = 0u; i < sg_count; i++) {
    r += red_sg_i[i];
  }
  workgroupBarrier();
  return r;
}
#else

fn wg_sum(v: f32, li: u32) -> f32 {
  red_f[li] = v;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (li < s) {
      red_f[li] = red_f[li] + red_f[li + s];
    }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn wg_max(v: f32, li: u32) -> f32 {
  red_f[li] = v;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (li < s) {
      red_f[li] = max(red_f[li], red_f[li + s]);
    }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn wg_sum_i(v: i32, li: u32) -> i32 {
  red_i[li] = v;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (li < s) {
      red_i[li] = red_i[li] + red_i[li + s];
    }
    workgroupBarrier();
  }
  let r = red_i[0];
  workgroupBarrier();
  return r;
}
#endif
