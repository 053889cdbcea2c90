package webgpu

import (
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// plan lays out the dispatches of one step: engine/cpu's Forward, step for
// step, as kernels, with the residual add, the next pre-norm and its
// quantisation fused into one dispatch (prenorm), gate and up computed by
// one product and their activation fused with its quantisation. Products
// and attention have a decode and a prefill form; the grids pick one per
// step.
func (s *Sequence) plan() error {
	m, c := s.m, s.m.cfg
	int8Mode := c.DType == model.Int8
	hd, qd := c.HeadDim, c.QDim()
	eps := float32(c.NormEps)
	tokens := func(n, _, _ int) (int, int, int) { return n, 1, 1 }
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
	// prenorm plans x += post-norm(out) (when add) and h = norm(x),
	// quantised in int8 mode.
	prenorm := func(add bool, post, weight int64) {
		h := input(s.h, s.hq)
		s.add("prenorm", "prenorm", shaders.PrenormParams{Cols: uint32(c.Hidden), OnePlus: b2u(c.NormOnePlus), Eps: eps,
			Add: b2u(add), PostNorm: b2u(post >= 0), ScaleWord: uint32(s.qScale[h])},
			tokens, whole(s.x), norm(post, c.Hidden), whole(s.out), norm(weight, c.Hidden), whole(h))
	}
	// headprep plans QK-norm (when weight >= 0) and RoPE over heads rows per token.
	headprep := func(buf gpu.Buffer, heads int, weight int64, kind model.AttnKind) {
		s.add("rope", "headprep", shaders.RopeParams{Heads: uint32(heads), HeadDim: uint32(hd), Norm: b2u(weight >= 0),
			OnePlus: b2u(c.NormOnePlus), Eps: eps, Table: uint32(int(kind) * s.C * hd)},
			func(n, _, _ int) (int, int, int) { return heads, n, 1 },
			whole(buf), norm(weight, hd), whole(s.rope))
	}

	// 1. Embedding gather, scaled: one dispatch per part of the matrix.
	for _, p := range m.embed.parts {
		s.add("embed", "embed", shaders.EmbedParams{Cols: uint32(c.Hidden), RowLo: uint32(p.rowLo), Rows: uint32(p.rows),
			ScaleWord: uint32(p.scaleWord), Scale: c.Embedding()}, tokens, whole(s.ids), whole(p.buf), whole(s.x))
	}
	post := int64(-1) // the previous block's post-norm
	for l := range c.Layers {
		lw, kind := &m.layers[l], c.Layers[l].Kind
		ri := s.lay.OfLayer[l]
		// 2. The previous block's residual, pre-norm, projections, QK-norm, RoPE.
		prenorm(l > 0, post, lw.attnNorm)
		s.project(s.q, lw.wq, input(s.h, s.hq), false, 0)
		headprep(s.q, c.Heads, lw.qNorm, kind)
		cr := s.chunkAt[ri]
		if c.Producer(l) {
			s.project(s.kf, lw.wk, input(s.h, s.hq), false, 0)
			s.project(s.vf, lw.wv, input(s.h, s.hq), false, 0)
			headprep(s.kf, c.KVHeads, lw.kNorm, kind)
			// The chunk's K/V, quantised per (token, KV head) into its chunk region.
			for _, kv := range []struct {
				src        gpu.Buffer
				vals, scal int64
			}{{s.kf, cr.k, cr.ks}, {s.vf, cr.v, cr.vs}} {
				s.add("quant", "quantize", shaders.QuantParams{Cols: uint32(hd), RowsPerToken: uint32(c.KVHeads),
					DstWord: uint32((kv.vals - cr.k) / 4), ScaleWord: uint32((kv.scal - cr.k) / 4)},
					func(n, _, _ int) (int, int, int) { return grid3(n * c.KVHeads) },
					whole(kv.src), at(s.chunk, cr.k, cr.end-cr.k))
			}
		}
		s.attention(l)
		// 3. Output projection; its residual is the next prenorm's.
		quantize(s.att, s.attq, qd)
		s.project(s.out, lw.wo, input(s.att, s.attq), false, 0)
		// 4. Gated FFN: residual and pre-norm, gate|up, activation, down.
		prenorm(true, lw.postAttn, lw.ffnNorm)
		s.project(s.gu, lw.gateUp, input(s.h, s.hq), false, 0)
		dst := input(s.gate, s.gateq)
		s.add("act", "gated_quant", shaders.GatedParams{Cols: uint32(c.FFNHidden), ScaleWord: uint32(s.qScale[dst])},
			tokens, whole(s.gu), whole(dst))
		s.project(s.out, lw.down, input(s.gate, s.gateq), false, 0)
		post = lw.postFFN
	}
	// 5. The last residual, final norm and logits of the tokens first..,
	// with the soft-cap.
	s.inHead = true
	prenorm(true, post, m.finalNorm)
	s.project(s.logits, m.lmHead, input(s.h, s.hq), true, float32(c.FinalSoftcap))
	s.inHead = false
	// 6. Greedy sampling on the GPU: the id lands where the next step's
	// embedding gather reads it.
	s.add("sample", "argmax", shaders.ArgmaxParams{Cols: uint32(c.Vocab)}, func(int, int, int) (int, int, int) { return 1, 1, 1 },
		whole(s.logits), whole(s.ids))
	s.plans[len(s.plans)-1].argmax = true
	return nil
}

// project plans y = W x over every part of W, x being the activation in
// the form products read (int8 or float32). fromFirst selects the logits
// tokens; y rows are W's rows apart. Each part gets the decode kernel
// (gemv) for steps of few tokens and the tiled one for longer steps; W of
// a width the vector loads cannot take gets the plain kernel for both.
func (s *Sequence) project(y gpu.Buffer, w *matrix, x gpu.Buffer, fromFirst bool, softcap float32) {
	m := s.m
	int8Mode := m.cfg.DType == model.Int8
	count := func(n, first int) int {
		if fromFirst {
			return n - first
		}
		return n
	}
	vec := 4
	if int8Mode {
		vec = 16
	}
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
		rpw := g.WG / g.TPR
		rowsX, rowsY := grid2((p.rows + rpw - 1) / rpw)
		s.addKey(shaders.Key{Family: "gemv", Entry: "gemv", Int8: int8Mode, WG: g.WG, TPR: g.TPR, FMA: g.FMA && int8Mode}, params,
			func(n, first, _ int) (int, int, int) {
				if k := count(n, first); k <= gemvMaxTokens {
					return rowsX, rowsY, k
				}
				return 0, 0, 0
			}, bufs...)
		tilesX := (p.rows + 63) / 64
		s.addKey(shaders.Key{Family: "tiled", Entry: "tiled", Int8: int8Mode, WG: 256}, params,
			func(n, first, _ int) (int, int, int) {
				if k := count(n, first); k > gemvMaxTokens {
					return tilesX, (k + 63) / 64, 1
				}
				return 0, 0, 0
			}, bufs...)
	}
}

