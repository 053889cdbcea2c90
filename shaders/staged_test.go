//go:build !js && !wasip1

package shaders

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestStagedProducts runs the decode products that make their own input
// (gemv's NORM_IN and GATED_IN prologues) against engine/cpu: the input
// row that the first workgroup writes out is checked like prenorm's and
// gated_quant's, the new residual like prenorm's, and the product against
// engine/cpu's MatMul of that very input row: int32 accumulators equal.
// Widths are not multiples of the workgroup, invocations hold up to three
// vectors of the row, rows fill no whole workgroup, and the product spans several workgroups (each repeats the
// prologue).
func TestStagedProducts(t *testing.T) {
	onDevices(t, testStagedProducts, "norm-int8-post-norm", "gated-int8-geglu")
}

func testStagedProducts(t *testing.T) {
	for _, tc := range []struct {
		name            string
		in              string
		dtype           model.DType
		act             model.Activation
		rows, cols, n   int
		add, post, plus bool
		wg, tpr         int
	}{
		{"norm-int8-first-layer", "norm", model.Int8, 0, 67, 16 * 9, 1, false, false, true, 64, 8},
		{"norm-int8-post-norm", "norm", model.Int8, 0, 131, 16 * 23, 2, true, true, true, 256, 8},
		{"norm-int8-residual-tpr64", "norm", model.Int8, 0, 45, 16 * 61, 3, true, false, false, 64, 64}, // a vector per invocation, 3 idle
		{"norm-f32-post-norm", "norm", model.F32, 0, 29, 4 * 37, 2, true, true, false, 64, 4},
		{"norm-f32-wide", "norm", model.F32, 0, 23, 4 * 249, 1, true, true, true, 64, 16}, // 4 quads per invocation but 7
		{"gated-int8-geglu", "gated", model.Int8, model.GeGLUTanh, 67, 16 * 13, 1, false, false, false, 64, 16},
		{"gated-int8-swiglu", "gated", model.Int8, model.SwiGLU, 70, 16 * 37, 4, false, false, false, 256, 32},
		{"gated-f32-geglu", "gated", model.F32, model.GeGLUTanh, 33, 4 * 29, 2, false, false, false, 64, 8},
		{"gated-f32-wide", "gated", model.F32, model.SwiGLU, 19, 4 * 150, 1, false, false, false, 64, 8}, // three vectors per invocation
	} {
		runCase(t, tc.name, func(t *testing.T) {
			if !StageFits(tc.in, tc.cols, tc.wg) {
				t.Fatalf("a row of %d values does not fit the %s prologue at %d invocations", tc.cols, tc.in, tc.wg)
			}
			r := newRand(t)
			int8Mode := tc.dtype == model.Int8
			n, cols := tc.n, tc.cols
			const eps = 1e-6
			// Reference input rows (float) and, for norm, the new residual.
			ref := make([]float32, n*cols)
			var a, b, norms, gu, wantA []float32
			const halfWords, g1, g2 = 5 * 16 * 71, 7, 7 + 16*71 + 3 // residual halves; norm weights at odd words
			if tc.in == "norm" {
				a = make([]float32, 2*halfWords)
				copy(a, randF32(r, n*cols, 3))
				b = randF32(r, n*cols, 2)
				norms = randF32(r, g2+cols, 0.5)
				wantA = append([]float32(nil), a[:n*cols]...)
				for i := 0; i < n; i++ {
					ra := wantA[i*cols : (i+1)*cols]
					if tc.add {
						rb := append([]float32(nil), b[i*cols:(i+1)*cols]...)
						if tc.post {
							cpu.RMSNorm(rb, rb, norms[g1:g1+cols], eps, tc.plus)
						}
						for j := range ra {
							ra[j] += rb[j]
						}
					}
					cpu.RMSNorm(ref[i*cols:(i+1)*cols], ra, norms[g2:g2+cols], eps, tc.plus)
				}
			} else {
				gu = randF32(r, n*2*cols, 3)
				gu[0], gu[1] = 40, -40 // saturated ends
				for i := 0; i < n; i++ {
					row := gu[2*i*cols : 2*(i+1)*cols]
					cpu.GatedAct(ref[i*cols:(i+1)*cols], row[:cols], row[cols:], tc.act)
				}
			}
			m := testmodel.FromF32(tc.dtype, tc.rows, cols, randF32(r, tc.rows*cols, 0.3))
			wdata, wScaleWord := packMat(&m)
			hWords, hScaleWord, hEnd := n*cols, 0, n*cols
			if int8Mode {
				hWords = n * cols / 4
				hScaleWord = hWords + 2 // not aligned on purpose
				hEnd = hScaleWord + n
			}
			hb := buffer(t, nil, hEnd+1)
			out := buffer(t, nil, n*tc.rows)
			key := Key{Family: "gemv", Entry: "gemv", Int8: int8Mode, WG: tc.wg, TPR: tc.tpr, In: tc.in, SiLU: tc.act == model.SwiGLU}
			p := GemvParams{Rows: uint32(tc.rows), Cols: uint32(cols), WScaleWord: uint32(wScaleWord), OutStride: uint32(tc.rows),
				OnePlus: b2u(tc.plus), Eps: eps, Add: b2u(tc.add), PostNorm: b2u(tc.post), AWord: 0, AOutWord: halfWords,
				G1Word: g1, G2Word: g2, HScaleWord: uint32(hScaleWord)}
			rpw := tc.wg / tc.tpr
			grid := [3]int{(tc.rows + rpw - 1) / rpw, 1, n}
			var ab gpu.Buffer
			if tc.in == "norm" {
				ab = buffer(t, f32bytes(a), 0)
				dispatch(t, key, Step{N: uint32(n)}, p, grid, buffer(t, u32bytes(pad16(wdata)), 0), ab, out, hb,
					buffer(t, f32bytes(b), 0), buffer(t, f32bytes(norms), 0))
			} else {
				dispatch(t, key, Step{N: uint32(n)}, p, grid, buffer(t, u32bytes(pad16(wdata)), 0), buffer(t, f32bytes(gu), 0), out, hb)
			}
			if tc.in == "norm" {
				gotA := bytesF32(read(t, ab, 2*halfWords))
				for i := 0; i < n*cols; i++ {
					if gotA[i] != a[i] {
						t.Fatalf("residual read from a[%d] changed: %v, was %v", i, gotA[i], a[i])
					}
				}
				if tc.add {
					closeTo(t, "new residual", gotA[halfWords:halfWords+n*cols], wantA, rel)
				} else if g := math.Float32bits(gotA[halfWords]); g != 0 {
					t.Fatalf("no add, yet the other half was written: %#x", g)
				}
			}
			gotH := bytesU32(read(t, hb, hEnd+1))
			if g := gotH[hEnd]; g != poison {
				t.Fatalf("word after the input rows overwritten: %#x", g)
			}
			// The product of the input row the kernel made.
			act := &cpu.Act{N: n, Cols: cols}
			if int8Mode {
				act.Q, act.Scale = unpackI8(gotH, n*cols), bytesF32(u32bytes(gotH[hScaleWord:hScaleWord+n]))
				for i := 0; i < n; i++ {
					checkQuantised(t, "input", act.Q[i*cols:(i+1)*cols], act.Scale[i], ref[i*cols:(i+1)*cols])
				}
			} else {
				act.X = bytesF32(u32bytes(gotH[:n*cols]))
				closeTo(t, "input", act.X, ref, rel)
			}
			want := make([]float32, n*tc.rows)
			cpu.MatMul(want, &m, act)
			got := bytesF32(read(t, out, n*tc.rows))
			if !int8Mode {
				closeTo(t, "y", got, want, rel)
				return
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("y[%d] = %v, want %v (int32 accumulators differ)", i, got[i], want[i])
				}
			}
		})
	}
}

