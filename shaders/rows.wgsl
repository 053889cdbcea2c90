// rows: what the kernels that hold a token row in registers share (the
// REGS variants of prenorm and gated_quant, gemv.wgsl's prologues). One
// workgroup per row is latency-bound: rereading the row from memory in
// each of its passes puts a load's latency between every reduction, so
// these kernels load the row once, into RQ quads (4 values) per
// invocation, and keep it there across the reductions. Invocation li owns
// quads li, li + WG, li + 2*WG, ... (loads stay contiguous across
// invocations); the function-scope arrays indexed by a loop of constant
// trip count are unrolled into registers.
const RQ = {{RQ}}u;

// quant4 packs four values quantised by package quant's rule.
fn quant4(v: vec4<f32>, scale: f32) -> u32 {
  return pack_i8(vec4<i32>(quant_i8(v.x, scale), quant_i8(v.y, scale), quant_i8(v.z, scale), quant_i8(v.w, scale)));
}

fn max4(v: vec4<f32>) -> f32 {
  return max(max(v.x, v.y), max(v.z, v.w));
}
