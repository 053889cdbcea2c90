//go:build !js && !wasip1

package shaders

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
	"github.com/wick-run/wick/internal/gputest"
	"github.com/wick-run/wick/internal/testmodel"
)

// Every kernel runs on fresh random inputs of odd sizes (not multiples of
// the workgroup) into poisoned outputs, against the engine/cpu op: int8
// results must be identical, float32 ones within 1e-4 relative.

const rel = 1e-4

func randF32(r *rand.Rand, n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * std)
	}
	return v
}

// newRand seeds a test's inputs from its name, less the device's subtest
// (onDevices): every device gets the same inputs.
func newRand(t *testing.T) *rand.Rand {
	name := t.Name()
	for _, d := range gputest.Devices() {
		name = strings.Replace(name, "/"+d.Name+"/", "/", 1)
	}
	seed := uint64(len(name)) * 0x9e3779b97f4a7c15
	return rand.New(rand.NewPCG(seed, 42))
}

func TestQuantize(t *testing.T) { onDevices(t, testQuantize) }

func testQuantize(t *testing.T) {
	for _, tc := range []struct {
		name       string
		int8       bool
		rows, cols int // rows per token, values per row
		n          int
	}{
		{"int8-activations", true, 1, 4 * 37, 3},
		{"int8-kv-heads", true, 3, 12, 5},
		// Many rows, many scales: each must equal float32 max|x| / 127
		// to the bit (quant_scale divides in integers for that).
		{"int8-many-scales", true, 1, 16, 600},
		{"f32-copy", false, 2, 4 * 19, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			total := tc.n * tc.rows
			src := randF32(r, total*tc.cols, 2)
			src[5] = 0 // a zero among values
			words, scaleWord := total*tc.cols/4, 0
			if !tc.int8 {
				words = total * tc.cols
			}
			scaleWord = words + 3 // not aligned on purpose
			out := buffer(t, nil, scaleWord+total)
			dispatch(t, Key{Family: "quant", Entry: "quantize", Int8: tc.int8, WG: 32}, Step{N: uint32(tc.n)},
				QuantParams{Cols: uint32(tc.cols), RowsPerToken: uint32(tc.rows), ScaleWord: uint32(scaleWord)},
				[3]int{total, 1, 1}, buffer(t, f32bytes(src), 0), out)
			got := bytesU32(read(t, out, scaleWord+total))
			if !tc.int8 {
				for i, v := range src {
					if math.Float32frombits(got[i]) != v {
						t.Fatalf("copy[%d] = %v, want %v", i, math.Float32frombits(got[i]), v)
					}
				}
				return
			}
			q := unpackI8(got, total*tc.cols)
			want := make([]int8, tc.cols)
			for row := 0; row < total; row++ {
				s := quant.Quantize(want, src[row*tc.cols:(row+1)*tc.cols])
				if gs := math.Float32frombits(got[scaleWord+row]); gs != s {
					t.Fatalf("row %d: scale %v, want %v", row, gs, s)
				}
				for i, w := range want {
					if g := q[row*tc.cols+i]; g != w {
						t.Fatalf("row %d value %d: %d, want %d (x=%v)", row, i, g, w, src[row*tc.cols+i])
					}
				}
			}
		})
	}
}

// packMat lays a matrix out as the webgpu backend does: values (int8
// packed, or float32 bits), then the per-row scales at scaleWord.
func packMat(m *model.Mat) (data []uint32, scaleWord int) {
	if m.I8 == nil {
		return bytesU32(f32bytes(m.F32)), 0
	}
	data = packI8(m.I8)
	scaleWord = len(data) + 1
	data = append(data, poison)
	return append(data, bytesU32(f32bytes(m.Scale))...), scaleWord
}

func TestMatmul(t *testing.T) { onDevices(t, testMatmul) }