// attention plans layer l's attention: for a step of one token,
// flash-decoding (a workgroup per tile of keys, then their merge); for
// longer steps, a workgroup per (head, token).
func (s *Sequence) attention(l int) {
	m, c := s.m, s.m.cfg
	int8Mode := c.DType == model.Int8
	ri := s.lay.OfLayer[l]
	cr := s.chunkAt[ri]
	r := &s.lay.Regions[ri]
	regEnd := r.V + int64(r.Slots*c.KVHeads)*s.lay.RowBytes
	if int8Mode {
		regEnd = r.VScale + int64(r.Slots*c.KVHeads)*4
	}
	word := func(off int64) uint32 { return uint32((off - r.K) / 4) }
	window := c.Layers[l].Window
	ap := shaders.AttnParams{Heads: uint32(c.Heads), KVHeads: uint32(c.KVHeads), Window: uint32(window),
		Slots: uint32(r.Slots), Ring: b2u(r.Ring), Scale: c.Scale(), Splits: uint32(s.maxSplits()),
		KWord: 0, VWord: word(r.V), CKWord: 0, CVWord: uint32((cr.v - cr.k) / 4)}
	if int8Mode {
		ap.KSWord, ap.VSWord = word(r.KScale), word(r.VScale)
		ap.CKSWord, ap.CVSWord = uint32((cr.ks-cr.k)/4), uint32((cr.vs-cr.k)/4)
	}
	kv, chunk := at(s.arena, r.K, regEnd-r.K), at(s.chunk, cr.k, cr.end-cr.k)
	s.add("attn", "attend", ap, func(n, _, _ int) (int, int, int) {
		if n == 1 {
			return 0, 0, 0
		}
		return c.Heads, n, 1
	}, whole(s.q), whole(s.att), kv, chunk)
	wg := m.opt.WG
	s.add("attn", "attend_split", ap, func(n, _, start int) (int, int, int) {
		if n != 1 {
			return 0, 0, 0
		}
		keys := start + 1
		if window > 0 {
			keys = min(keys, window)
		}
		return (keys + wg - 1) / wg, c.Heads, 1
	}, whole(s.q), whole(s.parts), kv, chunk)
	s.add("attn", "combine", ap, func(n, _, _ int) (int, int, int) {
		if n != 1 {
			return 0, 0, 0
		}
		return c.Heads, 1, 1
	}, whole(s.parts), whole(s.att))
}

// maxSplits is the most key tiles a decode step's attention has: a
// window's worth on local layers, the whole context on global ones.
func (s *Sequence) maxSplits() int {
	keys := 0
	for _, l := range s.m.cfg.Layers {
		k := s.lay.Context
		if l.Window > 0 {
			k = min(k, l.Window)
		}
		keys = max(keys, k)
	}
	return (keys + s.m.opt.WG - 1) / s.m.opt.WG
}

func grid3(count int) (int, int, int) {
	x, y := grid2(count)
	return x, y, 1
}
