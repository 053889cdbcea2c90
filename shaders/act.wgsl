// act: the gated FFN activation, gate = act(gate) * up in place. The
// activation is a variant: GeGLU (tanh gelu) or SwiGLU (silu). gated_quant
// reads gate and up from one row (the fused gate|up product) and writes the
// result straight in the down projection's input form: int8 per token
// (package quant's rule) or float32.
#include "common.wgsl"
#include "activation.wgsl"
#if REGS
#include "rows.wgsl"
#endif

struct ActParams {
  cols: u32, // FFN width
  pad0: u32,
  pad1: u32,
  pad2: u32,
}
@group(0) @binding(1) var<uniform> p: ActParams;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;


@compute @workgroup_size({{WG}})
fn gated(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let i = wg_linear(wg, nwg) * {{WG}}u + li;
  if (i >= step.n * p.cols) {
    return;
  }
  gate[i] = act(gate[i]) * up[i];
}

struct GatedParams {
  cols: u32,       // FFN width; a row of gu holds gate then up, 2*cols values
  scale_word: u32, // int8: word offset of the per-token scales in dst
  pad0: u32,
  pad1: u32,
}
@group(0) @binding(1) var<uniform> gp: GatedParams;
@group(0) @binding(2) var<storage, read> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

fn gated_at(base: u32, i: u32) -> f32 {
  return act(gu[base + i]) * gu[base + gp.cols + i];
}

#if REGS
// gated_quant's REGS variant loads the row's gate and up once (rows.wgsl):
// FFN widths of up to 4*RQ*WG; the int8 form only (cols a multiple of 4),
// as the float32 form makes one pass anyway.
@compute @workgroup_size({{WG}})
fn gated_quant(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * 2u * gp.cols;
  let words = gp.cols / 4u;
  var g: array<vec4<f32>, RQ>;
  var u: array<vec4<f32>, RQ>;
  for (var k = 0u; k < RQ; k++) {
    let q = li + k * {{WG}}u;
    if (q < words) {
      let c = base + 4u * q;
      g[k] = vec4<f32>(gu[c], gu[c + 1u], gu[c + 2u], gu[c + 3u]);
      let d = c + gp.cols;
      u[k] = vec4<f32>(gu[d], gu[d + 1u], gu[d + 2u], gu[d + 3u]);
    }
  }
  var m = 0.0;
  for (var k = 0u; k < RQ; k++) {
    let v = g[k];
    g[k] = vec4<f32>(act(v.x), act(v.y), act(v.z), act(v.w)) * u[k];
    m = max(m, max4(abs(g[k])));
  }
  let scale = quant_scale(wg_max(m, li));
  for (var k = 0u; k < RQ; k++) {
    let q = li + k * {{WG}}u;
    if (q < words) {
      dst[row * words + q] = quant4(g[k], scale);
    }
  }
  if (li == 0u) {
    dst[gp.scale_word + row] = bitcast<u32>(scale);
  }
}
#else
// gated_quant runs one workgroup per token row.
@compute @workgroup_size({{WG}})
fn gated_quant(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32{{SG_ARGS}}) {
  {{SG_BEGIN}}
  let row = wg_linear(wg, nwg);
  if (row >= step.n) {
    return;
  }
  let base = row * 2u * gp.cols;
#if INT8
  var m = 0.0;
  for (var i = li; i < gp.cols; i += {{WG}}u) {
    m = max(m, abs(gated_at(base, i)));
  }
  let scale = quant_scale(wg_max(m, li));
  let words = gp.cols / 4u;
  for (var i = li; i < words; i += {{WG}}u) {
    let c = 4u * i;
    let q = vec4<i32>(quant_i8(gated_at(base, c), scale), quant_i8(gated_at(base, c + 1u), scale),
                      quant_i8(gated_at(base, c + 2u), scale), quant_i8(gated_at(base, c + 3u), scale));
    dst[row * words + i] = pack_i8(q);
  }
  if (li == 0u) {
    dst[gp.scale_word + row] = bitcast<u32>(scale);
  }
#else
  for (var i = li; i < gp.cols; i += {{WG}}u) {
    dst[row * gp.cols + i] = bitcast<u32>(gated_at(base, i));
  }
#endif
}
#endif