func testMatmul(t *testing.T) {
	for _, tc := range []struct {
		name             string
		dtype            model.DType
		rows, cols, n    int
		fromFirst, first int
		softcap          float32
		outRow, stride   int
	}{
		{"int8-decode", model.Int8, 67, 4 * 37, 1, 0, 0, 0, 0, 67},
		{"int8-prefill", model.Int8, 131, 4 * 53, 5, 0, 0, 0, 0, 131},
		{"int8-logits-part", model.Int8, 45, 4 * 9, 4, 1, 2, 30, 7, 59},
		{"f32-decode", model.F32, 67, 4 * 37, 1, 0, 0, 0, 0, 67},
		{"f32-prefill-softcap", model.F32, 29, 4 * 71, 3, 0, 0, 5, 0, 29},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			m, xw, xScaleWord, want := matmulInputs(r, tc.dtype, tc.rows, tc.cols, tc.n, tc.softcap)
			wdata, wScaleWord := packMat(&m)
			tokens := tc.n - tc.first
			outWords := tokens * tc.stride
			out := buffer(t, nil, outWords)
			dispatch(t, Key{Family: "matmul", Entry: "matmul", Int8: tc.dtype == model.Int8, WG: 64},
				Step{N: uint32(tc.n), First: uint32(tc.first)},
				MatmulParams{Rows: uint32(tc.rows), Cols: uint32(tc.cols), WScaleWord: uint32(wScaleWord), XScaleWord: uint32(xScaleWord),
					OutRow: uint32(tc.outRow), OutStride: uint32(tc.stride), FromFirst: uint32(tc.fromFirst), Softcap: tc.softcap},
				[3]int{tc.rows, 1, tokens}, buffer(t, u32bytes(wdata), 0), buffer(t, u32bytes(xw), 0), out)
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

func TestRMSNormAndResidual(t *testing.T) { onDevices(t, testRMSNormAndResidual) }

func testRMSNormAndResidual(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entry   string
		cols, n int
		onePlus bool
		norm    bool
	}{
		{"rmsnorm", "rmsnorm", 4 * 37, 3, false, false},
		{"rmsnorm-one-plus", "rmsnorm", 4 * 53, 2, true, false},
		{"residual", "residual", 4 * 37, 3, false, false},
		{"residual-post-norm", "residual", 4 * 29, 3, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			a := randF32(r, tc.n*tc.cols, 3)
			b := randF32(r, tc.n*tc.cols, 2)
			g := randF32(r, tc.cols, 0.5)
			const eps = 1e-6
			want := make([]float32, tc.n*tc.cols)
			for i := 0; i < tc.n; i++ {
				row := want[i*tc.cols : (i+1)*tc.cols]
				switch tc.entry {
				case "rmsnorm":
					cpu.RMSNorm(row, a[i*tc.cols:(i+1)*tc.cols], g, eps, tc.onePlus)
				default:
					copy(row, b[i*tc.cols:(i+1)*tc.cols])
					if tc.norm {
						cpu.RMSNorm(row, row, g, eps, tc.onePlus)
					}
					for j := range row {
						row[j] += a[i*tc.cols+j]
					}
				}
			}
			var ab, bb = buffer(t, f32bytes(a), 0), buffer(t, nil, len(b))
			if tc.entry == "residual" {
				bb = buffer(t, f32bytes(b), 0)
			}
			dispatch(t, Key{Family: "norm", Entry: tc.entry, WG: 64}, Step{N: uint32(tc.n)},
				NormParams{Cols: uint32(tc.cols), OnePlus: b2u(tc.onePlus), Eps: eps, Norm: b2u(tc.norm)},
				[3]int{tc.n, 1, 1}, ab, buffer(t, f32bytes(g), 0), bb)
			out := bb
			if tc.entry == "residual" {
				out = ab
			}
			closeTo(t, tc.entry, bytesF32(read(t, out, len(want))), want, rel)
		})
	}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func TestHeadPrep(t *testing.T) { onDevices(t, testHeadPrep) }

func testHeadPrep(t *testing.T) {
	for _, tc := range []struct {
		name            string
		heads, hd, n    int
		norm, onePlus   bool
		kind, chunkSize int
	}{
		{"rope", 3, 12, 5, false, false, 0, 7},
		{"qk-norm-rope", 5, 16, 3, true, true, 1, 4},
		{"wide-head", 1, 136, 2, true, false, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			c := &model.Config{HeadDim: tc.hd, RopeThetaGlobal: 1e4, RopeThetaLocal: 1e6}
			x := randF32(r, tc.n*tc.heads*tc.hd, 1)
			g := randF32(r, tc.hd, 0.3)
			const start = 1000 // large angles: the table, not GPU trig, must carry them
			table := make([]float32, 2*tc.chunkSize*tc.hd)
			for kind := 0; kind < 2; kind++ {
				freqs := c.RopeFreqs(model.AttnKind(kind))
				for tt := 0; tt < tc.chunkSize; tt++ {
					model.RopeCosSin(table[(kind*tc.chunkSize+tt)*tc.hd:][:tc.hd], freqs, start+tt)
				}
			}
			want := append([]float32(nil), x...)
			for tt := 0; tt < tc.n; tt++ {
				row := want[tt*tc.heads*tc.hd : (tt+1)*tc.heads*tc.hd]
				if tc.norm {
					for h := 0; h < tc.heads; h++ {
						cpu.RMSNorm(row[h*tc.hd:(h+1)*tc.hd], row[h*tc.hd:(h+1)*tc.hd], g, 1e-6, tc.onePlus)
					}
				}
				cpu.Rope(row, tc.heads, tc.hd, table[(tc.kind*tc.chunkSize+tt)*tc.hd:][:tc.hd])
			}
			xb := buffer(t, f32bytes(x), 0)
			dispatch(t, Key{Family: "rope", Entry: "headprep", WG: 32}, Step{Start: start, N: uint32(tc.n)},
				RopeParams{Heads: uint32(tc.heads), HeadDim: uint32(tc.hd), Norm: b2u(tc.norm), OnePlus: b2u(tc.onePlus), Eps: 1e-6,
					Table: uint32(tc.kind * tc.chunkSize * tc.hd)},
				[3]int{tc.heads, tc.n, 1}, xb, buffer(t, f32bytes(g), 0), buffer(t, f32bytes(table), 0))
			closeTo(t, "x", bytesF32(read(t, xb, len(want))), want, rel)
		})
	}
}

