//go:build !js && !wasip1

package shaders

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
)

// pad16 pads words to whole 16-byte vectors, as the vector kernels need.
func pad16(w []uint32) []uint32 {
	for len(w)%4 != 0 {
		w = append(w, poison)
	}
	return w
}

// TestMatrixProducts runs the decode (gemv, both int8 forms) and prefill
// (tiled) products against engine/cpu's MatMul, with the shapes they meet:
// rows that fill no whole workgroup, more than 1024 columns (the float32
// sums of int8 products move to int32 in chunks), token counts across tile
// edges, logits tokens from first, a soft-cap, and a part of a split W.
// The int8 tiled cases run the device's tier: the packed dot product or
// the fallback, and where Dawn offers subgroup matrices
// (WICK_DAWN_EXPERIMENTAL=1 on a GPU that has them) the large tile on
// them, and the 64x64 MATRIX tile by name.
func TestMatrixProducts(t *testing.T) { onDevices(t, testMatrixProducts) }

func testMatrixProducts(t *testing.T) {
	info := device(t).Info()
	tier := TierOf(info)
	if info.Has(FeatureSubgroupMatrix) && !tier.Matrix {
		t.Errorf("the device has %s (configurations %+v, subgroups %d..%d) but its tier %s leaves it unused: tiled's MATRIX variant needs %+v",
			FeatureSubgroupMatrix, info.SubgroupMatrix, info.SubgroupMinSize, info.SubgroupMaxSize, tier, MatrixConfig)
	}
	t.Logf("tier %s: the int8 tiled product runs as %s and %s", tier, tier.Apply(Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG}).Label(),
		tier.Apply(Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Tile: TiledBig}).Label())
	type tcase struct {
		name             string
		key              Key
		dtype            model.DType
		rows, cols, n    int
		fromFirst, first int
		softcap          float32
		outRow, stride   int
	}
	var cases []tcase
	for _, g := range []struct {
		name string
		key  Key
	}{
		{"gemv-int", Key{Family: "gemv", Entry: "gemv", WG: 64, TPR: 16}},
		{"gemv-int-tpr8", Key{Family: "gemv", Entry: "gemv", WG: 256, TPR: 8}},
		{"gemv-int-tpr128", Key{Family: "gemv", Entry: "gemv", WG: 256, TPR: 128}},
		{"gemv-fma", Key{Family: "gemv", Entry: "gemv", WG: 128, TPR: 32, FMA: true}},
		{"tiled", Key{Family: "tiled", Entry: "tiled", WG: 256}},
		{"tiled-t64", Key{Family: "tiled", Entry: "tiled", WG: 256, Tile: 64}},
	} {
		cases = append(cases,
			tcase{g.name + "-int8", g.key, model.Int8, 67, 16 * 71, 1, 0, 0, 0, 0, 67},
			tcase{g.name + "-int8-two-tokens", g.key, model.Int8, 131, 16 * 3, 2, 0, 0, 0, 0, 131},
			// Many iterations of gemv's loop of two vectors and its last odd
			// one (25 vectors an invocation at 8 a row).
			tcase{g.name + "-int8-long-row", g.key, model.Int8, 37, 16 * 203, 1, 0, 0, 0, 0, 37},
			tcase{g.name + "-int8-logits-part", g.key, model.Int8, 45, 16 * 5, 4, 1, 2, 30, 7, 59},
			tcase{g.name + "-f32", g.key, model.F32, 29, 4 * 71, 3, 0, 0, 5, 0, 29},
		)
	}
	tiled := Key{Family: "tiled", Entry: "tiled", WG: 256}
	cases = append(cases,
		tcase{"tiled-int8-wide", tiled, model.Int8, 70, 4 * 601, 5, 0, 0, 0, 0, 70},
		tcase{"tiled-int8-many-tokens", tiled, model.Int8, 131, 4 * 37, 71, 0, 0, 0, 0, 131},
		tcase{"tiled-f32-many-tokens", tiled, model.F32, 65, 4 * 19, 67, 1, 3, 0, 2, 70},
	)
	// The DOT4 product's written-out 64x64 tile and the large tile (the
	// first 64x64 one on tiers without the packed dot product): rows and tokens across its edges, columns that end inside
	// a pass (37 words of 8 a pass) or span many, logits tokens from
	// first, a soft-cap, a part of a split W.
	t64 := Key{Family: "tiled", Entry: "tiled", WG: 256, Tile: 64}
	big := Key{Family: "tiled", Entry: "tiled", WG: 256, Tile: TiledBig}
	cases = append(cases,
		tcase{"tiled-t64-int8-wide", t64, model.Int8, 70, 4 * 601, 5, 0, 0, 0, 0, 70},
		tcase{"tiled-t64-int8-many-tokens", t64, model.Int8, 131, 4 * 37, 71, 0, 0, 0, 0, 131},
		tcase{"tiled-t64-int8-softcap", t64, model.Int8, 65, 16 * 9, 67, 1, 3, 30, 2, 70},
		tcase{"tiled-big-int8", big, model.Int8, 131, 4 * 37, 130, 0, 0, 0, 0, 131},
		tcase{"tiled-big-int8-wide", big, model.Int8, 259, 4 * 601, 257, 0, 0, 0, 0, 259},
		tcase{"tiled-big-int8-one-pass", big, model.Int8, 128, 4 * 3, 128, 0, 0, 0, 0, 128},
		tcase{"tiled-big-int8-logits-part", big, model.Int8, 45, 16 * 5, 140, 1, 9, 30, 7, 59},
		tcase{"tiled-big-int8-softcap", big, model.Int8, 200, 16 * 9, 129, 0, 0, 30, 0, 200},
	)
	// The written-out 64x64 tile as MATRIX (128 columns a pass): columns
	// that end inside a pass or span many, rows and tokens across its
	// edges; the DOT4 one where the tier has no MatrixTile (Tier.Apply).
	cases = append(cases,
		tcase{"tiled-t64-int8-deep", t64, model.Int8, 97, 4 * 1001, 130, 0, 0, 0, 0, 97},
		tcase{"tiled-t64-int8-one-pass", t64, model.Int8, 64, 4 * 3, 64, 0, 0, 0, 0, 64},
		tcase{"tiled-t64-int8-from-first", t64, model.Int8, 45, 16 * 5, 70, 1, 5, 0, 7, 59},
	)
	// The 64x64 MATRIX tile, which tiers leave to DOT4 (Tier.Apply), where
	// the device has subgroup matrices.
	if tier.Matrix {
		sm := Key{Family: "tiled", Entry: "tiled", WG: 256, Matrix: true}
		cases = append(cases,
			tcase{"tiled-sm-int8-wide", sm, model.Int8, 70, 4 * 601, 5, 0, 0, 0, 0, 70},
			tcase{"tiled-sm-int8-many-tokens", sm, model.Int8, 131, 4 * 37, 71, 0, 0, 0, 0, 131},
			tcase{"tiled-sm-int8-logits-part", sm, model.Int8, 45, 16 * 5, 4, 1, 2, 30, 7, 59},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			tc.key.Int8 = tc.dtype == model.Int8
			m, xw, xScaleWord, want := matmulInputs(r, tc.dtype, tc.rows, tc.cols, tc.n, tc.softcap)
			wdata, wScaleWord := packMat(&m)
			tokens := tc.n - tc.first
			outWords := tokens * tc.stride
			out := buffer(t, nil, outWords)
			var grid [3]int
			switch tc.key.Family {
			case "gemv":
				rpw := tc.key.WG / tc.key.TPR
				grid = [3]int{(tc.rows + rpw - 1) / rpw, 1, tokens}
			default:
				side := TiledTile(TierOf(device(t).Info()).Apply(tc.key))
				grid = [3]int{(tc.rows + side - 1) / side, (tokens + side - 1) / side, 1}
			}
			dispatch(t, tc.key, Step{N: uint32(tc.n), First: uint32(tc.first)},
				MatmulParams{Rows: uint32(tc.rows), Cols: uint32(tc.cols), WScaleWord: uint32(wScaleWord), XScaleWord: uint32(xScaleWord),
					OutRow: uint32(tc.outRow), OutStride: uint32(tc.stride), FromFirst: uint32(tc.fromFirst), Softcap: tc.softcap},
				grid, buffer(t, u32bytes(pad16(wdata)), 0), buffer(t, u32bytes(pad16(xw)), 0), out)
			got := bytesF32(read(t, out, outWords))
			for tt := 0; tt < tokens; tt++ {
				row := got[tt*tc.stride+tc.outRow : tt*tc.stride+tc.outRow+tc.rows]
				ref := want[(tc.first+tt)*tc.rows : (tc.first+tt+1)*tc.rows]
				if tc.dtype == model.Int8 && tc.softcap == 0 {
					for i := range ref {
						if row[i] != ref[i] {
							t.Fatalf("token %d row %d: %v, want %v (int32 accumulators differ)", tt, i, row[i], ref[i])
						}
					}
				} else {
					closeTo(t, "y", row, ref, rel)
				}
			}
		})
	}
}

