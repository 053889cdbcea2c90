// Package cpu is wick's reference backend: the forward pass in pure Go (no
// cgo; it builds for GOOS=js and GOOS=wasip1). It computes exactly the
// quantised arithmetic the WGSL kernels compute, so it is the oracle for the
// GPU backend, and it is the fallback where WebGPU is missing.
package cpu

import (
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
)

// Model is a model loaded for the CPU backend.
type Model struct {
	Cfg  *model.Config
	W    *model.Weights
	rope [2]model.Rope // RoPE by model.AttnKind

	// observeKV, when set (by tests), sees each producer's chunk KV before it is committed.
	observeKV func(region int, ck *chunkKV)
}

// New checks that w has every tensor of cfg with the right size and returns the model.
func New(cfg *model.Config, w *model.Weights) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(w.Layers) != len(cfg.Layers) {
		return nil, fmt.Errorf("cpu model: weights have %d layers, config %d", len(w.Layers), len(cfg.Layers))
	}
	for _, s := range cfg.TensorSpecs() {
		mat, norm := w.Find(s)
		switch {
		case norm != nil && len(*norm) != s.Cols:
			return nil, fmt.Errorf("cpu model: tensor %q has %d values, want %d", s.Name, len(*norm), s.Cols)
		case mat != nil && (mat.Rows != s.Rows || mat.Cols != s.Cols):
			return nil, fmt.Errorf("cpu model: tensor %q is %dx%d, want %dx%d", s.Name, mat.Rows, mat.Cols, s.Rows, s.Cols)
		case mat != nil && cfg.DType == model.Int8 && (len(mat.I8) != s.Rows*s.Cols || len(mat.Scale) != s.Rows):
			return nil, fmt.Errorf("cpu model: int8 tensor %q has %d values and %d scales, want %d and %d", s.Name, len(mat.I8), len(mat.Scale), s.Rows*s.Cols, s.Rows)
		case mat != nil && cfg.DType == model.F32 && len(mat.F32) != s.Rows*s.Cols:
			return nil, fmt.Errorf("cpu model: f32 tensor %q has %d values, want %d", s.Name, len(mat.F32), s.Rows*s.Cols)
		}
	}
	m := &Model{Cfg: cfg, W: w}
	m.rope[model.Global] = cfg.Rope(model.Global)
	m.rope[model.Local] = cfg.Rope(model.Local)
	return m, nil
}

// chunkKV holds the keys and values a producer layer computed for the tokens
// of one Forward call. Attention reads earlier positions from the arena and
// these from here; they are committed to the arena only at the end, because
// a ring may not have room for the whole chunk while later layers (its
// consumers) still read its first tokens.
type chunkKV struct {
	k, v           []float32 // [n*KVDim] float32 mode, or the pre-quantised values
	kq, vq         []int8    // [n*KVDim] int8 mode
	kScale, vScale []float32 // [n*KVHeads] int8 mode
}