// TestQKVPrep runs qkv_prep over token rows of query, K and V heads (with
// padding between rows): query heads normed and roped into qo, K heads
// normed, roped and quantised, V heads quantised, into the chunk arrays at
// their offsets; and a layer without K/V (only the query heads run).
func TestQKVPrep(t *testing.T) { onDevices(t, testQKVPrep) }

func testQKVPrep(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		int8                  bool
		heads, kvHeads, hd, n int
		norm, onePlus         bool
	}{
		{"int8-mqa-qk-norm", true, 3, 1, 20, 3, true, true},
		{"int8-gqa-rope", true, 4, 2, 12, 5, false, false},
		{"int8-query-only", true, 3, 0, 20, 2, true, false},
		{"f32-gqa-qk-norm", false, 4, 2, 12, 3, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			hd, n := tc.hd, tc.n
			stride := (tc.heads+2*tc.kvHeads)*hd + 5
			x := randF32(r, n*stride, 1)
			// Norm weights at word offsets 3 (query) and 3+hd+1 (K) of g.
			g := randF32(r, 2*hd+4, 0.3)
			qn, kn := 3, 3+hd+1
			c := &model.Config{HeadDim: hd, RopeThetaGlobal: 1e4, RopeThetaLocal: 1e6}
			const start, kind, chunkSize = 500, 1, 6
			table := make([]float32, 2*chunkSize*hd)
			for k := 0; k < 2; k++ {
				for tt := 0; tt < chunkSize; tt++ {
					model.RopeCosSin(table[(k*chunkSize+tt)*hd:][:hd], c.RopeFreqs(model.AttnKind(k)), start+tt)
				}
			}
			prep := func(row []float32, heads int, w []float32, tt int) {
				if tc.norm {
					for h := 0; h < heads; h++ {
						cpu.RMSNorm(row[h*hd:(h+1)*hd], row[h*hd:(h+1)*hd], w, 1e-6, tc.onePlus)
					}
				}
				cpu.Rope(row, heads, hd, table[(kind*chunkSize+tt)*hd:][:hd])
			}
			rows := n * tc.kvHeads
			rowWords := hd
			if tc.int8 {
				rowWords = hd / 4
			}
			// Chunk arrays at odd offsets: K, K scales, V, V scales.
			kw := 1
			ksw := kw + rows*rowWords + 1
			vw := ksw + rows + 2
			vsw := vw + rows*rowWords + 3
			qo, dst := buffer(t, nil, n*tc.heads*hd), buffer(t, nil, vsw+rows)
			dispatch(t, Key{Family: "rope", Entry: "qkv_prep", Int8: tc.int8, WG: 8}, Step{Start: start, N: uint32(n)},
				QKVParams{Heads: uint32(tc.heads), KVHeads: uint32(tc.kvHeads), HeadDim: uint32(hd), Stride: uint32(stride),
					Norm: b2u(tc.norm), OnePlus: b2u(tc.onePlus), Eps: 1e-6, Table: uint32(kind * chunkSize * hd),
					QNorm: uint32(qn), KNorm: uint32(kn), KWord: uint32(kw), KSWord: uint32(ksw), VWord: uint32(vw), VSWord: uint32(vsw), RotHalf: uint32(hd / 2)},
				[3]int{tc.heads + 2*tc.kvHeads, n, 1}, buffer(t, f32bytes(x), 0), buffer(t, f32bytes(g), 0),
				buffer(t, f32bytes(table), 0), qo, dst)
			gotQ := bytesF32(read(t, qo, n*tc.heads*hd))
			got := bytesU32(read(t, dst, vsw+rows))
			for tt := 0; tt < n; tt++ {
				row := append([]float32(nil), x[tt*stride:(tt+1)*stride]...)
				prep(row, tc.heads, g[qn:qn+hd], tt)
				prep(row[tc.heads*hd:], tc.kvHeads, g[kn:kn+hd], tt)
				closeTo(t, "q", gotQ[tt*tc.heads*hd:(tt+1)*tc.heads*hd], row[:tc.heads*hd], rel)
				for h := 0; h < 2*tc.kvHeads; h++ {
					ref := row[(tc.heads+h)*hd : (tc.heads+h+1)*hd]
					vals, scales, kvRow := kw, ksw, tt*tc.kvHeads+h
					what := fmt.Sprintf("token %d K head %d", tt, h)
					if h >= tc.kvHeads {
						vals, scales, kvRow = vw, vsw, tt*tc.kvHeads+h-tc.kvHeads
						what = fmt.Sprintf("token %d V head %d", tt, h-tc.kvHeads)
					}
					words := got[vals+kvRow*rowWords : vals+(kvRow+1)*rowWords]
					if tc.int8 {
						checkQuantised(t, what, unpackI8(words, hd), math.Float32frombits(got[scales+kvRow]), ref)
					} else {
						closeTo(t, what, bytesF32(u32bytes(words)), ref, rel)
					}
				}
			}
		})
	}
}

