package webgpu

import (
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// plan lays out the dispatches of one step: engine/cpu's Forward, step for
// step, as kernels. Grids are functions of the step's token count n and of
// first, the first token whose logits are computed.
func (s *Sequence) plan() error {
	m, c := s.m, s.m.cfg
	int8Mode := c.DType == model.Int8
	hd, qd := c.HeadDim, c.QDim()
	eps := float32(c.NormEps)
	tokens := func(n, _ int) (int, int, int) { return n, 1, 1 }
	norm := func(off int64, cols int) gpu.Binding { return at(m.norms, off, int64(cols)*4) }

	// quantize plans the int8 form of an activation buffer (no-op in f32 mode).
	quantize := func(src, dst gpu.Buffer, cols int) {
		if !int8Mode {
			return
		}
		s.add("quant", "quantize", shaders.QuantParams{Cols: uint32(cols), RowsPerToken: 1, ScaleWord: uint32(s.qScale[dst])},
			tokens, whole(src), whole(dst))
	}
	// project plans y = W x over every part of W; x is the activation
	// buffer (its int8 twin in int8 mode). fromFirst selects the logits
	// tokens; y rows are outStride floats apart.
	project := func(y gpu.Buffer, w *matrix, x, xq gpu.Buffer, fromFirst bool, softcap float32) {
		in := x
		if int8Mode {
			in = xq
		}
		for _, p := range w.parts {
			rowsX, rowsY := grid2(p.rows)
			grid := func(n, first int) (int, int, int) {
				if fromFirst {
					return rowsX, rowsY, n - first
				}
				return rowsX, rowsY, n
			}
			s.add("matmul", "matmul", shaders.MatmulParams{Rows: uint32(p.rows), Cols: uint32(w.cols), WScaleWord: uint32(p.scaleWord),
				XScaleWord: uint32(s.qScale[xq]), OutRow: uint32(p.rowLo), OutStride: uint32(w.rows), FromFirst: b2u(fromFirst), Softcap: softcap},
				grid, whole(p.buf), whole(in), whole(y))
		}
	}
	rmsnorm := func(dst, src gpu.Buffer, weight int64, cols int) {
		s.add("norm", "rmsnorm", shaders.NormParams{Cols: uint32(cols), OnePlus: b2u(c.NormOnePlus), Eps: eps},
			tokens, whole(src), norm(weight, cols), whole(dst))
	}
	// residual plans x += y, with y normalised by weight first when weight >= 0.
	residual := func(weight int64) {
		w := norm(max(weight, 0), c.Hidden) // bound even when unused: the kernel reads it statically
		s.add("norm", "residual", shaders.NormParams{Cols: uint32(c.Hidden), OnePlus: b2u(c.NormOnePlus), Eps: eps, Norm: b2u(weight >= 0)},
			tokens, whole(s.x), w, whole(s.out))
	}
	// headprep plans QK-norm (when weight >= 0) and RoPE over heads rows per token.
	headprep := func(buf gpu.Buffer, heads int, weight int64, kind model.AttnKind) {
		s.add("rope", "headprep", shaders.RopeParams{Heads: uint32(heads), HeadDim: uint32(hd), Norm: b2u(weight >= 0),
			OnePlus: b2u(c.NormOnePlus), Eps: eps, Table: uint32(int(kind) * s.C * hd)},
			func(n, _ int) (int, int, int) { return heads, n, 1 },
			whole(buf), norm(max(weight, 0), hd), whole(s.rope))
	}

	// 1. Embedding gather, scaled: one dispatch per part of the matrix.
	for _, p := range m.embed.parts {
		s.add("embed", "embed", shaders.EmbedParams{Cols: uint32(c.Hidden), RowLo: uint32(p.rowLo), Rows: uint32(p.rows),
			ScaleWord: uint32(p.scaleWord), Scale: c.Embedding()}, tokens, whole(s.ids), whole(p.buf), whole(s.x))
	}
	for l := range c.Layers {
		lw, kind := &m.layers[l], c.Layers[l].Kind
		ri := s.lay.OfLayer[l]
		// 2. Attention: pre-norm, projections, QK-norm, RoPE.
		rmsnorm(s.h, s.x, lw.attnNorm, c.Hidden)
		quantize(s.h, s.hq, c.Hidden)
		project(s.q, lw.wq, s.h, s.hq, false, 0)
		headprep(s.q, c.Heads, lw.qNorm, kind)
		cr := s.chunkAt[ri]
		if c.Producer(l) {
			project(s.kf, lw.wk, s.h, s.hq, false, 0)
			project(s.vf, lw.wv, s.h, s.hq, false, 0)
			headprep(s.kf, c.KVHeads, lw.kNorm, kind)
			// The chunk's K/V, quantised per (token, KV head) into its chunk region.
			for _, kv := range []struct {
				src        gpu.Buffer
				vals, scal int64
			}{{s.kf, cr.k, cr.ks}, {s.vf, cr.v, cr.vs}} {
				s.add("quant", "quantize", shaders.QuantParams{Cols: uint32(hd), RowsPerToken: uint32(c.KVHeads),
					DstWord: uint32((kv.vals - cr.k) / 4), ScaleWord: uint32((kv.scal - cr.k) / 4)},
					func(n, _ int) (int, int, int) { return grid3(n * c.KVHeads) },
					whole(kv.src), at(s.chunk, cr.k, cr.end-cr.k))
			}
		}
		r := &s.lay.Regions[ri]
		regEnd := r.V + int64(r.Slots*c.KVHeads)*s.lay.RowBytes
		if int8Mode {
			regEnd = r.VScale + int64(r.Slots*c.KVHeads)*4
		}
		word := func(off int64) uint32 { return uint32((off - r.K) / 4) }
		ap := shaders.AttnParams{Heads: uint32(c.Heads), KVHeads: uint32(c.KVHeads), Window: uint32(c.Layers[l].Window),
			Slots: uint32(r.Slots), Ring: b2u(r.Ring), Scale: c.Scale(),
			KWord: 0, VWord: word(r.V), CKWord: 0, CVWord: uint32((cr.v - cr.k) / 4)}
		if int8Mode {
			ap.KSWord, ap.VSWord = word(r.KScale), word(r.VScale)
			ap.CKSWord, ap.CVSWord = uint32((cr.ks-cr.k)/4), uint32((cr.vs-cr.k)/4)
		}
		s.add("attn", "attend", ap, func(n, _ int) (int, int, int) { return c.Heads, n, 1 },
			whole(s.q), whole(s.att), at(s.arena, r.K, regEnd-r.K), at(s.chunk, cr.k, cr.end-cr.k))
		// 3. Output projection, optional post-norm, residual.
		quantize(s.att, s.attq, qd)
		project(s.out, lw.wo, s.att, s.attq, false, 0)
		residual(lw.postAttn)
		// 4. Gated FFN: pre-norm, gate and up, activation, down, optional post-norm, residual.
		rmsnorm(s.h, s.x, lw.ffnNorm, c.Hidden)
		quantize(s.h, s.hq, c.Hidden)
		project(s.gate, lw.gate, s.h, s.hq, false, 0)
		project(s.up, lw.up, s.h, s.hq, false, 0)
		s.add("act", "gated", shaders.ActParams{Cols: uint32(c.FFNHidden)},
			func(n, _ int) (int, int, int) { return grid3((n*c.FFNHidden + m.opt.WG - 1) / m.opt.WG) },
			whole(s.gate), whole(s.up))
		quantize(s.gate, s.gateq, c.FFNHidden)
		project(s.out, lw.down, s.gate, s.gateq, false, 0)
		residual(lw.postFFN)
	}
	// 5. Final norm and logits of the tokens first.., with the soft-cap.
	s.inHead = true
	rmsnorm(s.h, s.x, m.finalNorm, c.Hidden)
	quantize(s.h, s.hq, c.Hidden)
	project(s.logits, m.lmHead, s.h, s.hq, true, float32(c.FinalSoftcap))
	s.inHead = false
	// 6. Greedy sampling on the GPU: the id lands where the next step's
	// embedding gather reads it.
	s.add("sample", "argmax", shaders.ArgmaxParams{Cols: uint32(c.Vocab)}, func(int, int) (int, int, int) { return 1, 1, 1 },
		whole(s.logits), whole(s.ids))
	s.plans[len(s.plans)-1].argmax = true
	return nil
}

func grid3(count int) (int, int, int) {
	x, y := grid2(count)
	return x, y, 1
}