// Forward runs tokens at positions start, start+1, ... through the model.
// It reads the KV of positions before start from arena and writes the KV of
// these tokens into it. logits receives the final logits of the last token
// (len Vocab) or, when len(logits) == len(tokens)*Vocab, of every token.
func (m *Model) Forward(arena *kv.Arena, tokens []int32, start int, logits []float32) error {
	c, w := m.Cfg, m.W
	n := len(tokens)
	if n == 0 {
		return fmt.Errorf("forward: no tokens")
	}
	if start < 0 || start+n > arena.Context {
		return fmt.Errorf("forward: positions %d..%d outside the KV arena's context of %d", start, start+n-1, arena.Context)
	}
	all := len(logits) == n*c.Vocab
	if !all && len(logits) != c.Vocab {
		return fmt.Errorf("forward: logits buffer has %d values, want %d or %d", len(logits), c.Vocab, n*c.Vocab)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("forward: token %d at index %d outside the vocabulary of %d", t, i, c.Vocab)
		}
	}
	int8Mode := c.DType == model.Int8
	hd, qd, kvd := c.HeadDim, c.QDim(), c.KVDim()

	// Run state, shapes per token: x residual [Hidden]; h normed [Hidden];
	// q [QDim]; attn output [QDim]; ffn gate/up [FFNHidden].
	x := make([]float32, n*c.Hidden)
	newAct := func(cols int) *Act {
		a := &Act{N: n, Cols: cols, X: make([]float32, n*cols)}
		if int8Mode {
			a.Q, a.Scale = make([]int8, n*cols), make([]float32, n)
		}
		return a
	}
	h, att, ffn := newAct(c.Hidden), newAct(qd), newAct(c.FFNHidden)
	q := make([]float32, n*qd)
	up := make([]float32, n*c.FFNHidden)
	out := make([]float32, n*c.Hidden)
	rot := c.Rotary()
	rope := [2][]float32{make([]float32, n*hd), make([]float32, n*hd)} // cos|sin per token, by kind
	for kind := range rope {
		for t := 0; t < n; t++ {
			m.rope[kind].CosSin(rope[kind][t*hd:(t+1)*hd], start+t)
		}
	}
	chunks := make([]*chunkKV, len(arena.Regions))

	// 1. Embedding gather, scaled.
	for t, id := range tokens {
		EmbedRow(x[t*c.Hidden:(t+1)*c.Hidden], &w.Embed, int(id), c.Embedding())
	}
	eps := float32(c.NormEps)
	norm := func(dst, src, weight []float32, cols int) { // every row of cols values
		for t := 0; t < len(src)/cols; t++ {
			RMSNorm(dst[t*cols:(t+1)*cols], src[t*cols:(t+1)*cols], weight, eps, c.NormOnePlus)
		}
	}
	project := func(dst []float32, mat *model.Mat, a *Act) {
		if int8Mode {
			a.Quantize()
		}
		MatMul(dst, mat, a)
	}
	for l := range c.Layers {
		lw, kind := &w.Layers[l], c.Layers[l].Kind
		// 2. Attention: pre-norm, projections, QK-norm, RoPE.
		norm(h.X, x, lw.AttnNorm, c.Hidden)
		project(q, &lw.WQ, h)
		if c.QKVBias {
			addBias(q, lw.BQ)
		}
		if c.QKNorm {
			norm(q, q, lw.QNorm, hd) // per head: rows of HeadDim
		}
		for t := 0; t < n; t++ {
			Rope(q[t*qd:(t+1)*qd], c.Heads, hd, rope[kind][t*hd:t*hd+rot])
		}
		ri := arena.OfLayer[l]
		if c.Producer(l) {
			// The matmul inputs are already quantised from WQ.
			ck := &chunkKV{k: make([]float32, n*kvd), v: make([]float32, n*kvd)}
			MatMul(ck.k, &lw.WK, h)
			MatMul(ck.v, &lw.WV, h)
			if c.QKVBias {
				addBias(ck.k, lw.BK)
				addBias(ck.v, lw.BV)
			}
			if c.QKNorm {
				norm(ck.k, ck.k, lw.KNorm, hd)
			}
			for t := 0; t < n; t++ {
				Rope(ck.k[t*kvd:(t+1)*kvd], c.KVHeads, hd, rope[kind][t*hd:t*hd+rot])
			}
			if int8Mode {
				ck.kq, ck.vq = make([]int8, n*kvd), make([]int8, n*kvd)
				ck.kScale, ck.vScale = make([]float32, n*c.KVHeads), make([]float32, n*c.KVHeads)
				for r := 0; r < n*c.KVHeads; r++ {
					ck.kScale[r] = quant.Quantize(ck.kq[r*hd:(r+1)*hd], ck.k[r*hd:(r+1)*hd])
					ck.vScale[r] = quant.Quantize(ck.vq[r*hd:(r+1)*hd], ck.v[r*hd:(r+1)*hd])
				}
			}
			chunks[ri] = ck
		}
		m.attend(att.X, q, arena, &arena.Regions[ri], chunks[ri], l, start, n)
		// 3. Output projection, optional post-norm, residual.
		project(out, &lw.WO, att)
		if c.PostAttnNorm {
			norm(out, out, lw.PostAttnNorm, c.Hidden)
		}
		addInto(x, out)
		// 4. Gated FFN: pre-norm, gate and up, activation, down, optional post-norm, residual.
		norm(h.X, x, lw.FFNNorm, c.Hidden)
		project(ffn.X, &lw.WGate, h) // gate lands in ffn.X, then becomes act(gate)*up in place
		MatMul(up, &lw.WUp, h)
		GatedAct(ffn.X, ffn.X, up, c.Activation)
		project(out, &lw.WDown, ffn)
		if c.PostFFNNorm {
			norm(out, out, lw.PostFFNNorm, c.Hidden)
		}
		addInto(x, out)
	}
	// 5. Final norm and logits (of the last token, or all).
	first := n - 1
	if all {
		first = 0
	}
	fin := &Act{N: n - first, Cols: c.Hidden, X: h.X[:(n-first)*c.Hidden]}
	if int8Mode {
		fin.Q, fin.Scale = h.Q[:len(fin.X)], h.Scale[:fin.N]
	}
	for t := first; t < n; t++ {
		RMSNorm(fin.X[(t-first)*c.Hidden:(t-first+1)*c.Hidden], x[t*c.Hidden:(t+1)*c.Hidden], w.FinalNorm, eps, c.NormOnePlus)
	}
	project(logits, &w.LMHead, fin)
	if c.FinalSoftcap != 0 {
		Softcap(logits, float32(c.FinalSoftcap))
	}
	// 6. Commit this chunk's KV to the arena, in position order, so a ring
	// keeps the last Window positions.
	for ri, ck := range chunks {
		if ck != nil {
			if m.observeKV != nil {
				m.observeKV(ri, ck)
			}
			commit(arena, &arena.Regions[ri], ck, start, n)
		}
	}
	return nil
}