func TestGatedAct(t *testing.T) { onDevices(t, testGatedAct) }

func testGatedAct(t *testing.T) {
	for _, tc := range []struct {
		name    string
		act     model.Activation
		cols, n int
	}{
		{"geglu", model.GeGLUTanh, 4 * 37, 3},
		{"swiglu", model.SwiGLU, 4 * 91, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			gate := randF32(r, tc.n*tc.cols, 4)
			gate[0], gate[1] = 40, -40 // saturated ends
			up := randF32(r, tc.n*tc.cols, 1)
			want := make([]float32, len(gate))
			cpu.GatedAct(want, gate, up, tc.act)
			gb := buffer(t, f32bytes(gate), 0)
			total := tc.n * tc.cols
			dispatch(t, Key{Family: "act", Entry: "gated", WG: 64, SiLU: tc.act == model.SwiGLU}, Step{N: uint32(tc.n)},
				ActParams{Cols: uint32(tc.cols)}, [3]int{(total + 63) / 64, 1, 1}, gb, buffer(t, f32bytes(up), 0))
			closeTo(t, "gate", bytesF32(read(t, gb, total)), want, rel)
		})
	}
}

func TestEmbed(t *testing.T) { onDevices(t, testEmbed) }

func testEmbed(t *testing.T) {
	for _, dtype := range []model.DType{model.Int8, model.F32} {
		t.Run(dtype.String(), func(t *testing.T) {
			r := newRand(t)
			const vocab, cols, split = 23, 4 * 13, 9 // rows 0..8 in one part, 9..22 in the other
			m := testmodel.FromF32(dtype, vocab, cols, randF32(r, vocab*cols, 0.5))
			ids := []uint32{3, 22, 9, 8, 3}
			out := buffer(t, nil, len(ids)*cols)
			idb := buffer(t, u32bytes(ids), 0)
			for _, part := range [][2]int{{0, split}, {split, vocab}} {
				pm := model.Mat{Rows: part[1] - part[0], Cols: cols}
				if dtype == model.Int8 {
					pm.I8, pm.Scale = m.I8[part[0]*cols:part[1]*cols], m.Scale[part[0]:part[1]]
				} else {
					pm.F32 = m.F32[part[0]*cols : part[1]*cols]
				}
				data, sw := packMat(&pm)
				dispatch(t, Key{Family: "embed", Entry: "embed", Int8: dtype == model.Int8, WG: 32}, Step{N: uint32(len(ids))},
					EmbedParams{Cols: cols, RowLo: uint32(part[0]), Rows: uint32(pm.Rows), ScaleWord: uint32(sw), Scale: 8},
					[3]int{len(ids), 1, 1}, idb, buffer(t, u32bytes(data), 0), out)
			}
			got := bytesF32(read(t, out, len(ids)*cols))
			want := make([]float32, cols)
			for i, id := range ids {
				cpu.EmbedRow(want, &m, int(id), 8)
				for j, w := range want {
					if g := got[i*cols+j]; g != w {
						t.Fatalf("token %d (id %d) [%d] = %v, want %v", i, id, j, g, w)
					}
				}
			}
		})
	}
}

// TestArgmax checks the greedy pick by one workgroup and in two passes
// (blocks, then their merge), with ties inside a block and across blocks:
// the first index wins.
func TestArgmax(t *testing.T) { onDevices(t, testArgmax) }

