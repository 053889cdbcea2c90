//go:build !js && !wasip1

package shaders

import (
	"math"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestGatedEpilogue runs the gate|up product that writes the gated
// activation itself (gemv's GATED_OUT) against engine/cpu: h = act(gate) *
// up of engine/cpu's gate and up rows, each token's max |h| word (int8)
// equal to the max of the h the kernel wrote, and then down's QUANT_IN
// prologue on that h: its quantised row and scale bit-identical to
// quant.wgsl's quantize of the same h (gated_quant's formulas: the max
// |h| over the row, quant_scale, quant_i8), and down's product equal to
// engine/cpu's MatMul of that input. And against today's path on the same
// device (the plain product, then gated_quant): h (float32) and down's
// int8 input and scales (int8) bit for bit, as the dot products and
// act(gate)*up are the same expressions over the same values: nothing
// downstream of the epilogue changes. FFN widths are no multiple of the
// workgroup's rows, up to gemvMaxTokens tokens, outputs and the words
// around the maxima poisoned.
func TestGatedEpilogue(t *testing.T) {
	onDevices(t, testGatedEpilogue, "int8-geglu", "int8-swiglu-four-tokens", "int8-wide-ffn")
}

func testGatedEpilogue(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dtype      model.DType
		act        model.Activation
		ffn, cols  int
		n, wg, tpr int
		fma        bool
	}{
		{"int8-geglu", model.Int8, model.GeGLUTanh, 16 * 13, 16 * 9, 1, 256, 4, false},              // 6.5 workgroups of 32 rows
		{"int8-swiglu-four-tokens", model.Int8, model.SwiGLU, 16 * 9, 16 * 37, 4, 128, 2, false},    // 4.5 of 32
		{"int8-fma-wide", model.Int8, model.GeGLUTanh, 16 * 7, 16 * 71, 2, 128, 2, true},            // sums past 1024 products
		{"int8-one-row-per-workgroup", model.Int8, model.SwiGLU, 16 * 3, 16 * 5, 3, 128, 64, false}, // half the slots gate, half up
		{"int8-wide-ffn", model.Int8, model.GeGLUTanh, 16 * 131, 16 * 3, 2, 256, 4, false},          // down's row of 2,096 > 32 x its 64 invocations
		{"f32-geglu", model.F32, model.GeGLUTanh, 29, 4 * 37, 3, 64, 4, false},                      // 3.6 of 8
		{"f32-swiglu-tpr-half", model.F32, model.SwiGLU, 19, 4 * 150, 1, 256, 128, false},           // one row a workgroup
	} {
		runCase(t, tc.name, func(t *testing.T) {
			r := newRand(t)
			int8Mode := tc.dtype == model.Int8
			n, f := tc.n, tc.ffn
			// gate|up: the gate rows, then the up rows.
			m, xw, xScaleWord, gu := matmulInputs(r, tc.dtype, 2*f, tc.cols, n, 0)
			ref := make([]float32, n*f)
			for i := 0; i < n; i++ {
				row := gu[2*i*f : 2*(i+1)*f]
				cpu.GatedAct(ref[i*f:(i+1)*f], row[:f], row[f:], tc.act)
			}
			wdata, wScaleWord := packMat(&m)
			const maxWord = 3 // not aligned on purpose; poison around the maxima
			mxWords := make([]uint32, maxWord+n+1)
			for i := range mxWords {
				if i < maxWord || i >= maxWord+n {
					mxWords[i] = poison
				}
			}
			hb := buffer(t, nil, n*f+1)
			key := Key{Family: "gemv", Entry: "gemv", Int8: int8Mode, WG: tc.wg, TPR: tc.tpr, FMA: tc.fma, Out: "gated", SiLU: tc.act == model.SwiGLU}
			p := GemvParams{Rows: uint32(f), Cols: uint32(tc.cols), WScaleWord: uint32(wScaleWord), XScaleWord: uint32(xScaleWord),
				OutStride: uint32(f), MaxWord: maxWord}
			hr := tc.wg / tc.tpr / 2
			grid := [3]int{(f + hr - 1) / hr, 1, n}
			bufs := []gpu.Buffer{buffer(t, u32bytes(pad16(wdata)), 0), buffer(t, u32bytes(pad16(xw)), 0), hb}
			var mx gpu.Buffer
			if int8Mode {
				mx = buffer(t, u32bytes(mxWords), 0)
				bufs = append(bufs, mx)
			}
			dispatch(t, key, Step{N: uint32(n)}, p, grid, bufs...)
			got := bytesF32(read(t, hb, n*f+1))
			if g := math.Float32bits(got[n*f]); g != poison {
				t.Fatalf("word after the h rows overwritten: %#x", g)
			}
			closeTo(t, "h", got[:n*f], ref, rel)
			// Today's path on the same device: the plain product into gate|up
			// rows, then gated_quant (float32: h itself).
			today := todaysGated(t, tc.dtype, tc.act, f, tc.cols, n, tc.wg, tc.tpr, tc.fma, wdata, wScaleWord, xw, xScaleWord)
			if !int8Mode {
				for i, w := range today {
					if g := math.Float32bits(got[i]); g != w {
						t.Fatalf("h[%d] = %#x, gated_quant's %#x", i, g, w)
					}
				}
				return
			}
			gotMx := bytesU32(read(t, mx, len(mxWords)))
			for i, w := range gotMx {
				want := mxWords[i]
				if tt := i - maxWord; tt >= 0 && tt < n {
					var m float32
					for _, v := range got[tt*f : (tt+1)*f] {
						m = max(m, float32(math.Abs(float64(v))))
					}
					want = math.Float32bits(m)
				}
				if w != want {
					t.Fatalf("max word %d = %#x, want %#x", i, w, want)
				}
			}
			// Down's prologue quantises h by the maxima, as gated_quant
			// would have: the quantize kernel on the same h is the reference.
			hWords := n * f / 4
			hScaleWord := hWords + 2
			refQ := buffer(t, nil, hScaleWord+n+1)
			dispatch(t, Key{Family: "quant", Entry: "quantize", Int8: true, WG: RowWG}, Step{N: uint32(n)},
				QuantParams{Cols: uint32(f), RowsPerToken: 1, ScaleWord: uint32(hScaleWord)}, [3]int{n, 1, 1}, hb, refQ)
			const downRows = 37
			down := testmodel.FromF32(model.Int8, downRows, f, randF32(r, downRows*f, 0.3))
			ddata, dScaleWord := packMat(&down)
			hq := buffer(t, nil, hScaleWord+n+1)
			out := buffer(t, nil, n*downRows)
			dkey := Key{Family: "gemv", Entry: "gemv", Int8: true, WG: 64, TPR: 8, In: "quant"}
			dispatch(t, dkey, Step{N: uint32(n)}, GemvParams{Rows: downRows, Cols: uint32(f), WScaleWord: uint32(dScaleWord),
				OutStride: downRows, HScaleWord: uint32(hScaleWord), MaxWord: maxWord},
				[3]int{(downRows + 7) / 8, 1, n}, buffer(t, u32bytes(pad16(ddata)), 0), hb, out, hq, mx)
			gotQ, wantQ := bytesU32(read(t, hq, hScaleWord+n+1)), bytesU32(read(t, refQ, hScaleWord+n+1))
			for i := range wantQ {
				if gotQ[i] != wantQ[i] {
					t.Fatalf("down's quantised input word %d = %#x, quantize's %#x (values end at %d, scales from %d)", i, gotQ[i], wantQ[i], hWords, hScaleWord)
				}
				if i < hWords || i >= hScaleWord && i < hScaleWord+n {
					if gotQ[i] != today[i] {
						t.Fatalf("down's quantised input word %d = %#x, gated_quant's %#x (values end at %d, scales from %d)", i, gotQ[i], today[i], hWords, hScaleWord)
					}
				}
			}
			a := &cpu.Act{N: n, Cols: f, Q: unpackI8(gotQ, n*f), Scale: bytesF32(u32bytes(gotQ[hScaleWord : hScaleWord+n]))}
			for i := 0; i < n; i++ {
				checkQuantised(t, "input", a.Q[i*f:(i+1)*f], a.Scale[i], got[i*f:(i+1)*f])
			}
			want := make([]float32, n*downRows)
			cpu.MatMul(want, &down, a)
			gotY := bytesF32(read(t, out, n*downRows))
			for i := range want {
				if gotY[i] != want[i] {
					t.Fatalf("down y[%d] = %v, want %v (int32 accumulators differ)", i, gotY[i], want[i])
				}
			}
		})
	}
}