// addBias adds bias to every row of dst (rows of len(bias) values, one per
// token).
func addBias(dst, bias []float32) {
	for t := 0; t+len(bias) <= len(dst); t += len(bias) {
		addInto(dst[t:t+len(bias)], bias)
	}
}

func addInto(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

func commit(a *kv.Arena, r *kv.Region, ck *chunkKV, start, n int) {
	hd, kvh := a.HeadDim, a.KVHeads
	for t := 0; t < n; t++ {
		for g := 0; g < kvh; g++ {
			i := t*kvh + g
			k, v := a.K(r, start+t, g), a.V(r, start+t, g)
			if ck.kq != nil {
				copy(k.I8, ck.kq[i*hd:(i+1)*hd])
				copy(v.I8, ck.vq[i*hd:(i+1)*hd])
				*k.Scale, *v.Scale = ck.kScale[i], ck.vScale[i]
			} else {
				copy(k.F32, ck.k[i*hd:(i+1)*hd])
				copy(v.F32, ck.v[i*hd:(i+1)*hd])
			}
		}
	}
}

// attend computes attention for the n query tokens at start.. of layer l,
// reading positions before start from region r of the arena and the chunk's
// own positions from ck. out and q are [n*QDim].
func (m *Model) attend(out, q []float32, a *kv.Arena, r *kv.Region, ck *chunkKV, l, start, n int) {
	c := m.Cfg
	hd, group := c.HeadDim, c.Heads/c.KVHeads
	window := c.Layers[l].Window
	scale := c.Scale()
	softcap := float32(c.AttnSoftcap)
	parallelRows(n*c.Heads, (start+n)*hd, func(lo, hi int) {
		var scores []float32
		for th := lo; th < hi; th++ {
			t, head := th/c.Heads, th%c.Heads
			g, p := head/group, start+t
			first := 0
			if window > 0 && p-window+1 > 0 {
				first = p - window + 1
			}
			qh := q[th*hd : (th+1)*hd]
			scores = scores[:0]
			best := float32(math.Inf(-1))
			for j := first; j <= p; j++ {
				s := dotKey(qh, keyRow(a, r, ck, start, j, g)) * scale
				if softcap != 0 {
					s = softcap * float32(math.Tanh(float64(s/softcap)))
				}
				scores = append(scores, s)
				best = max(best, s)
			}
			o := out[th*hd : (th+1)*hd]
			clear(o)
			var sum float32
			for i, s := range scores {
				e := float32(math.Exp(float64(s - best)))
				sum += e
				v := valueRow(a, r, ck, start, first+i, g)
				if v.I8 != nil {
					ev := e * *v.Scale
					for d, x := range v.I8 {
						o[d] += ev * float32(x)
					}
				} else {
					for d, x := range v.F32 {
						o[d] += e * x
					}
				}
			}
			for d := range o {
				o[d] /= sum
			}
		}
	})
}

// dotKey is q . k with k dequantised: (sum q[d]*k8[d]) * kScale in int8 mode.
func dotKey(q []float32, k kv.Row) float32 {
	if k.I8 == nil {
		return dotF32(q, k.F32)
	}
	var s float32
	for d, x := range k.I8 {
		s += q[d] * float32(x)
	}
	return s * *k.Scale
}

func keyRow(a *kv.Arena, r *kv.Region, ck *chunkKV, start, pos, g int) kv.Row {
	if pos < start {
		return a.K(r, pos, g)
	}
	return ck.row(ck.k, ck.kq, ck.kScale, (pos-start)*a.KVHeads+g, a.HeadDim)
}

func valueRow(a *kv.Arena, r *kv.Region, ck *chunkKV, start, pos, g int) kv.Row {
	if pos < start {
		return a.V(r, pos, g)
	}
	return ck.row(ck.v, ck.vq, ck.vScale, (pos-start)*a.KVHeads+g, a.HeadDim)
}

func (ck *chunkKV) row(f []float32, q []int8, s []float32, i, hd int) kv.Row {
	if q != nil {
		return kv.Row{I8: q[i*hd : (i+1)*hd], Scale: &s[i]}
	}
	return kv.Row{F32: f[i*hd : (i+1)*hd]}
}

// Name reports the backend.
func (m *Model) Name() string { return "cpu" }

// Close releases nothing: the CPU model is garbage collected.
func (m *Model) Close() error { return nil }

// Sequence is a KV arena and the model that fills it.
type Sequence struct {
	m     *Model
	Arena *kv.Arena
	end   int // the position after the last one written by Forward or Restore
}

// NewSequence allocates a KV arena for context positions.
func (m *Model) NewSequence(context int) (*Sequence, error) {
	lay, err := kv.NewLayout(m.Cfg, context)
	if err != nil {
		return nil, err
	}
	return &Sequence{m: m, Arena: kv.NewArena(lay)}, nil
}

// Forward runs tokens at positions start.. over the sequence's arena (see Model.Forward).
func (s *Sequence) Forward(tokens []int32, start int, logits []float32) error {
	if err := s.m.Forward(s.Arena, tokens, start, logits); err != nil {
		return err
	}
	s.end = start + len(tokens)
	return nil
}

// Snapshot copies the KV of positions [from, to) out of the arena, if the
// arena still holds them (kv.Layout.CanCapture): to is usually the end of
// the last Forward or Restore, since a ring keeps only the last window
// positions written.
func (s *Sequence) Snapshot(from, to int) (*kv.Snapshot, error) {
	if !s.Arena.CanCapture(s.end, from, to) {
		return nil, fmt.Errorf("snapshot of positions [%d, %d): the KV holds positions up to %d, and its rings no longer hold all of these", from, to, s.end)
	}
	return s.Arena.Capture(from, to)
}

// Snapshots takes the snapshots of several spans (see Snapshot); if any is
// refused, none is taken.
func (s *Sequence) Snapshots(spans []kv.Span) ([]*kv.Snapshot, error) {
	for _, sp := range spans {
		if !s.Arena.CanCapture(s.end, sp.From, sp.To) {
			return nil, fmt.Errorf("snapshot of positions [%d, %d): the KV holds positions up to %d, and its rings no longer hold all of these", sp.From, sp.To, s.end)
		}
	}
	snaps := make([]*kv.Snapshot, len(spans))
	for i, sp := range spans {
		var err error
		if snaps[i], err = s.Arena.Capture(sp.From, sp.To); err != nil {
			return nil, err
		}
	}
	return snaps, nil
}

// Restore loads the KV of positions [0, n) from parts (see kv.Arena.Restore);
// the next Forward continues at n.
func (s *Sequence) Restore(parts []*kv.Snapshot) error {
	n, err := s.Arena.Restore(parts)
	if err != nil {
		return err
	}
	s.end = n
	return nil
}

// Context is the most positions the sequence holds.
func (s *Sequence) Context() int { return s.Arena.Context }

// Close drops the arena.
func (s *Sequence) Close() error { s.Arena = nil; return nil }