func testArgmax(t *testing.T) {
	const vocab, n, first, block = 1031, 3, 1, 100
	for _, tc := range []struct {
		name  string
		ties  []int // indices given the largest value; the first is the pick
		split bool
	}{
		{"one workgroup", []int{77, 700}, false},
		{"blocks, tie across blocks", []int{77, 700}, true},
		{"blocks, tie inside a block", []int{1003, 1030}, true},
		{"blocks, first index", []int{0, 5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(t)
			logits := randF32(r, (n-first)*vocab, 1)
			last := logits[(n-1-first)*vocab:]
			for _, i := range tc.ties {
				last[i] = 9
			}
			in := buffer(t, f32bytes(logits), 0)
			out := buffer(t, nil, 4)
			k := Key{Family: "sample", Entry: "argmax", WG: 64}
			p := ArgmaxParams{Cols: vocab, OutWord: 2, Block: block}
			if tc.split {
				parts := (vocab + block - 1) / block
				mid := buffer(t, nil, 2*parts)
				k.Entry = "argmax_part"
				dispatch(t, k, Step{N: n, First: first}, p, [3]int{parts, 1, 1}, in, mid)
				k.Entry = "argmax_merge"
				dispatch(t, k, Step{N: n, First: first}, p, [3]int{1, 1, 1}, mid, out)
			} else {
				dispatch(t, k, Step{N: n, First: first}, p, [3]int{1, 1, 1}, in, out)
			}
			if got := bytesU32(read(t, out, 4))[2]; got != uint32(tc.ties[0]) {
				t.Fatalf("argmax = %d, want %d", got, tc.ties[0])
			}
		})
	}
}

// TestAttention fills a KV arena with random history and a chunk with
// random K/V, then compares every query head of every chunk token with
// engine/cpu's attention: local (ring) and global layers, MQA and GQA,
// chunks that wrap the ring and chunks longer than the window.
func TestAttention(t *testing.T) {
	onDevices(t, testAttention, "local-decode-int8", "local-chunk-wider-than-window-int8", "global-prefill-int8", "global-long-int8")
}

func testAttention(t *testing.T) {
	type tcase struct {
		name     string
		cfg      *model.Config
		layer    int
		start, n int
	}
	var cases []tcase
	for _, dtype := range []model.DType{model.Int8, model.F32} {
		cai := testmodel.CAIShaped(97, dtype)
		plain := testmodel.Plain(97, dtype)
		cases = append(cases,
			tcase{"local-decode-" + dtype.String(), cai, 1, 21, 1},
			tcase{"local-chunk-wider-than-window-" + dtype.String(), cai, 0, 13, 11},
			tcase{"global-prefill-" + dtype.String(), cai, 11, 0, 7},
			tcase{"global-long-" + dtype.String(), cai, 5, 150, 3},
			tcase{"gqa-" + dtype.String(), plain, 2, 40, 5},
		)
		// Heads too wide for a tile of WG keys in workgroup memory.
		wide := testmodel.CAIShaped(97, dtype)
		wide.HeadDim = 520
		cases = append(cases, tcase{"wide-heads-decode-" + dtype.String(), wide, 5, 37, 1},
			tcase{"wide-heads-prefill-" + dtype.String(), wide, 0, 9, 5})
	}
	for _, tc := range cases {
		runCase(t, tc.name, func(t *testing.T) {
			c := tc.cfg
			in := attnInputs(t, c, tc.layer, tc.start, tc.n)
			p, step, qb, ckb, kvb, want := in.p, in.step, in.q, in.chunk, in.kv, in.want
			int8Mode := c.DType == model.Int8
			hd, qd := c.HeadDim, c.QDim()
			out := buffer(t, nil, len(want))
			dispatch(t, Key{Family: "attn", Entry: "attend", Int8: int8Mode, WG: 32, HD: hd}, step,
				p, [3]int{c.Heads, tc.n, 1}, qb, out, kvb, ckb)
			closeTo(t, "attention", bytesF32(read(t, out, len(want))), want, rel)

			// Flash-decoding: a workgroup per tile of keys, then the merge.
			const wg = 16
			split := Key{Family: "attn", Entry: "attend_split", Int8: int8Mode, WG: wg, HD: hd}
			kt := AttnTile(split)
			p.Splits, p.Tile = uint32((tc.start+tc.n+kt-1)/kt), uint32(kt)
			parts := buffer(t, nil, tc.n*c.Heads*int(p.Splits)*(hd+2))
			out = buffer(t, nil, len(want))
			dispatch(t, split, step,
				p, [3]int{int(p.Splits), c.Heads, tc.n}, qb, parts, kvb, ckb)
			dispatch(t, Key{Family: "attn", Entry: "combine", Int8: int8Mode, WG: wg, HD: hd}, step,
				p, [3]int{c.Heads, tc.n, 1}, parts, out)
			closeTo(t, "split attention", bytesF32(read(t, out, len(want))), want, rel)
			if !int8Mode {
				return
			}

			// The merge fused with the output's int8 quantisation.
			checkCombineQuant(t, p, step, parts, bytesF32(read(t, out, len(want))), qd)
		})
	}
}