// TestGroupAttention runs a decode step's attention by KV head
// (attend_group, then combine, and for int8 combine_quant) against
// engine/cpu, with qkv_prep folded in (the raw Q|K|V product row goes in;
// the query heads' QK-norm and RoPE, the token's own K and V quantised
// into their arena slot, every other arena word untouched, and the
// attention over the arena's history and that new key must match) and
// without (prepared query rows and chunk). Local (ring) and global layers,
// producers and consumers (which read the K/V another layer wrote: from
// the arena with the fold, else from the chunk), MQA and GQA, partial
// RoPE, the first position,
// positions past a window of several tiles, and room for fewer partial
// states than tiles (each workgroup then runs several tiles: evenly and
// unevenly), at each workgroup size a group may run with.
func TestGroupAttention(t *testing.T) {
	onDevices(t, testGroupAttention, "local-producer-ring-int8", "global-producer-long-int8", "ring-window-several-tiles-int8",
		"global-runs-uneven-int8", "global-runs-uneven-int8/prepared", "gqa-partial-rope-f32")
}

func testGroupAttention(t *testing.T) {
	type tcase struct {
		name         string
		cfg          *model.Config
		layer, start int
		wg           int // 0: the planned one (GroupWG)
		room         int // partial states per head (0: one per tile)
		bias         bool
	}
	var cases []tcase
	for _, dtype := range []model.DType{model.Int8, model.F32} {
		cai, plain := testmodel.CAIShaped(97, dtype), testmodel.Plain(97, dtype)
		// Local windows of several tiles, wrapped around their ring.
		wide := testmodel.CAIShaped(97, dtype)
		for i := range wide.Layers {
			if wide.Layers[i].Window > 0 {
				wide.Layers[i].Window = 37
			}
		}
		// Half the dimensions rotated (Phi's partial RoPE), GQA.
		partial := testmodel.Plain(97, dtype)
		partial.RotaryDim = 6
		d := dtype.String()
		cases = append(cases,
			tcase{"local-producer-ring-" + d, cai, 0, 21, 0, 0, false},
			tcase{"local-consumer-" + d, cai, 1, 21, 64, 0, false},
			tcase{"global-producer-long-" + d, cai, 5, 150, 0, 0, false},
			tcase{"global-runs-even-" + d, cai, 5, 150, 64, 5, false},
			tcase{"global-runs-uneven-" + d, cai, 5, 150, 0, 4, false},
			tcase{"global-one-run-" + d, cai, 5, 60, 128, 1, false},
			tcase{"global-first-position-" + d, cai, 5, 0, 0, 0, false},
			tcase{"global-consumer-" + d, cai, 11, 77, 0, 3, false},
			tcase{"ring-window-several-tiles-" + d, wide, 0, 100, 0, 0, false},
			tcase{"ring-window-runs-" + d, wide, 2, 90, 64, 2, false},
			tcase{"gqa-" + d, plain, 2, 40, 0, 0, false},
			tcase{"gqa-bias-" + d, plain, 3, 9, 64, 0, true},
			tcase{"gqa-partial-rope-" + d, partial, 0, 33, 0, 2, false},
			tcase{"mqa-bias-" + d, cai, 4, 33, 128, 0, true},
		)
	}
	for _, tc := range cases {
		for _, prep := range []bool{true, false} {
			name := tc.name
			if !prep {
				name += "/prepared"
			}
			runCase(t, name, func(t *testing.T) {
				groupAttentionCase(t, tc.cfg, tc.layer, tc.start, tc.wg, tc.room, tc.bias, prep, false)
			})
		}
	}
}

