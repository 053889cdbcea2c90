// The gated FFN's activation, a variant: GeGLU (tanh gelu) or SwiGLU
// (silu). Shared by act.wgsl and gemv.wgsl's gated prologue, so both
// compute the same function.

fn act(x: f32) -> f32 {
#if SILU
  return x / (1.0 + exp(-x));
#else
  let k = 0.7978845608028654; // sqrt(2/pi)
  // tanh saturates long before 10; the clamp avoids inf/inf in exp-based tanh.
  return 0.5 * x * (1.0 + tanh(clamp(k * (x + 0.044715 * x * x * x), -10.0, 10.0)));
#endif
}
