package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// ArchVariants are the rows of bench/ARCHITECTURE.md's table, as
// train/wicktrain/model.py's variant_config defines them.
var ArchVariants = []string{"baseline", "mqa", "hybrid", "share", "int8"}

// ArchConfig is train/wicktrain/model.py's variant_config: the default
// model's size (hidden 384, 12 layers, FFN 1024, 6 heads of 64, 8k
// vocabulary, context 1024) with the table's techniques up to and
// including name: MQA, 5 local (window 128) : 1 global layers, cross-layer
// KV sharing, int8.
func ArchConfig(name string) (*model.Config, error) {
	k := slices.Index(ArchVariants, name)
	if k < 0 {
		return nil, fmt.Errorf("-configs: unknown variant %q (%s)", name, strings.Join(ArchVariants, ", "))
	}
	c := &model.Config{Vocab: 8192, Hidden: 384, Heads: 6, KVHeads: 1, HeadDim: 64, FFNHidden: 1024, ContextLen: 1024,
		RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4, NormEps: 1e-6, NormOnePlus: true, QKNorm: true,
		PostAttnNorm: true, PostFFNNorm: true, Activation: model.GeGLUTanh, TiedEmbedding: true,
		EmbedScale: math.Sqrt(384), FinalSoftcap: 30, DType: model.F32}
	if k < 1 {
		c.KVHeads = c.Heads
	}
	if k >= 4 {
		c.DType = model.Int8
	}
	hybrid, share := k >= 2, k >= 3
	firstGlobal := -1
	for range 2 { // cai_layers(2, 128, hybrid, share)
		base := len(c.Layers)
		for i := range 5 {
			src := base + i
			if share && i%2 == 1 {
				src--
			}
			c.Layers = append(c.Layers, model.Layer{Kind: model.Local, Window: 128, KVSource: src})
		}
		g := len(c.Layers)
		if firstGlobal < 0 {
			firstGlobal = g
		}
		src := g
		if share {
			src = firstGlobal
		}
		c.Layers = append(c.Layers, model.Layer{Kind: model.Global, KVSource: src})
	}
	if !hybrid {
		for i := range c.Layers {
			c.Layers[i] = model.Layer{Kind: model.Global, KVSource: i}
		}
	}
	return c, c.Validate()
}

// Shape is the architecture of a Gemma 3 model (name 270m or 1b): 5 local layers
// (window 512) to 1 global, MQA with head_dim 256, tied 262k embedding.
func Shape(name string) (*model.Config, error) {
	c := &model.Config{Vocab: 262144, Heads: 4, KVHeads: 1, HeadDim: 256, ContextLen: 32768,
		RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4, NormEps: 1e-6, NormOnePlus: true, QKNorm: true,
		PostAttnNorm: true, PostFFNNorm: true, Activation: model.GeGLUTanh, TiedEmbedding: true, DType: model.Int8}
	layers := 0
	switch name {
	case "270m":
		c.Hidden, c.FFNHidden, layers = 640, 2048, 18
	case "1b":
		c.Hidden, c.FFNHidden, layers = 1152, 6912, 26
	default:
		return nil, fmt.Errorf("unknown shape %q (270m, 1b)", name)
	}
	c.EmbedScale = math.Sqrt(float64(c.Hidden))
	for i := 0; i < layers; i++ {
		if i%6 == 5 {
			c.Layers = append(c.Layers, model.Layer{Kind: model.Global, KVSource: i})
		} else {
			c.Layers = append(c.Layers, model.Layer{Kind: model.Local, Window: 512, KVSource: i})
		}
	}
	return c, c.Validate()
}

// RandomInt8 builds int8 weights for c straight from random bytes (values
// in -127..127, scales that keep activations near unit size): quantising
// float32 draws would take minutes for a billion parameters.
func RandomInt8(c *model.Config, seed uint64) *model.Weights {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	r := rand.NewChaCha8(key)
	w := model.NewWeights(c)
	for _, s := range c.TensorSpecs() {
		mat, norm := w.Find(s)
		if norm != nil {
			*norm = make([]float32, s.Cols) // 0 is neutral for 1+w gains
			if !c.NormOnePlus {
				for i := range *norm {
					(*norm)[i] = 1
				}
			}
			continue
		}
		raw := make([]byte, s.Rows*s.Cols)
		r.Read(raw)
		q := make([]int8, len(raw))
		for i, v := range raw {
			q[i] = max(int8(v), -127)
		}
		scale := make([]float32, s.Rows)
		for i := range scale {
			scale[i] = float32(1 / (73 * math.Sqrt(float64(s.Cols))))
		}
		*mat = model.Mat{Rows: s.Rows, Cols: s.Cols, I8: q, Scale: scale}
	}
	w.Tie(c)
	return w
}

// Shapes are the names Shape knows.
var Shapes = []string{"270m", "1b"}

// WriteShape writes a model directory at dir with RandomInt8 weights (seed
// 1, as Run measures them) for shape name: a Gemma 3 shape (Shapes), with
// the SentencePiece tokenizer at tokPath; or the path of a model directory,
// whose architecture, tokenizer and chat template it keeps. So hosts that
// load models from directories (the Node host on Dawn, wick gen) can run a
// 1 GB model made where it runs instead of travelling there. A Gemma
// shape's 262144 ids outnumber the small tokenizer's pieces: ids past them
// decode to nothing, which benchmarks that feed token ids do not mind.
func WriteShape(dir, name, tokPath string) error {
	if f, err := format.Open(name); err == nil {
		c := f.Config()
		if c.DType != model.Int8 {
			return fmt.Errorf("write shape of %s: the model is %v, want int8", name, c.DType)
		}
		return format.WriteModel(dir, f.Manifest().GetName()+"-shape", c, RandomInt8(c, 1), f.TokenizerPath(), f.Manifest().GetChat(), 32<<20)
	}
	c, err := Shape(name)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		return fmt.Errorf("write shape %s: %w", name, err)
	}
	tmpl, err := chat.GemmaChatTemplate(tok)
	if err != nil {
		return fmt.Errorf("write shape %s: %w", name, err)
	}
	return format.WriteModel(dir, "gemma-3-"+name+"-shape", c, RandomInt8(c, 1), tokPath, tmpl, 32<<20)
}