// TestGroupAttentionWhole runs attend_group's whole-step variant (Key.Out
// "quant": one workgroup takes every tile of the span, then divides by the
// sums and quantises the row of all query heads as combine_quant would)
// against engine/cpu's attention, with qkv_prep folded in and without:
// MQA models (the variant's) of every group size it has, heads of 12
// (three words a row) to 128 values, so that an invocation holds one to
// four quads of the row; local (ring) and global layers, producers and
// consumers, the first position, a window of several tiles, spans of one
// to ten tiles with room for fewer partial states than that (which the
// variant ignores: a workgroup past the first does nothing), at each
// workgroup size the group fits. The scale and every int8 value of the
// row, and the words around them (poisoned), are checked.
func TestGroupAttentionWhole(t *testing.T) {
	onDevices(t, testGroupAttentionWhole, "global-long-room3-g4", "global-long-room3-g4/prepared", "local-g8-hd128-wg64",
		"global-g3-hd12")
}

func testGroupAttentionWhole(t *testing.T) {
	// mqa is CAIShaped (int8) with g query heads of hd values on its one
	// KV head, and local windows of window positions.
	mqa := func(g, hd, window int) *model.Config {
		c := testmodel.CAIShaped(97, model.Int8)
		c.Heads, c.HeadDim = g, hd
		for i := range c.Layers {
			if c.Layers[i].Window > 0 {
				c.Layers[i].Window = window
			}
		}
		return c
	}
	// Each case with qkv_prep folded in or, /prepared, without: each
	// variant is a compile of many seconds on lavapipe, so not both.
	for _, tc := range []struct {
		name         string
		cfg          *model.Config
		layer, start int
		wg           int // 0: the planned one (GroupWG)
		room         int // partial states per head the parameters say (0: one per tile)
		bias         bool
	}{
		{"local-ring-g4", mqa(4, 16, 8), 0, 21, 0, 0, false},
		{"local-ring-g4/prepared", mqa(4, 16, 8), 0, 21, 0, 0, false},
		{"local-consumer-g4-wg128/prepared", mqa(4, 16, 8), 1, 21, 128, 0, false},
		{"global-long-room3-g4", mqa(4, 16, 8), 5, 150, 0, 3, false},
		{"global-long-room3-g4/prepared", mqa(4, 16, 8), 5, 150, 0, 3, false},
		{"global-first-position-g4-wg64", mqa(4, 16, 8), 5, 0, 64, 0, false},
		{"global-consumer-g4-wg256", mqa(4, 16, 8), 11, 77, 256, 2, false},
		{"ring-window-several-tiles-g4/prepared", mqa(4, 16, 37), 0, 100, 0, 0, false},
		{"global-g1-wg64", mqa(1, 16, 8), 5, 40, 64, 0, false},
		{"global-g2-hd32-wg256/prepared", mqa(2, 32, 8), 5, 17, 256, 1, false},
		{"global-g3-hd12", mqa(3, 12, 8), 5, 33, 0, 0, false},
		{"local-g6-bias", mqa(6, 16, 20), 4, 33, 0, 0, true},
		{"local-g7-hd12-wg64/prepared", mqa(7, 12, 8), 2, 50, 64, 0, false},
		{"local-g8-hd128-wg64", mqa(8, 128, 24), 0, 30, 64, 0, false},
		{"global-g8-hd128/prepared", mqa(8, 128, 8), 5, 70, 0, 2, false},
	} {
		prep := !strings.HasSuffix(tc.name, "/prepared")
		runCase(t, tc.name, func(t *testing.T) {
			groupAttentionCase(t, tc.cfg, tc.layer, tc.start, tc.wg, tc.room, tc.bias, prep, true)
		})
	}
}

