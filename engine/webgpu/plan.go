package webgpu

import (
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// plan lays out the dispatches of one step: engine/cpu's Forward, step for
// step, as kernels. A decode step (up to gemvMaxTokens tokens) of a Gemma 3
// layer takes 9 dispatches: the pre-norm (residual add, RMSNorm,
// quantisation: prenorm.wgsl), the Q|K|V product, attention over tiles of
// keys by KV head with qkv_prep's QK-norm, RoPE and K/V quantisation
// folded in (attend_group; Options.Attention can give qkv_prep its own
// dispatch, or attention a workgroup per query head), the merge of its
// partial states fused with the quantisation of its output, the output
// product, the next pre-norm, gate|up, the gated activation with its
// quantisation, and down; 8 by default, where gate|up writes the gated
// activation itself (its epilogue; in int8 mode down's prologue quantises
// it), and 7 where the layer's span of keys is at most Options.AttnWhole
// (opt-in; int8, one KV head: Gemma 3 1B and 270M), whose attention then
// runs in one workgroup that quantises its output itself, with no merge.
// Options.Fuse chooses the folds, down to 6 (5 with the whole-step
// attention): the pre-norms into the
// products that follow (their prologues), the gated activation into
// down's prologue or gate|up's epilogue. Longer steps (the tiled product)
// give those prologues, the epilogue and qkv_prep dispatches of their own.
// Products and attention have a decode and a prefill form; the grids pick
// one per step.
func (s *Sequence) plan() error {
	m, c := s.m, s.m.cfg
	int8Mode := c.DType == model.Int8
	hd, qd := c.HeadDim, c.QDim()
	eps := float32(c.NormEps)
	tokens := func(n, _, _ int) (int, int, int) { return n, 1, 1 }
	// unlessStaged runs a prologue's own dispatch only on the steps whose
	// product cannot do it (the tiled product's).
	unlessStaged := func(staged bool) gridFunc {
		if !staged {
			return tokens
		}
		return func(n, _, _ int) (int, int, int) {
			if n <= gemvMaxTokens {
				return 0, 0, 0
			}
			return n, 1, 1
		}
	}
	norm := func(off int64, cols int) gpu.Binding { return at(m.norms, max(off, 0), int64(cols)*4) }

	// quantize plans the int8 form of an activation buffer (no-op in f32 mode).
	quantize := func(src, dst gpu.Buffer, cols int) {
		if !int8Mode {
			return
		}
		s.add("quant", "quantize", shaders.QuantParams{Cols: uint32(cols), RowsPerToken: 1, ScaleWord: uint32(s.qScale[dst])},
			tokens, whole(src), whole(dst))
	}
	// input is the form of an activation that products read.
	input := func(x, xq gpu.Buffer) gpu.Buffer {
		if int8Mode {
			return xq
		}
		return x
	}
	// The residual lives in one half of x and moves to the other at every
	// add: a decode product's prologue reads it in every workgroup while
	// its first workgroup writes the sum.
	half := int64(s.C * c.Hidden) // words
	cur := int64(0)
	// prenorm plans x += post-norm(out) (when add) and h = norm(x),
	// quantised in int8 mode, for the product w that reads h: as w's
	// prologue where it can take it (the returned stagedIn), else as a
	// dispatch of its own.
	prenorm := func(add bool, post, weight int64, w *matrix) *stagedIn {
		h := input(s.h, s.hq)
		src, dst := cur, cur
		if add {
			dst = 1 - cur
		}
		cur = dst
		in := &stagedIn{kind: "norm", x: s.x, h: h, params: shaders.GemvParams{OnePlus: b2u(c.NormOnePlus), Eps: eps,
			Add: b2u(add), PostNorm: b2u(post >= 0), AWord: uint32(src * half), AOutWord: uint32(dst * half),
			G1Word: uint32(max(post, 0) / 4), G2Word: uint32(weight / 4), HScaleWord: uint32(s.qScale[h])}}
		if w == nil || !s.canStage(w, "norm") {
			in = nil
		}
		s.addKey(s.rowKey("prenorm", "prenorm", c.Hidden), shaders.PrenormParams{Cols: uint32(c.Hidden), OnePlus: b2u(c.NormOnePlus), Eps: eps,
			Add: b2u(add), PostNorm: b2u(post >= 0), ScaleWord: uint32(s.qScale[h]), AWord: uint32(src * half), AOutWord: uint32(dst * half)},
			unlessStaged(in != nil), whole(s.x), norm(post, c.Hidden), whole(s.out), norm(weight, c.Hidden), whole(h))
		return in
	}
	// 1. Embedding gather, scaled: one dispatch per part of the matrix.
	for _, p := range m.embed.parts {
		s.add("embed", "embed", shaders.EmbedParams{Cols: uint32(c.Hidden), RowLo: uint32(p.rowLo), Rows: uint32(p.rows),
			ScaleWord: uint32(p.scaleWord), Scale: c.Embedding()}, tokens, whole(s.ids), whole(p.buf), at(s.x, 0, half*4))
	}
	post := int64(-1) // the previous block's post-norm
	s.directKV = s.groupPrep()
	for l := range c.Layers {
		lw, kind := &m.layers[l], c.Layers[l].Kind
		ri := s.lay.OfLayer[l]
		// 2. The previous block's residual, pre-norm, projections, QK-norm, RoPE.
		in := prenorm(l > 0, post, lw.attnNorm, lw.wq)
		// Q|K|V in one product, then QK-norm and RoPE of the query and K
		// heads, and the K/V quantised per (token, KV head) into the chunk
		// region, in one dispatch (a decode step's attention does this
		// itself where its group fits).
		s.project(s.qkv, lw.wq, input(s.h, s.hq), false, 0, in, nil)
		cr := s.chunkAt[ri]
		rowHeads, kvh := c.Heads, 0
		if c.Producer(l) {
			rowHeads, kvh = c.Heads+2*c.KVHeads, c.KVHeads
		}
		qp := shaders.QKVParams{Heads: uint32(c.Heads), KVHeads: uint32(kvh), HeadDim: uint32(hd), Stride: uint32(rowHeads * hd),
			Norm: b2u(lw.qNorm >= 0), OnePlus: b2u(c.NormOnePlus), Eps: eps, Table: uint32(int(kind) * s.C * hd),
			QNorm: uint32(max(lw.qNorm, 0) / 4), KNorm: uint32(max(lw.kNorm, 0) / 4),
			VWord: uint32((cr.v - cr.k) / 4), Bias: b2u(lw.bias >= 0), BiasWord: uint32(max(lw.bias, 0) / 4),
			RotHalf: uint32(c.Rotary() / 2)}
		if int8Mode {
			qp.KSWord, qp.VSWord = uint32((cr.ks-cr.k)/4), uint32((cr.vs-cr.k)/4)
		}
		folded := s.directKV
		s.add("rope", "qkv_prep", qp, func(n, _, _ int) (int, int, int) {
			if folded && n == 1 {
				return 0, 0, 0
			}
			return rowHeads, n, 1
		}, whole(s.qkv), whole(m.norms), whole(s.rope), whole(s.q), at(s.chunk, cr.k, cr.end-cr.k))
		s.attention(l, qp)
		// 3. Output projection; its residual is the next prenorm's. A
		// decode step's combine_quant (or attend_group's whole-step
		// variant) has quantised the attention output already.
		if s.fusedCombine() {
			s.add("quant", "quantize", shaders.QuantParams{Cols: uint32(qd), RowsPerToken: 1, ScaleWord: uint32(s.qScale[s.attq])},
				func(n, _, _ int) (int, int, int) {
					if n == 1 {
						return 0, 0, 0
					}
					return n, 1, 1
				}, whole(s.att), whole(s.attq))
		} else {
			quantize(s.att, s.attq, qd)
		}
		s.project(s.out, lw.wo, input(s.att, s.attq), false, 0, nil, nil)
		// 4. Gated FFN: residual and pre-norm, gate|up, activation, down.
		// With the epilogue, a decode step's gate|up writes the gated
		// activation (h, float32) into gate and, in int8 mode, the max |h|
		// of each token into its word of layer l's in gmax; down's
		// prologue quantises h into gateq by it. gated_quant then runs on
		// prefill steps alone.
		var epi *gatedOut
		normed := lw.gateUp
		if s.gatedEpilogue(lw.gateUp, lw.down) {
			epi = &gatedOut{h: s.gate, maxWord: l * gemvMaxTokens}
			if !s.normEpilogue() {
				normed = nil
			}
		}
		in = prenorm(true, lw.postAttn, lw.ffnNorm, normed)
		s.project(s.gu, lw.gateUp, input(s.h, s.hq), false, 0, in, epi)
		dst := input(s.gate, s.gateq)
		var gated *stagedIn
		switch {
		case s.canStage(lw.down, "gated"):
			gated = &stagedIn{kind: "gated", x: s.gu, h: dst, params: shaders.GemvParams{HScaleWord: uint32(s.qScale[dst])}}
		case epi != nil && int8Mode:
			gated = &stagedIn{kind: "quant", x: s.gate, h: dst, params: shaders.GemvParams{HScaleWord: uint32(s.qScale[dst]), MaxWord: uint32(epi.maxWord)}}
		}
		s.addKey(s.rowKey("act", "gated_quant", c.FFNHidden), shaders.GatedParams{Cols: uint32(c.FFNHidden), ScaleWord: uint32(s.qScale[dst])},
			unlessStaged(gated != nil || epi != nil), whole(s.gu), whole(dst))
		s.project(s.out, lw.down, dst, false, 0, gated, nil)
		post = lw.postFFN
	}
	// 5. The last residual, final norm and logits of the tokens first..,
	// with the soft-cap. The norm keeps its own dispatch: the vocabulary's
	// thousands of workgroups would each repeat it.
	s.inHead = true
	prenorm(true, post, m.finalNorm, nil)
	s.project(s.logits, m.lmHead, input(s.h, s.hq), true, float32(c.FinalSoftcap), nil, nil)
	s.inHead = false
	// 6. Greedy sampling on the GPU: a workgroup per block of logits, then
	// their merge; the id lands where the next step's embedding gather
	// reads it.
	ap := shaders.ArgmaxParams{Cols: uint32(c.Vocab), Block: argmaxBlock}
	parts := (c.Vocab + argmaxBlock - 1) / argmaxBlock
	s.add("sample", "argmax_part", ap, func(int, int, int) (int, int, int) { return parts, 1, 1 },
		whole(s.logits), whole(s.pickParts))
	s.plans[len(s.plans)-1].pick = true
	s.add("sample", "argmax_merge", ap, func(int, int, int) (int, int, int) { return 1, 1, 1 },
		whole(s.pickParts), whole(s.ids))
	s.plans[len(s.plans)-1].pick = true
	return nil
}

// stagedIn is the input a decode product makes in its prologue (see
// shaders.Key.In): its kind, the buffer it reads (the residual
// x, or gate|up), the buffer its first workgroup writes the input into
// (the products' form, as the separate dispatch would have), and the
// prologue's parameters.
type stagedIn struct {
	kind   string
	x, h   gpu.Buffer
	params shaders.GemvParams
}

// gatedOut is where a gate|up decode product with the gated epilogue
// (shaders.Key.Out) writes h = act(gate)*up, and the first of its words
// of max |h| in gmax (int8 mode).
type gatedOut struct {
	h       gpu.Buffer
	maxWord int
}

// gemvKey is the decode product's variant, with the prologue kind in and
// the epilogue kind out ("" for none).
func (s *Sequence) gemvKey(tpr int, in, out string) shaders.Key {
	m := s.m
	int8Mode := m.cfg.DType == model.Int8
	k := shaders.Key{Family: "gemv", Entry: "gemv", Int8: int8Mode, WG: m.opt.Gemv.WG, TPR: tpr, FMA: m.opt.Gemv.FMA && int8Mode, In: in, Out: out}
	k.SiLU = (in == "gated" || out == "gated") && m.cfg.Activation == model.SwiGLU
	return k
}

// vecWidth is how many input values a product's 16-byte vector holds.
func (s *Sequence) vecWidth() int {
	if s.m.cfg.DType == model.Int8 {
		return 16
	}
	return 4
}

// canStage reports whether the decode product of w makes its input in its
// prologue of kind in ("norm", "gated"): Options.Fuse asks for it, the
// product uses the vector kernel, and the row fits the staging and the
// prologue's registers.
func (s *Sequence) canStage(w *matrix, in string) bool {
	f := s.m.opt.Fuse
	if !(in == "norm" && f.Norm || in == "gated" && f.Gated) {
		return false
	}
	return s.stageFits(w, in)
}

// stageFits reports whether the decode product of w can make its input row
// in its prologue: it uses the vector kernel, and the row fits the staging
// and the prologue's registers.
func (s *Sequence) stageFits(w *matrix, in string) bool {
	v := s.vecWidth()
	return w.cols%v == 0 && w.cols/v <= shaders.StagedVecs && shaders.StageFits(in, w.cols, s.m.opt.Gemv.WG)
}

// gatedEpilogue reports whether a decode step's gate|up product (gateUp)
// writes the gated activation itself (Options.Fuse.Epilogue): the gated
// fold into down's prologue is not made, gate|up is one buffer (its gate
// and up rows side by side in one binding) of the vector kernel's width,
// and in int8 mode down's prologue can quantise the activation (its row
// fits the staging: the quant prologue holds no row in registers, so any
// workgroup size takes a 1B model's) and the maxima's words exist.
func (s *Sequence) gatedEpilogue(gateUp, down *matrix) bool {
	if !s.m.opt.Fuse.Epilogue || s.canStage(down, "gated") || len(gateUp.parts) != 1 || gateUp.cols%s.vecWidth() != 0 {
		return false
	}
	return s.m.cfg.DType != model.Int8 || s.gmax != 0 && down.cols%16 == 0 && down.cols/16 <= shaders.StagedVecs
}

// normEpilogue reports whether a gate|up product with the gated epilogue
// also takes its pre-norm as its prologue where Options.Fuse asks for the
// norm fold: int8 products with integer sums (gemv.wgsl has the pair only
// so), which leaves a decode layer 6 dispatches.
func (s *Sequence) normEpilogue() bool {
	return s.m.opt.Fuse.Norm && s.m.cfg.DType == model.Int8 && !s.m.opt.Gemv.FMA
}

// rowKey is the variant of a one-workgroup row kernel (prenorm,
// gated_quant) for rows of cols values: holding the row in registers
// where it fits (shaders.Key.Regs) unless Options.RowReread.
func (s *Sequence) rowKey(family, entry string, cols int) shaders.Key {
	k := s.m.key(family, entry)
	switch {
	case s.m.opt.RowReread:
	case family == "prenorm":
		k.Regs = shaders.RowQuadsFor(cols, k.WG)
	case k.Int8 && shaders.RowFits(cols, k.WG):
		k.Regs = shaders.RowQuads
	}
	return k
}

// project plans y = W x over every part of W, x being the activation in
// the form products read (int8 or float32). fromFirst selects the logits
// tokens; y rows are W's rows apart. Each part gets the decode kernel
// (gemv) for steps of few tokens and the tiled one for longer steps; W of
// a width the vector loads cannot take gets the plain kernel for both.
// With in, the decode kernel makes x itself (its prologue); with out (W
// being gate|up in one part), it writes the gated activation there
// instead of y (its epilogue), and only the tiled kernel writes y.
func (s *Sequence) project(y gpu.Buffer, w *matrix, x gpu.Buffer, fromFirst bool, softcap float32, in *stagedIn, out *gatedOut) {
	m := s.m
	count := func(n, first int) int {
		if fromFirst {
			return n - first
		}
		return n
	}
	vec := s.vecWidth()
	for _, p := range w.parts {
		params := shaders.MatmulParams{Rows: uint32(p.rows), Cols: uint32(w.cols), WScaleWord: uint32(p.scaleWord),
			XScaleWord: uint32(s.qScale[x]), OutRow: uint32(p.rowLo), OutStride: uint32(w.rows), FromFirst: b2u(fromFirst), Softcap: softcap}
		bufs := []gpu.Binding{whole(p.buf), whole(x), whole(y)}
		if w.cols%vec != 0 {
			rowsX, rowsY := grid2(p.rows)
			s.add("matmul", "matmul", params, func(n, first, _ int) (int, int, int) { return rowsX, rowsY, count(n, first) }, bufs...)
			continue
		}
		g := m.opt.Gemv
		minGroups := gemvMinGroups
		if g.Groups > 0 {
			minGroups = g.Groups
		}
		if in != nil && m.opt.Fuse.Groups > 0 {
			minGroups = m.opt.Fuse.Groups
		}
		tpr := gemvTPR(g, p.rows, w.cols/vec, minGroups)
		rpw := g.WG / tpr
		rowsX, rowsY := grid2((p.rows + rpw - 1) / rpw)
		gemvGrid := func(n, first, _ int) (int, int, int) {
			if k := count(n, first); k <= gemvMaxTokens {
				return rowsX, rowsY, k
			}
			return 0, 0, 0
		}
		if out != nil {
			// Half the row slots take gate rows, half up rows: at most WG/2
			// invocations a row, and a workgroup makes half its rows' h.
			tpr = min(tpr, g.WG/2)
			hr := g.WG / tpr / 2
			f := p.rows / 2
			hx, hy := grid2((f + hr - 1) / hr)
			var gp shaders.GemvParams
			sb := []gpu.Binding{whole(p.buf), whole(x), whole(out.h)}
			kind := ""
			if in != nil {
				// The norm prologue too (normEpilogue): its parameters and
				// bindings, the maxima's after them.
				gp, kind = in.params, in.kind
				sb = []gpu.Binding{whole(p.buf), whole(in.x), whole(out.h), whole(in.h), whole(s.out), whole(m.norms)}
			}
			gp.Rows, gp.Cols, gp.WScaleWord, gp.XScaleWord = uint32(f), uint32(w.cols), uint32(p.scaleWord), uint32(s.qScale[x])
			gp.OutStride, gp.MaxWord = uint32(f), uint32(out.maxWord)
			if m.cfg.DType == model.Int8 {
				sb = append(sb, whole(s.gmax))
			}
			s.addKey(s.gemvKey(tpr, kind, "gated"), gp, func(n, first, _ int) (int, int, int) {
				if k := count(n, first); k <= gemvMaxTokens {
					return hx, hy, k
				}
				return 0, 0, 0
			}, sb...)
		} else if in != nil {
			gp := in.params
			gp.Rows, gp.Cols, gp.WScaleWord, gp.XScaleWord = params.Rows, params.Cols, params.WScaleWord, params.XScaleWord
			gp.OutRow, gp.OutStride, gp.FromFirst, gp.Softcap = params.OutRow, params.OutStride, params.FromFirst, params.Softcap
			sb := []gpu.Binding{whole(p.buf), whole(in.x), whole(y), whole(in.h)}
			switch in.kind {
			case "norm":
				sb = append(sb, whole(s.out), whole(m.norms))
			case "quant":
				sb = append(sb, whole(s.gmax))
			}
			s.addKey(s.gemvKey(tpr, in.kind, ""), gp, gemvGrid, sb...)
		} else {
			s.addKey(s.gemvKey(tpr, "", ""), params, gemvGrid, bufs...)
		}
		// The prefill product: the variant tiledFor picks for the step's
		// tokens, so a plan holds each variant the tier has (64x64 tile,
		// 128x128, split with its merge), and each step runs the one its
		// token count chooses.
		rows, cols := p.rows, w.cols
		for _, key := range s.tiledKeys(rows) {
			tile := shaders.TiledTile(key)
			if !key.Split {
				s.addKey(key, params, func(n, first, _ int) (int, int, int) {
					k := count(n, first)
					if c, _ := s.tiledFor(rows, cols, k); k <= gemvMaxTokens || c != key {
						return 0, 0, 0
					}
					return (rows + tile - 1) / tile, (k + tile - 1) / tile, 1
				}, bufs...)
				continue
			}
			split := func(n, first int) (int, bool) {
				k := count(n, first)
				c, slices := s.tiledFor(rows, cols, k)
				return slices, k > gemvMaxTokens && c == key
			}
			s.addKey(key, params, func(n, first, _ int) (int, int, int) {
				slices, ok := split(n, first)
				if !ok {
					return 0, 0, 0
				}
				k := count(n, first)
				return (rows + tile - 1) / tile, (k + tile - 1) / tile, slices
			}, whole(p.buf), whole(x), whole(s.part))
			s.addKey(shaders.Key{Family: "tiled_merge", Entry: "merge", Int8: true, WG: shaders.TiledWG}, params, func(n, first, _ int) (int, int, int) {
				if _, ok := split(n, first); !ok {
					return 0, 0, 0
				}
				return (rows + shaders.TiledWG - 1) / shaders.TiledWG, count(n, first), 1
			}, whole(p.buf), whole(x), whole(y), whole(s.part))
		}
	}
}

// tiledKeys are the prefill product variants a part of W of rows rows may
// run (tiledFor chooses among them by step): the 64x64 tile, the large
// one with Options.Tile where the tier has it, and with Options.Split the
// split one where the tier has it and s.part holds the part's sums.
func (s *Sequence) tiledKeys(rows int) []shaders.Key {
	m := s.m
	int8 := m.cfg.DType == model.Int8
	ks := []shaders.Key{shaders.Tiled(m.tier, int8, 0)}
	if big := shaders.Tiled(m.tier, int8, m.opt.Tile); big != ks[0] {
		ks = append(ks, big)
	}
	if k, ok := s.splitKey(rows); ok {
		ks = append(ks, k)
	}
	return ks
}

// splitKey is the split product's variant for a part of rows rows, and
// whether the plan can run it (Options.Split, a tier that has it, and
// s.part room for the part's sums of a step): the written-out 64x64 tile's
// with Options.Tile 64, the large tile's else.
func (s *Sequence) splitKey(rows int) (shaders.Key, bool) {
	m := s.m
	tile := shaders.TiledBig
	if m.opt.Tile == 64 {
		tile = 64
	}
	k := m.tier.Apply(shaders.Key{Family: "tiled", Entry: "tiled", Int8: m.cfg.DType == model.Int8, WG: shaders.TiledWG, Tile: tile, Split: true})
	return k, m.opt.Split > 0 && k.Split && s.partBytes > 0 && int64(rows)*int64(s.C)*4 <= s.partBytes
}

// tiledFor is the prefill product variant a step of k tokens runs on a
// part of rows rows of cols columns, and its slices of the columns (1 but
// for the split one): shaders.Tiled's choice for Options.Tile, except
// that with Options.Split a product whose large tiles would be fewer than
// shaders.TiledMinGroupsFor takes its split tile (splitKey) in enough
// slices for that many workgroups, each of at least Options.Split passes
// of 32 columns.
func (s *Sequence) tiledFor(rows, cols, k int) (shaders.Key, int) {
	m := s.m
	c := shaders.Tiled(m.tier, m.cfg.DType == model.Int8, m.opt.Tile)
	sk, ok := s.splitKey(rows)
	if !ok || k > 65535 {
		return c, 1
	}
	side, pass := shaders.TiledTile(sk), shaders.TiledPass(sk)
	groups := ((rows + side - 1) / side) * ((k + side - 1) / side)
	passes := (cols/4 + pass - 1) / pass
	least := max(1, m.opt.Split*shaders.TiledPassWords/pass) // passes a slice
	want := shaders.TiledMinGroupsFor(sk)
	slices := min((want+groups-1)/groups, passes/least)
	if groups >= want || slices < 2 {
		return c, 1
	}
	return sk, slices
}

// gemvMinGroups is how many workgroups a decode product should have to
// keep the GPU busy: a matrix of few rows (Q, K, V, the output and down
// projections of a 1B model have 256 to 1152) at 32 rows per workgroup
// would run on a fraction of an H100's 132 multiprocessors.
const gemvMinGroups = 256

// gemvTPR is the invocations per row of a product of rows rows of vecs
// vectors: g's, doubled while the grid has fewer than minGroups
// workgroups, up to the workgroup size and the row's vectors.
func gemvTPR(g Gemv, rows, vecs, minGroups int) int {
	tpr := g.TPR
	for tpr < g.WG && tpr < vecs && (rows*tpr+g.WG-1)/g.WG < minGroups {
		tpr *= 2
	}
	return tpr
}

func grid3(count int) (int, int, int) {
	x, y := grid2(count)
	return x, y, 1
}
