// The parameters of every matrix product kernel (matmul, gemv, tiled):
// y[(t - t0) * out_stride + out_row + r] = (W x_t)[r] for the step's tokens
// t from t0 (step.first when from_first is 1, else 0).
struct MatmulParams {
  rows: u32,         // output rows of this part of W
  cols: u32,         // input width
  w_scale_word: u32, // word offset of W's per-row scales in w (int8)
  x_scale_word: u32, // word offset of the per-token scales in x (int8)
  out_row: u32,      // row of y that this part's row 0 lands in
  out_stride: u32,   // floats per token in y
  from_first: u32,   // 1: tokens step.first.. into y's rows 0..; 0: tokens 0..
  softcap: f32,      // c of c*tanh(y/c); 0 is off
}