// groupAttentionCase runs attend_group (whole: its whole-step variant)
// on layer's attention at position start of c against engine/cpu; see
// TestGroupAttention and TestGroupAttentionWhole.
func groupAttentionCase(t *testing.T, c *model.Config, layer, start, wg, room int, bias, prep, whole bool) {
	r := newRand(t)
	m, arena, kvb, p := attnArena(t, r, c, layer, start)
	reg := arena.Region(layer)
	int8Mode := c.DType == model.Int8
	hd, kvh, qd, kvd := c.HeadDim, c.KVHeads, c.QDim(), c.KVDim()
	producer := c.Producer(layer)
	eps := float32(c.NormEps)
	// The raw product row: query heads, then (producers) K and V heads.
	rowLen := qd
	if producer {
		rowLen += 2 * kvd
	}
	raw := randF32(r, rowLen, 1)
	// Norm weights at word offsets 3 (query) and 3+hd+1 (K) of g, the
	// bias (one value per product row) after them.
	qn, kn, bw := 3, 3+hd+1, 2*hd+6
	g := randF32(r, bw+rowLen, 0.3)
	qkv := append([]float32(nil), raw...)
	if bias {
		for i := range qkv {
			qkv[i] += g[bw+i]
		}
	}
	const chunkSize = 3
	kind := int(c.Layers[layer].Kind)
	table := make([]float32, 2*chunkSize*hd)
	for k := 0; k < 2; k++ {
		model.RopeCosSin(table[k*chunkSize*hd:][:hd], c.RopeFreqs(model.AttnKind(k)), start)
	}
	cs := table[kind*chunkSize*hd:][:c.Rotary()]
	prepRows := func(row []float32, heads int, w []float32) {
		if c.QKNorm {
			for h := 0; h < heads; h++ {
				cpu.RMSNorm(row[h*hd:(h+1)*hd], row[h*hd:(h+1)*hd], w, eps, c.NormOnePlus)
			}
		}
		cpu.Rope(row, heads, hd, cs)
	}
	q := append([]float32(nil), qkv[:qd]...)
	prepRows(q, c.Heads, g[qn:qn+hd])
	// The chunk's K/V: the token's own (producers), or another layer's.
	var kf, vf []float32
	if producer {
		kf = append([]float32(nil), qkv[qd:qd+kvd]...)
		prepRows(kf, kvh, g[kn:kn+hd])
		vf = append([]float32(nil), qkv[qd+kvd:]...)
	} else {
		kf, vf = randF32(r, kvd, 1), randF32(r, kvd, 1)
	}
	rowWords := hd
	if int8Mode {
		rowWords = hd / 4
	}
	ckw, cvw := 1, 1+kvh*rowWords+2
	cksw, cvsw := cvw+kvh*rowWords+1, cvw+kvh*rowWords+1+kvh+3
	chunk := make([]uint32, cvsw+kvh+1)
	for i := range chunk {
		chunk[i] = poison
	}
	// Without the fold, qkv_prep has filled the chunk already.
	filled := !producer || !prep
	var kq, vq []int8
	var ks, vs []float32
	if int8Mode {
		kq, vq, ks, vs = make([]int8, kvd), make([]int8, kvd), make([]float32, kvh), make([]float32, kvh)
		for i := 0; i < kvh; i++ {
			ks[i] = quant.Quantize(kq[i*hd:(i+1)*hd], kf[i*hd:(i+1)*hd])
			vs[i] = quant.Quantize(vq[i*hd:(i+1)*hd], vf[i*hd:(i+1)*hd])
		}
		if filled {
			copy(chunk[ckw:], packI8(kq))
			copy(chunk[cvw:], packI8(vq))
			copy(chunk[cksw:], bytesU32(f32bytes(ks)))
			copy(chunk[cvsw:], bytesU32(f32bytes(vs)))
		}
	} else if filled {
		copy(chunk[ckw:], bytesU32(f32bytes(kf)))
		copy(chunk[cvw:], bytesU32(f32bytes(vf)))
	}
	want := make([]float32, qd)
	if int8Mode {
		m.AttendChunk(want, q, arena, layer, start, 1, nil, nil, kq, vq, ks, vs)
	} else {
		m.AttendChunk(want, q, arena, layer, start, 1, kf, vf, nil, nil, nil, nil)
	}
	// With the fold, the token's K/V live in its arena slot: a consumer's
	// were written there by its producer; a producer writes its own, and
	// the slot is poisoned first. Its old contents (a ring's slot held a
	// position the window no longer sees) are not attended to.
	before := append([]byte(nil), arena.Buf...)
	if prep {
		for h := 0; h < kvh; h++ {
			for i, row := range []kv.Row{arena.K(reg, start, h), arena.V(reg, start, h)} {
				src := [][]float32{kf, vf}[i][h*hd : (h+1)*hd]
				switch {
				case producer:
					poisonRow(row)
				case int8Mode:
					*row.Scale = quant.Quantize(row.I8, src)
				default:
					copy(row.F32, src)
				}
			}
		}
		kvb = regionBuffer(t, arena, layer)
		before = append(before[:0], arena.Buf...)
	}
	key := Key{Family: "attn", Entry: "attend_group", Int8: int8Mode, HD: hd, Group: c.Heads / kvh}
	if prep {
		key.In = "qkv"
	}
	if whole {
		if !int8Mode || kvh != 1 {
			t.Fatalf("the whole-step variant is for int8 models of one KV head, not %s with %d", c.DType, kvh)
		}
		key.Out = "quant"
	}
	key.WG = wg
	if wg == 0 {
		key.WG = GroupWG(key)
	}
	if b := GroupBytes(key); key.WG == 0 || b > WorkgroupBytes {
		t.Fatalf("the test's group takes %d bytes of workgroup memory at %d invocations", b, key.WG)
	}
	kt := AttnTile(key)
	keys := start + 1
	if w := c.Layers[layer].Window; w > 0 {
		keys = min(keys, w)
	}
	tiles := (keys + kt - 1) / kt
	if room == 0 {
		room = tiles
	}
	p.CKWord, p.CVWord, p.CKSWord, p.CVSWord = uint32(ckw), uint32(cvw), uint32(cksw), uint32(cvsw)
	p.Splits, p.Tile = uint32(room)+1, uint32(kt) // room for one more than used
	if room < tiles {
		p.Splits = uint32(room) // the runs' count is bound by the room
	}
	p.Norm, p.OnePlus, p.Eps, p.Table = b2u(c.QKNorm), b2u(c.NormOnePlus), eps, uint32(kind*chunkSize*hd)
	p.QNorm, p.KNorm, p.PrepKV = uint32(qn), uint32(kn), b2u(producer)
	p.Bias, p.BiasWord, p.RotHalf = b2u(bias), uint32(bw), uint32(c.Rotary()/2)
	step := Step{Start: uint32(start), N: 1}
	ckb := buffer(t, u32bytes(chunk), 0)
	parts := buffer(t, nil, c.Heads*int(p.Splits)*(hd+2))
	// One workgroup more than tiles: those past the runs do nothing.
	grid := [3]int{tiles + 1, kvh, 1}
	o := parts
	if whole {
		// One workgroup, and one more that must do nothing; the int8 row
		// and its scale where combine_quant would write them.
		grid = [3]int{2, 1, 1}
		p.OutScaleWord = uint32(qd/4 + 3) // not aligned on purpose
		o = buffer(t, nil, int(p.OutScaleWord)+3)
	}
	if prep {
		dispatch(t, key, step, p, grid, buffer(t, f32bytes(raw), 0), o, kvb,
			buffer(t, f32bytes(g), 0), buffer(t, f32bytes(table), 0))
	} else {
		dispatch(t, key, step, p, grid, buffer(t, f32bytes(q), 0), o, kvb, ckb)
	}
	if whole {
		checkAttnQuant(t, o, int(p.OutScaleWord), want)
	} else {
		out := buffer(t, nil, qd)
		dispatch(t, Key{Family: "attn", Entry: "combine", Int8: int8Mode, WG: 32, HD: hd}, step, p, [3]int{c.Heads, 1, 1}, parts, out)
		merged := bytesF32(read(t, out, qd))
		closeTo(t, "attention", merged, want, rel)
		if int8Mode {
			checkCombineQuant(t, p, step, parts, merged, qd)
		}
	}
	if prep {
		checkArenaSlot(t, arena, before, kvb, layer, start, producer, kf, vf)
		return
	}
	got := bytesU32(read(t, ckb, len(chunk)))
	if filled {
		for i, w := range chunk {
			if got[i] != w {
				t.Fatalf("chunk word %d written: %#x, was %#x", i, got[i], w)
			}
		}
		return
	}
	for h := 0; h < kvh; h++ {
		for _, a := range []struct {
			what         string
			vals, scales int
			ref          []float32
		}{{"K", ckw, cksw, kf}, {"V", cvw, cvsw, vf}} {
			words := got[a.vals+h*rowWords : a.vals+(h+1)*rowWords]
			ref := a.ref[h*hd : (h+1)*hd]
			if int8Mode {
				checkQuantised(t, a.what, unpackI8(words, hd), math.Float32frombits(got[a.scales+h]), ref)
			} else {
				closeTo(t, a.what, bytesF32(u32bytes(words)), ref, rel)
			}
		}
	}
}

