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

// quant_i8 is package quant's rule: round half to even (WGSL round), clamp
// to [-127, 127]; a zero scale gives 0.
fn quant_i8(v: f32, scale: f32) -> i32 {
  if (scale == 0.0) {
    return 0;
  }
  return i32(clamp(round(div_rn(v, scale)), -127.0, 127.0));
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
