// Package testmodel builds the tiny random models that wick's tests and
// testdata/ use: one shaped like Character.AI's design (MQA, 1 global : 5
// local layers, KV shared by neighbouring local layers and by the global
// layers across blocks) and one plain (GQA, all global, no sharing). Weights
// come from a seeded generator and are made so the output distribution is
// peaked: greedy choices then have clear margins, and exact-token
// comparisons between backends are not at the mercy of rounding.
package testmodel

import (
	"math"
	"math/rand/v2"

	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
)

// CAIShaped is the Character.AI-shaped test config: 12 layers in two blocks
// of five local layers (window 8) and one global; local layers share KV in
// pairs (the fifth of a block has its own) and the second global layer
// reads the first's KV.
func CAIShaped(vocab int, dtype model.DType) *model.Config {
	c := &model.Config{
		Vocab: vocab, Hidden: 64, Heads: 4, KVHeads: 1, HeadDim: 16, FFNHidden: 128, ContextLen: 512,
		RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4,
		NormEps: 1e-6, NormOnePlus: true, QKNorm: true, PostAttnNorm: true, PostFFNNorm: true,
		Activation: model.GeGLUTanh, TiedEmbedding: true, EmbedScale: 2, FinalSoftcap: 50,
		DType: dtype,
	}
	const window = 8
	firstGlobal := -1
	for b := 0; b < 2; b++ {
		base := len(c.Layers)
		for i := 0; i < 5; i++ {
			src := base + i
			if i%2 == 1 {
				src-- // consumer of the local layer before it
			}
			c.Layers = append(c.Layers, model.Layer{Kind: model.Local, Window: window, KVSource: src})
		}
		g := len(c.Layers)
		if firstGlobal < 0 {
			firstGlobal = g
		}
		c.Layers = append(c.Layers, model.Layer{Kind: model.Global, KVSource: firstGlobal})
	}
	return c
}

// Plain is the plain test config: GQA (4 query heads on 2 KV heads), four
// global layers, no sharing, SwiGLU, an untied output head.
func Plain(vocab int, dtype model.DType) *model.Config {
	c := &model.Config{
		Vocab: vocab, Hidden: 48, Heads: 4, KVHeads: 2, HeadDim: 12, FFNHidden: 96, ContextLen: 512,
		RopeThetaGlobal: 1e4, NormEps: 1e-5, Activation: model.SwiGLU, DType: dtype,
	}
	for i := 0; i < 4; i++ {
		c.Layers = append(c.Layers, model.Layer{Kind: model.Global, KVSource: i})
	}
	return c
}

// Random returns weights for c drawn from a generator seeded with seed.
// Matrices are Gaussian with std 1/sqrt(cols) (the output head larger, for
// peaked logits); norm weights are near their neutral value. In int8 mode
// the matrices are quantised per row with package quant.
func Random(c *model.Config, seed uint64) *model.Weights {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	w := model.NewWeights(c)
	for _, s := range c.TensorSpecs() {
		mat, norm := w.Find(s)
		if norm != nil {
			v := make([]float32, s.Cols)
			neutral := float32(1)
			if c.NormOnePlus {
				neutral = 0
			}
			for i := range v {
				v[i] = neutral + float32(r.NormFloat64()*0.1)
			}
			if s.Name == model.NameFinalNorm {
				// Large gains of random sign spread the logits (clear greedy
				// margins) and turn the residual away from the current token's
				// own embedding, which a tied head would otherwise echo forever.
				for i := range v {
					v[i] = neutral + float32(r.NormFloat64()*4)
				}
			}
			*norm = v
			continue
		}
		std := 1 / math.Sqrt(float64(s.Cols))
		if s.Name == model.NameEmbed || s.Name == model.NameLMHead {
			std = 0.5
		}
		f := make([]float32, s.Rows*s.Cols)
		for i := range f {
			f[i] = float32(r.NormFloat64() * std)
		}
		*mat = FromF32(c.DType, s.Rows, s.Cols, f)
	}
	w.Tie(c)
	return w
}

// Tokens returns n token ids below vocab from a generator seeded with
// seed: the prompts tests feed the random models.
func Tokens(n, vocab int, seed uint64) []int32 {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(r.IntN(vocab))
	}
	return ids
}

// FromF32 builds a Mat of the given dtype from float32 values, quantising
// per row in int8 mode.
func FromF32(dtype model.DType, rows, cols int, f []float32) model.Mat {
	m := model.Mat{Rows: rows, Cols: cols}
	if dtype == model.F32 {
		m.F32 = f
		return m
	}
	m.I8, m.Scale = make([]int8, rows*cols), make([]float32, rows)
	for i := 0; i < rows; i++ {
		m.Scale[i] = quant.Quantize(m.I8[i*cols:(i+1)*cols], f[i*cols:(i+1)*cols])
	}
	return m
}

// Margin is the gap between the largest and second-largest logit: how far
// a greedy choice is from flipping. Tests that compare tokens across
// backends report it for any mismatch.
func Margin(logits []float32) float32 {
	a, b := float32(math.Inf(-1)), float32(math.Inf(-1))
	for _, v := range logits {
		if v > a {
			a, b = v, a
		} else if v > b {
			b = v
		}
	}
	return a - b
}