// checkAttnQuant checks the int8 attention row that attend_group's
// whole-step variant wrote into o (its words, then poison up to its scale
// at scaleWord, then poison) against engine/cpu's attention want: the
// scale within rel of package quant's for want, and every value within
// half a step of x/scale, give or take attention's own tolerance (rel of
// the row's largest |x|, which is 127 steps).
func checkAttnQuant(t *testing.T, o gpu.Buffer, scaleWord int, want []float32) {
	t.Helper()
	words := len(want) / 4
	got := bytesU32(read(t, o, scaleWord+3))
	for i := words; i < scaleWord+3; i++ {
		if i != scaleWord && got[i] != poison {
			t.Fatalf("word %d past the row (%d words; scale at %d) overwritten: %#x", i, words, scaleWord, got[i])
		}
	}
	ws := quant.Quantize(make([]int8, len(want)), want)
	gs := math.Float32frombits(got[scaleWord])
	if !(math.Abs(float64(gs-ws)) <= rel*float64(ws)) {
		t.Fatalf("scale %v, want %v", gs, ws)
	}
	for i, v := range unpackI8(got, len(want)) {
		x := float64(want[i] / ws)
		if d := math.Abs(float64(v) - x); !(d <= 0.5+127*rel) {
			t.Fatalf("value %d: %d, want %.4f (x = %v)", i, v, x, want[i])
		}
	}
}