// TestTiledSplit runs the split product (the large DOT4 tile over slices
// of the columns, adding int32 sums with atomics, then tiled_merge)
// against engine/cpu's MatMul: slices that end inside a pass, more slices
// than passes (empty ones), rows and tokens across tile edges, logits
// tokens from first, a soft-cap; the scratch must be zero again after the
// merge. Devices without the packed dot product have no split form.
func TestTiledSplit(t *testing.T) { onDevices(t, testTiledSplit) }

func testTiledSplit(t *testing.T) {
	// The large tile's split form (DOT4) and the written-out 64x64 tile's
	// (DOT4, or MATRIX where the tier has MatrixTile).
	for _, tile := range []int{TiledBig, 64} {
		split := Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Tile: tile, Split: true}
		t.Run(fmt.Sprintf("t%d", tile), func(t *testing.T) {
			if k := TierOf(device(t).Info()).Apply(split); !k.Split {
				t.Skipf("tier %s has no split product (it runs %s)", TierOf(device(t).Info()), k.Label())
			}
			testTiledSplitKey(t, split)
		})
	}
}

func testTiledSplitKey(t *testing.T, split Key) {
	side := TiledTile(TierOf(device(t).Info()).Apply(split))
	t.Logf("runs %s", TierOf(device(t).Info()).Apply(split).Label())
	merge := Key{Family: "tiled_merge", Entry: "merge", Int8: true, WG: TiledWG}
	for _, tc := range []struct {
		name           string
		rows, cols, n  int
		first          int
		softcap        float32
		outRow, stride int
		slices         int
	}{
		{"four-slices", 131, 4 * 601, 130, 0, 0, 0, 131, 4},
		{"uneven-slices", 259, 4 * 77, 200, 0, 0, 3, 270, 3},
		{"more-slices-than-passes", 70, 4 * 20, 129, 0, 0, 0, 70, 8},
		{"logits-part-softcap", 45, 16 * 37, 140, 9, 30, 7, 59, 2},
		{"deep-slices", 67, 4 * 1001, 71, 0, 0, 0, 67, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			m, xw, xScaleWord, want := matmulInputs(r, model.Int8, tc.rows, tc.cols, tc.n, tc.softcap)
			wdata, wScaleWord := packMat(&m)
			tokens := tc.n - tc.first
			var fromFirst uint32
			if tc.first > 0 {
				fromFirst = 1
			}
			params := MatmulParams{Rows: uint32(tc.rows), Cols: uint32(tc.cols), WScaleWord: uint32(wScaleWord), XScaleWord: uint32(xScaleWord),
				OutRow: uint32(tc.outRow), OutStride: uint32(tc.stride), FromFirst: fromFirst, Softcap: tc.softcap}
			st := Step{N: uint32(tc.n), First: uint32(tc.first)}
			wb, xb := buffer(t, u32bytes(pad16(wdata)), 0), buffer(t, u32bytes(pad16(xw)), 0)
			part := buffer(t, make([]byte, 4*tokens*tc.rows), 0)
			out := buffer(t, nil, tokens*tc.stride)
			dispatch(t, split, st, params, [3]int{(tc.rows + side - 1) / side, (tokens + side - 1) / side, tc.slices}, wb, xb, part)
			dispatch(t, merge, st, params, [3]int{(tc.rows + TiledWG - 1) / TiledWG, tokens, 1}, wb, xb, out, part)
			got := bytesF32(read(t, out, tokens*tc.stride))
			for tt := 0; tt < tokens; tt++ {
				row := got[tt*tc.stride+tc.outRow : tt*tc.stride+tc.outRow+tc.rows]
				ref := want[(tc.first+tt)*tc.rows : (tc.first+tt+1)*tc.rows]
				if tc.softcap != 0 {
					closeTo(t, "y", row, ref, rel)
					continue
				}
				for i := range ref {
					if row[i] != ref[i] {
						t.Fatalf("token %d row %d: %v, want %v (int32 accumulators differ)", tt, i, row[i], ref[i])
					}
				}
			}
			for i, b := range read(t, part, tokens*tc.rows) {
				if b != 0 {
					t.Fatalf("scratch byte %d is %d after the merge, want 0", i, b)
				}
			}
		})
	}
}