// attnIn is one attention case's inputs on the device and engine/cpu's
// output for them.
type attnIn struct {
	p            AttnParams // locating the arena region and the chunk
	step         Step
	q, chunk, kv gpu.Buffer
	want         []float32 // engine/cpu's attention of every query head of every chunk token
}

// attnInputs makes the inputs of an attention case: a KV arena whose region
// of layer l holds random history before start (attnArena), a chunk of n
// tokens of random K/V in the layout the backend gives it (a region of n
// slots, after a poison word), random queries, and engine/cpu's output.
func attnInputs(t *testing.T, c *model.Config, l, start, n int) *attnIn {
	t.Helper()
	r := newRand(t)
	m, arena, kvb, p := attnArena(t, r, c, l, start)
	int8Mode := c.DType == model.Int8
	hd, kvh, qd, kvd := c.HeadDim, c.KVHeads, c.QDim(), c.KVDim()
	// The chunk, in the layout the backend gives it: a region of n slots.
	kf, vf := randF32(r, n*kvd, 1), randF32(r, n*kvd, 1)
	var kq, vq []int8
	var ks, vs []float32
	rows := n * kvh
	var chunk []uint32
	var ckw, cvw, cksw, cvsw int
	if int8Mode {
		kq, vq, ks, vs = make([]int8, n*kvd), make([]int8, n*kvd), make([]float32, rows), make([]float32, rows)
		for i := 0; i < rows; i++ {
			ks[i] = quant.Quantize(kq[i*hd:(i+1)*hd], kf[i*hd:(i+1)*hd])
			vs[i] = quant.Quantize(vq[i*hd:(i+1)*hd], vf[i*hd:(i+1)*hd])
		}
		chunk = append(chunk, poison)
		ckw = len(chunk)
		chunk = append(chunk, packI8(kq)...)
		cvw = len(chunk)
		chunk = append(chunk, packI8(vq)...)
		cksw = len(chunk)
		chunk = append(chunk, bytesU32(f32bytes(ks))...)
		cvsw = len(chunk)
		chunk = append(chunk, bytesU32(f32bytes(vs))...)
	} else {
		ckw = 1
		chunk = append(append([]uint32{poison}, bytesU32(f32bytes(kf))...), bytesU32(f32bytes(vf))...)
		cvw = ckw + len(kf)
	}
	q := randF32(r, n*qd, 1)
	want := make([]float32, n*qd)
	if int8Mode {
		m.AttendChunk(want, q, arena, l, start, n, nil, nil, kq, vq, ks, vs)
	} else {
		m.AttendChunk(want, q, arena, l, start, n, kf, vf, nil, nil, nil, nil)
	}
	p.CKWord, p.CVWord, p.CKSWord, p.CVSWord = uint32(ckw), uint32(cvw), uint32(cksw), uint32(cvsw)
	step := Step{Start: uint32(start), N: uint32(n)}
	qb, ckb := buffer(t, f32bytes(q), 0), buffer(t, u32bytes(chunk), 0)
	return &attnIn{p: p, step: step, q: qb, chunk: ckb, kv: kvb, want: want}
}

// checkCombineQuant runs combine_quant over the partial states in parts
// (p and step as the attention ran) and checks its int8 rows against
// package quant's quantisation of merged, what combine gave, over poison:
// the words between the rows and the scales and after the scales stay.
func checkCombineQuant(t *testing.T, p AttnParams, step Step, parts gpu.Buffer, merged []float32, qd int) {
	t.Helper()
	n := int(step.N)
	words := qd / 4
	p.OutScaleWord = uint32(words*n + 3) // not aligned on purpose
	outQ := buffer(t, nil, int(p.OutScaleWord)+n+2)
	dispatch(t, Key{Family: "attn", Entry: "combine_quant", Int8: true, WG: 32, HD: qd / int(p.Heads)}, step,
		p, [3]int{n, 1, 1}, parts, outQ)
	gotQ := bytesU32(read(t, outQ, int(p.OutScaleWord)+n+2))
	for i := words * n; i < int(p.OutScaleWord); i++ {
		if gotQ[i] != poison {
			t.Fatalf("word %d between rows and scales overwritten: %#x", i, gotQ[i])
		}
	}
	for _, i := range []int{int(p.OutScaleWord) + n, int(p.OutScaleWord) + n + 1} {
		if gotQ[i] != poison {
			t.Fatalf("word %d after the scales overwritten: %#x", i, gotQ[i])
		}
	}
	vals := unpackI8(gotQ, n*qd)
	wantQ := make([]int8, qd)
	for tok := 0; tok < n; tok++ {
		ws := quant.Quantize(wantQ, merged[tok*qd:(tok+1)*qd])
		gs := math.Float32frombits(gotQ[int(p.OutScaleWord)+tok])
		if math.Abs(float64(gs-ws)) > 1e-6*float64(ws) {
			t.Fatalf("token %d: scale %v, want %v", tok, gs, ws)
		}
		for i, w := range wantQ {
			// combine's float32 sums, computed again: an ULP apart
			// at most, so a rounding tie may land one step over.
			if g := vals[tok*qd+i]; g-w > 1 || w-g > 1 {
				t.Fatalf("token %d value %d: %d, want %d (x=%v)", tok, i, g, w, merged[tok*qd+i])
			}
		}
	}
}