// todaysGated runs the decode step's path before the epilogue on the same
// gate|up matrix and input: the plain product into gate|up rows, then
// gated_quant. It returns gated_quant's words: h's bits (float32), or the
// int8 row with its scales at n*f/4 + 2 (int8).
func todaysGated(t *testing.T, dtype model.DType, act model.Activation, f, cols, n, wg, tpr int, fma bool,
	wdata []uint32, wScaleWord int, xw []uint32, xScaleWord int) []uint32 {
	t.Helper()
	int8Mode := dtype == model.Int8
	gub := buffer(t, nil, n*2*f)
	rpw := wg / tpr
	dispatch(t, Key{Family: "gemv", Entry: "gemv", Int8: int8Mode, WG: wg, TPR: tpr, FMA: fma}, Step{N: uint32(n)},
		MatmulParams{Rows: uint32(2 * f), Cols: uint32(cols), WScaleWord: uint32(wScaleWord), XScaleWord: uint32(xScaleWord), OutStride: uint32(2 * f)},
		[3]int{(2*f + rpw - 1) / rpw, 1, n}, buffer(t, u32bytes(pad16(wdata)), 0), buffer(t, u32bytes(pad16(xw)), 0), gub)
	words, scaleWord := n*f, 0
	if int8Mode {
		scaleWord = n*f/4 + 2
		words = scaleWord + n
	}
	dst := buffer(t, nil, words)
	dispatch(t, Key{Family: "act", Entry: "gated_quant", Int8: int8Mode, WG: RowWG, SiLU: act == model.SwiGLU}, Step{N: uint32(n)},
		GatedParams{Cols: uint32(f), ScaleWord: uint32(scaleWord)}, [3]int{n, 1, 1}, gub, dst)
	return bytesU32(read(t, dst, words))
}