// checkQuantised compares an int8 row and its scale with quant.Quantize of
// the reference values: the scale within rel, each value within one step
// where the reference sits this close to a rounding boundary.
func checkQuantised(t *testing.T, what string, q []int8, scale float32, ref []float32) {
	t.Helper()
	want := make([]int8, len(ref))
	ws := quant.Quantize(want, ref)
	if math.Abs(float64(scale-ws)) > rel*float64(ws) {
		t.Fatalf("%s: scale %v, want %v", what, scale, ws)
	}
	for i := range want {
		if q[i] == want[i] {
			continue
		}
		v := float64(ref[i] / ws)
		if math.Abs(math.Abs(v-math.Floor(v))-0.5) > 1e-3 || math.Abs(float64(q[i])-float64(want[i])) > 1 {
			t.Fatalf("%s[%d] = %d, want %d (x/scale = %v)", what, i, q[i], want[i], v)
		}
	}
}

func TestPrenorm(t *testing.T) { onDevices(t, testPrenorm) }

func testPrenorm(t *testing.T) {
	for _, tc := range []struct {
		name            string
		int8            bool
		cols, n         int
		add, post, plus bool
	}{
		{"int8-first-layer", true, 4 * 37, 3, false, false, true},
		{"int8-residual-post-norm", true, 4 * 53, 2, true, true, true},
		{"int8-residual", true, 4 * 29, 5, true, false, false},
		{"f32-residual-post-norm", false, 71, 3, true, true, false},
		{"int8-wide-post-norm", true, 4 * 201, 2, true, true, true},
	} {
		// Both forms: the row reread from memory, and held in registers,
		// as many quads an invocation as the row needs (several in the
		// wide case) and the most (quads the row does not reach).
		for _, regs := range slices.Compact([]int{0, RowQuadsFor(tc.cols, 32), RowQuadCounts[len(RowQuadCounts)-1]}) {
			name := tc.name
			if regs != 0 {
				name += fmt.Sprintf("-regs%d", regs)
			}
			t.Run(name, func(t *testing.T) {
				r := newRand(t)
				a := randF32(r, tc.n*tc.cols, 3)
				b := randF32(r, tc.n*tc.cols, 2)
				g1, g2 := randF32(r, tc.cols, 0.5), randF32(r, tc.cols, 0.5)
				const eps = 1e-6
				wantA := append([]float32(nil), a...)
				wantH := make([]float32, len(a))
				for i := 0; i < tc.n; i++ {
					ra := wantA[i*tc.cols : (i+1)*tc.cols]
					if tc.add {
						rb := append([]float32(nil), b[i*tc.cols:(i+1)*tc.cols]...)
						if tc.post {
							cpu.RMSNorm(rb, rb, g1, eps, tc.plus)
						}
						for j := range ra {
							ra[j] += rb[j]
						}
					}
					cpu.RMSNorm(wantH[i*tc.cols:(i+1)*tc.cols], ra, g2, eps, tc.plus)
				}
				words, scaleWord := tc.n*tc.cols, 0
				if tc.int8 {
					words = tc.n * tc.cols / 4
					scaleWord = words + 1
				}
				size := words
				if tc.int8 {
					size = scaleWord + tc.n
				}
				run := func(regs int) (a2, h []byte) {
					ab, hb := buffer(t, f32bytes(a), 0), buffer(t, nil, size)
					dispatch(t, Key{Family: "prenorm", Entry: "prenorm", Int8: tc.int8, WG: 32, Regs: regs}, Step{N: uint32(tc.n)},
						PrenormParams{Cols: uint32(tc.cols), OnePlus: b2u(tc.plus), Eps: eps, Add: b2u(tc.add), PostNorm: b2u(tc.post), ScaleWord: uint32(scaleWord)},
						[3]int{tc.n, 1, 1}, ab, buffer(t, f32bytes(g1), 0), buffer(t, f32bytes(b), 0), buffer(t, f32bytes(g2), 0), hb)
					return read(t, ab, len(a)), read(t, hb, size)
				}
				gotA, got := run(regs)
				closeTo(t, "a", bytesF32(gotA), wantA, rel)
				if regs != 0 {
					// The register form adds what the rereading form adds, in
					// its order: the same bits (sampled streams depend on it).
					if rrA, rrH := run(0); !bytes.Equal(gotA, rrA) || !bytes.Equal(got, rrH) {
						t.Fatalf("the register form's a or h differs from the rereading form's, bit for bit")
					}
				}
				if !tc.int8 {
					closeTo(t, "h", bytesF32(got), wantH, rel)
					return
				}
				w := bytesU32(got)
				q := unpackI8(w, tc.n*tc.cols)
				for i := 0; i < tc.n; i++ {
					checkQuantised(t, "h", q[i*tc.cols:(i+1)*tc.cols], math.Float32frombits(w[scaleWord+i]), wantH[i*tc.cols:(i+1)*tc.cols])
				}
			})
		}
	}
}