// attnArena makes engine/cpu's model of c and a KV arena of 256 positions
// whose region of layer l holds random K/V at every position before start,
// and returns them with the region bound as the kernels bind it (from its
// K array to its end) and the attention parameters that locate it.
func attnArena(t *testing.T, r *rand.Rand, c *model.Config, l, start int) (*cpu.Model, *kv.Arena, gpu.Buffer, AttnParams) {
	t.Helper()
	m, err := cpu.New(c, testmodel.Random(c, 1))
	if err != nil {
		t.Fatal(err)
	}
	lay, err := kv.NewLayout(c, 256)
	if err != nil {
		t.Fatal(err)
	}
	arena := kv.NewArena(lay)
	reg := arena.Region(l)
	int8Mode := c.DType == model.Int8
	for pos := 0; pos < start; pos++ {
		for g := 0; g < c.KVHeads; g++ {
			for _, row := range []kv.Row{arena.K(reg, pos, g), arena.V(reg, pos, g)} {
				f := randF32(r, c.HeadDim, 1)
				if int8Mode {
					*row.Scale = quant.Quantize(row.I8, f)
				} else {
					copy(row.F32, f)
				}
			}
		}
	}
	word := func(off int64) uint32 { return uint32((off - reg.K) / 4) }
	p := AttnParams{Heads: uint32(c.Heads), KVHeads: uint32(c.KVHeads), Window: uint32(c.Layers[l].Window),
		Slots: uint32(reg.Slots), Ring: b2u(reg.Ring), Scale: c.Scale(), Softcap: float32(c.AttnSoftcap), KWord: 0, VWord: word(reg.V)}
	if int8Mode {
		p.KSWord, p.VSWord = word(reg.KScale), word(reg.VScale)
	}
	return m, arena, regionBuffer(t, arena, l), p
}

// regionBounds are the first and end bytes of the arena region layer l
// reads: its K and V values and (int8) scales.
func regionBounds(arena *kv.Arena, l int) (lo, hi int64) {
	reg := arena.Region(l)
	rows := int64(reg.Slots * arena.KVHeads)
	if arena.DType == model.Int8 {
		return reg.K, reg.VScale + rows*4
	}
	return reg.K, reg.V + rows*arena.RowBytes
}

// regionBuffer uploads the arena region layer l reads, as the kernels bind it.
func regionBuffer(t *testing.T, arena *kv.Arena, l int) gpu.Buffer {
	lo, hi := regionBounds(arena, l)
	return buffer(t, arena.Buf[lo:hi], 0)
}

// matmulInputs makes a random rows x cols matrix of dtype and n tokens of
// input, packs the input as the matmul kernels read it (int8: the values,
// two words of padding, then a scale per token at xScaleWord), and computes
// engine/cpu's product (soft-capped when softcap != 0) as the reference.
func matmulInputs(r *rand.Rand, dtype model.DType, rows, cols, n int, softcap float32) (m model.Mat, xw []uint32, xScaleWord int, want []float32) {
	m = testmodel.FromF32(dtype, rows, cols, randF32(r, rows*cols, 0.3))
	a := &cpu.Act{N: n, Cols: cols, X: randF32(r, n*cols, 1)}
	if dtype == model.Int8 {
		a.Q, a.Scale = make([]int8, n*cols), make([]float32, n)
		a.Quantize()
		xw = packI8(a.Q)
		xScaleWord = len(xw) + 2
		xw = append(xw, 0, 0)
		xw = append(xw, bytesU32(f32bytes(a.Scale))...)
	} else {
		xw = bytesU32(f32bytes(a.X))
	}
	want = make([]float32, n*rows)
	cpu.MatMul(want, &m, a)
	if softcap != 0 {
		cpu.Softcap(want, softcap)
	}
	return m, xw, xScaleWord, want
}