// poisonRow fills an arena row with the poison word.
func poisonRow(row kv.Row) {
	if row.I8 != nil {
		for i := range row.I8 {
			row.I8[i] = -1 // the poison word's bytes
		}
		*row.Scale = math.Float32frombits(poison)
		return
	}
	for i := range row.F32 {
		row.F32[i] = math.Float32frombits(poison)
	}
}

// checkArenaSlot reads layer's arena region back from kvb after a decode
// step at position start with qkv_prep folded in: a producer's K and V
// rows at start (of every KV head) must be kf and vf (quantised as
// engine/cpu does), and every other byte of the region, a consumer's
// whole region, must be what it was (before, the arena's bytes).
func checkArenaSlot(t *testing.T, arena *kv.Arena, before []byte, kvb gpu.Buffer, layer, start int, producer bool, kf, vf []float32) {
	t.Helper()
	reg := arena.Region(layer)
	lo, hi := regionBounds(arena, layer)
	got := read(t, kvb, int(hi-lo)/4)
	hd := arena.HeadDim
	written := map[int64]bool{}
	mark := func(off, n int64) {
		for b := off; b < off+n; b++ {
			written[b] = true
		}
	}
	if producer {
		for h := 0; h < arena.KVHeads; h++ {
			idx := int64(reg.Slot(start))*int64(arena.KVHeads) + int64(h)
			for _, a := range []struct {
				what         string
				vals, scales int64
				ref          []float32
			}{{"K", reg.K, reg.KScale, kf}, {"V", reg.V, reg.VScale, vf}} {
				ref := a.ref[h*hd : (h+1)*hd]
				off := a.vals + idx*arena.RowBytes
				mark(off, arena.RowBytes)
				rb := got[off-lo : off-lo+arena.RowBytes]
				if arena.DType == model.Int8 {
					so := a.scales + idx*4
					mark(so, 4)
					q := make([]int8, hd)
					for j := range q {
						q[j] = int8(rb[j])
					}
					checkQuantised(t, a.what, q, math.Float32frombits(binary.LittleEndian.Uint32(got[so-lo:])), ref)
				} else {
					closeTo(t, a.what, bytesF32(rb), ref, rel)
				}
			}
		}
	}
	for b := lo; b < hi; b++ {
		if !written[b] && got[b-lo] != before[b] {
			t.Fatalf("arena byte %d of layer %d's region changed: %#x, was %#x", b-lo, layer, got[b-lo], before[b])
		}
	}
}