func TestGatedQuant(t *testing.T) { onDevices(t, testGatedQuant) }

func testGatedQuant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		int8    bool
		act     model.Activation
		cols, n int
	}{
		{"int8-geglu", true, model.GeGLUTanh, 4 * 37, 3},
		{"int8-swiglu", true, model.SwiGLU, 4 * 91, 2},
		{"f32-geglu", false, model.GeGLUTanh, 75, 2},
		{"int8-geglu-wide", true, model.GeGLUTanh, 4 * 301, 2},
	} {
		// The int8 form also held in registers (several quads per
		// invocation in the wide case).
		for _, regs := range []int{0, RowQuads} {
			if regs != 0 && !tc.int8 {
				continue
			}
			name := tc.name
			if regs != 0 {
				name += "-regs"
			}
			t.Run(name, func(t *testing.T) {
				r := newRand(t)
				gu := randF32(r, tc.n*2*tc.cols, 3)
				gu[0], gu[1] = 40, -40 // saturated ends
				want := make([]float32, tc.n*tc.cols)
				for i := 0; i < tc.n; i++ {
					row := gu[2*i*tc.cols : 2*(i+1)*tc.cols]
					cpu.GatedAct(want[i*tc.cols:(i+1)*tc.cols], row[:tc.cols], row[tc.cols:], tc.act)
				}
				words, scaleWord := tc.n*tc.cols, 0
				if tc.int8 {
					words = tc.n * tc.cols / 4
					scaleWord = words + 3
				}
				size := words
				if tc.int8 {
					size = scaleWord + tc.n
				}
				out := buffer(t, nil, size)
				dispatch(t, Key{Family: "act", Entry: "gated_quant", Int8: tc.int8, WG: 64, SiLU: tc.act == model.SwiGLU, Regs: regs}, Step{N: uint32(tc.n)},
					GatedParams{Cols: uint32(tc.cols), ScaleWord: uint32(scaleWord)}, [3]int{tc.n, 1, 1}, buffer(t, f32bytes(gu), 0), out)
				got := read(t, out, size)
				if !tc.int8 {
					closeTo(t, "act", bytesF32(got), want, rel)
					return
				}
				w := bytesU32(got)
				q := unpackI8(w, tc.n*tc.cols)
				for i := 0; i < tc.n; i++ {
					checkQuantised(t, "act", q[i*tc.cols:(i+1)*tc.cols], math.Float32frombits(w[scaleWord+i]), want[i*tc.cols:(i+1)*tc.cols])
				}
			})
		}
	}
}

// TestStream checks that the bandwidth kernel reads every vector: fed data
// whose fold is the magic value, it must write it.
func TestStream(t *testing.T) { onDevices(t, testStream) }

func testStream(t *testing.T) {
	const vecs = 1000 // not a multiple of WG*UNROLL
	data := make([]uint32, 4*vecs)
	data[4*(vecs-1)] = 0xabcd // only the last vector is not zero: its fold is 0xabcd
	sink := buffer(t, nil, 64)
	dispatch(t, Key{Family: "stream", Entry: "stream", WG: 64, TPR: 4}, Step{}, StreamParams{Vecs: vecs, Magic: 0xabcd},
		[3]int{(vecs + 255) / 256, 1, 1}, buffer(t, u32bytes(data), 0), sink)
	got := bytesU32(read(t, sink, 64))
	found := false
	for _, v := range got {
		found = found || v == 0xabcd
	}
	if !found {
		t.Fatalf("the kernel did not fold the last vector")
	}
}