// TestCombineQuant merges random partial states straight (no attention
// before it) into combine_quant's int8 rows: counts of states per head
// on either side of the merge's batches of loads (MU) and of the four
// values its weights are read by, more than the workgroup memory holds
// for the weights (the slow path), room for more states than used (the
// rest poisoned), and two tokens, the second with one state more. The
// reference merges in float64. One head width for all: each variant's
// compile costs tens of seconds on lavapipe.
func TestCombineQuant(t *testing.T) {
	onDevices(t, testCombineQuant, "mqa-52-states", "many-heads-past-weights-room")
}

func testCombineQuant(t *testing.T) {
	for _, tc := range []struct {
		name               string
		heads, hd, n, room int
	}{
		{"one-state", 4, 16, 1, 3},
		{"mqa-17-states", 4, 16, 17, 18},
		{"mqa-52-states", 4, 16, 52, 64},
		{"odd-heads-37-states", 3, 16, 37, 40},
		{"many-heads-past-weights-room", 8, 16, 130, 131},
	} {
		runCase(t, tc.name, func(t *testing.T) {
			r := newRand(t)
			const tokens = 2
			part := tc.hd + 2
			words := tc.heads * tc.hd / 4
			parts := make([]uint32, tokens*tc.heads*tc.room*part)
			for i := range parts {
				parts[i] = poison
			}
			merged := make([]float32, tokens*tc.heads*tc.hd)
			for tok := range tokens {
				n := tc.n + tok // keys(t) is one longer for each token
				for h := range tc.heads {
					base := (tok*tc.heads + h) * tc.room * part
					ms, ls := randF32(r, n, 3), make([]float64, n)
					vals := randF32(r, n*tc.hd, 1)
					mx := math.Inf(-1)
					for i := range n {
						mx = max(mx, float64(ms[i]))
					}
					var l float64
					for i := range n {
						ls[i] = 0.5 + 2*r.Float64()
						l += ls[i] * math.Exp(float64(ms[i])-mx)
						s := parts[base+i*part:]
						s[0], s[1] = math.Float32bits(ms[i]), math.Float32bits(float32(ls[i]))
						for d := range tc.hd {
							s[2+d] = math.Float32bits(vals[i*tc.hd+d])
						}
					}
					for d := range tc.hd {
						var a float64
						for i := range n {
							a += float64(vals[i*tc.hd+d]) * math.Exp(float64(ms[i])-mx) / l
						}
						merged[(tok*tc.heads+h)*tc.hd+d] = float32(a)
					}
				}
			}
			// tile 1, no window: a token at start+t attends to start+t+1
			// keys, each its own state.
			p := AttnParams{Heads: uint32(tc.heads), KVHeads: 1, Splits: uint32(tc.room), Tile: 1}
			p.OutScaleWord = uint32(words*tokens + 3)
			step := Step{Start: uint32(tc.n - 1), N: tokens}
			for _, wg := range []int{32, RowWG} {
				out := buffer(t, nil, int(p.OutScaleWord)+tokens+1)
				dispatch(t, Key{Family: "attn", Entry: "combine_quant", Int8: true, WG: wg, HD: tc.hd}, step, p, [3]int{tokens, 1, 1},
					buffer(t, u32bytes(parts), 0), out)
				got := bytesU32(read(t, out, int(p.OutScaleWord)+tokens+1))
				for _, i := range []int{words * tokens, int(p.OutScaleWord) - 1, int(p.OutScaleWord) + tokens} {
					if got[i] != poison {
						t.Fatalf("wg %d: word %d, outside the rows and scales, overwritten: %#x", wg, i, got[i])
					}
				}
				vals := unpackI8(got, tokens*tc.heads*tc.hd)
				want := make([]int8, tc.heads*tc.hd)
				for tok := range tokens {
					row := merged[tok*tc.heads*tc.hd:][:tc.heads*tc.hd]
					ws := quant.Quantize(want, row)
					if gs := math.Float32frombits(got[int(p.OutScaleWord)+tok]); math.Abs(float64(gs-ws)) > 1e-5*float64(ws) {
						t.Fatalf("wg %d token %d: scale %v, want %v", wg, tok, gs, ws)
					}
					for i, w := range want {
						// float32 sums against float64: a value at a
						// rounding tie may land one step over.
						if g := vals[tok*tc.heads*tc.hd+i]; g-w > 1 || w-g > 1 {
							t.Fatalf("wg %d token %d value %d: %d, want %d (x=%v)", wg, tok, i, g, w, row[i])
						}
					}
				}
			}
		})
	}
}
