// Package model defines the architecture of a wick model: its Config (what the
// Character.AI-style design lets a model choose) and its Weights (the tensors a
// forward pass reads), independent of any file format or backend.
package model

import (
	"errors"
	"fmt"
	"math"
)

// AttnKind says how far back a layer attends.
type AttnKind int

const (
	// Global layers attend to every earlier position up to the context limit.
	Global AttnKind = iota
	// Local layers attend to the last Window positions (their own included).
	Local
)

func (k AttnKind) String() string {
	switch k {
	case Global:
		return "global"
	case Local:
		return "local"
	}
	return fmt.Sprintf("AttnKind(%d)", int(k))
}

// Activation is the gate nonlinearity of the gated feed-forward block.
type Activation int

const (
	// GeGLUTanh is gelu(gate, tanh approximation) * up, as in Gemma.
	GeGLUTanh Activation = iota
	// SwiGLU is silu(gate) * up, as in Llama.
	SwiGLU
)

func (a Activation) String() string {
	switch a {
	case GeGLUTanh:
		return "geglu_tanh"
	case SwiGLU:
		return "swiglu"
	}
	return fmt.Sprintf("Activation(%d)", int(a))
}

// DType is how weights (and with them activations and the KV cache) are stored.
type DType int

const (
	// Int8 is the W8A8 mode: int8 weights with a float32 scale per output row,
	// activations quantised per token before every matmul, int8 KV cache with a
	// scale per position and KV head. See package quant for the exact formulas.
	Int8 DType = iota
	// F32 is the reference mode: float32 weights, activations and KV cache.
	F32
)

func (d DType) String() string {
	switch d {
	case Int8:
		return "int8"
	case F32:
		return "f32"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Layer describes one transformer block's attention.
type Layer struct {
	Kind   AttnKind
	Window int // positions attended to by a Local layer, its own included; 0 for Global
	// KVSource is the index of the layer whose K/V cache this layer reads. A
	// layer with KVSource == its own index is a producer: it has K/V
	// projections and owns a region of the KV arena. Any other layer is a
	// consumer: it has no K/V weights and reads the producer's cache.
	KVSource int
}

// RopeScaling is Llama 3's frequency-dependent RoPE scaling. Factor 0 means none.
type RopeScaling struct {
	Factor          float64
	LowFreqFactor   float64
	HighFreqFactor  float64
	OriginalContext int
}

// LongRope is LongRoPE scaling (Phi-3.5-mini, Phi-4-mini: transformers'
// rope_type "longrope", "su" in older configs). Rotated pair i's inverse
// frequency is divided by ShortFactor[i] at positions below
// OriginalContext and by LongFactor[i] from there on, and RoPE's cos and
// sin are multiplied by AttnFactor. Nil factors mean none. llama.cpp's
// rope_freqs (Llama 3's scaling in a GGUF file) are such divisors too, the
// same at every position: equal short and long factors, AttnFactor 1.
type LongRope struct {
	ShortFactor     []float64 // one per rotated pair: Rotary()/2
	LongFactor      []float64 // one per rotated pair
	OriginalContext int       // the first position that uses LongFactor
	AttnFactor      float64   // cos and sin are multiplied by this
}

// On reports whether LongRoPE scaling is configured.
func (l *LongRope) On() bool { return l.ShortFactor != nil || l.LongFactor != nil }

// Config is the architecture of a model. Shapes of all tensors follow from it.
type Config struct {
	Vocab      int // tokens in the vocabulary
	Hidden     int // width of the residual stream
	Heads      int // query heads
	KVHeads    int // key/value heads: 1 is multi-query attention, Heads is multi-head
	HeadDim    int // width of one head
	FFNHidden  int // width of the gated feed-forward block
	ContextLen int // most positions a sequence may hold

	Layers []Layer // one entry per transformer block, in order

	RopeThetaGlobal float64 // RoPE base of Global layers
	RopeThetaLocal  float64 // RoPE base of Local layers
	RopeScaling     RopeScaling
	LongRope        LongRope
	// RotaryDim is how many leading dimensions of each head RoPE rotates,
	// as pairs (i, i+RotaryDim/2); the rest pass unrotated (Phi's partial
	// rotary factor). 0 means HeadDim.
	RotaryDim int

	NormEps       float64 // epsilon inside RMSNorm's square root
	NormOnePlus   bool    // RMSNorm multiplies by (1 + w), as Gemma does, instead of w
	QKNorm        bool    // RMSNorm over each query and key head before RoPE
	QKVBias       bool    // the q, k and v projections add a bias (Qwen 2)
	PostAttnNorm  bool    // RMSNorm on the attention output before the residual add
	PostFFNNorm   bool    // RMSNorm on the FFN output before the residual add
	Activation    Activation
	TiedEmbedding bool    // the output projection is the embedding matrix
	EmbedScale    float64 // embeddings are multiplied by this after the gather; 0 means 1
	AttnScale     float64 // scores are q.k * AttnScale; 0 means 1/sqrt(HeadDim)
	FinalSoftcap  float64 // logits become c*tanh(logits/c); 0 means off
	AttnSoftcap   float64 // attention scores (after AttnScale) become c*tanh(s/c); 0 means off

	DType DType
}

// Rotary returns the number of leading head dimensions RoPE rotates.
func (c *Config) Rotary() int {
	if c.RotaryDim != 0 {
		return c.RotaryDim
	}
	return c.HeadDim
}

// Producer reports whether layer i owns K/V projections and a KV region.
func (c *Config) Producer(i int) bool { return c.Layers[i].KVSource == i }

// Scale returns the effective attention scale.
func (c *Config) Scale() float32 {
	if c.AttnScale != 0 {
		return float32(c.AttnScale)
	}
	return float32(1 / math.Sqrt(float64(c.HeadDim)))
}

// Embedding returns the effective embedding multiplier.
func (c *Config) Embedding() float32 {
	if c.EmbedScale != 0 {
		return float32(c.EmbedScale)
	}
	return 1
}

// RopeTheta returns the RoPE base for layer i.
func (c *Config) RopeTheta(i int) float64 {
	if c.Layers[i].Kind == Local {
		return c.RopeThetaLocal
	}
	return c.RopeThetaGlobal
}

// QDim is the width of all query heads together; KVDim of all key (or value) heads.
func (c *Config) QDim() int  { return c.Heads * c.HeadDim }
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Limits that keep every size well inside int32 arithmetic on the GPU and
// reject configs that are surely a mistake.
const (
	maxDim     = 1 << 20
	maxLayers  = 1024
	maxContext = 1 << 20
)

// Validate reports the first thing wrong with c, naming the field.
func (c *Config) Validate() error {
	pos := func(name string, v int, max int) error {
		if v <= 0 {
			return fmt.Errorf("config: %s is %d, must be positive", name, v)
		}
		if v > max {
			return fmt.Errorf("config: %s is %d, above the limit %d", name, v, max)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    int
		max  int
	}{
		{"vocab", c.Vocab, 1 << 24},
		{"hidden", c.Hidden, maxDim},
		{"heads", c.Heads, 4096},
		{"kv_heads", c.KVHeads, 4096},
		{"head_dim", c.HeadDim, 4096},
		{"ffn_hidden", c.FFNHidden, maxDim},
		{"context_len", c.ContextLen, maxContext},
		{"layers", len(c.Layers), maxLayers},
	} {
		if err := pos(f.name, f.v, f.max); err != nil {
			return err
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("config: heads (%d) is not a multiple of kv_heads (%d)", c.Heads, c.KVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("config: head_dim %d is odd; RoPE rotates pairs", c.HeadDim)
	}
	if c.RotaryDim < 0 || c.RotaryDim > c.HeadDim || c.RotaryDim%2 != 0 {
		return fmt.Errorf("config: rotary_dim %d must be even and at most head_dim %d (0 means all of it)", c.RotaryDim, c.HeadDim)
	}
	if c.Hidden%4 != 0 || c.FFNHidden%4 != 0 || c.HeadDim%4 != 0 {
		return fmt.Errorf("config: hidden (%d), ffn_hidden (%d) and head_dim (%d) must be multiples of 4 (int8 rows are packed four to a word)", c.Hidden, c.FFNHidden, c.HeadDim)
	}
	for _, t := range []struct {
		name string
		v    float64
	}{{"rope_theta_global", c.RopeThetaGlobal}, {"norm_eps", c.NormEps}} {
		if !(t.v > 0) || math.IsInf(t.v, 0) {
			return fmt.Errorf("config: %s is %v, must be positive and finite", t.name, t.v)
		}
	}
	for _, t := range []struct {
		name string
		v    float64
	}{{"embed_scale", c.EmbedScale}, {"attn_scale", c.AttnScale}, {"final_softcap", c.FinalSoftcap}, {"attn_softcap", c.AttnSoftcap}} {
		if t.v < 0 || math.IsNaN(t.v) || math.IsInf(t.v, 0) {
			return fmt.Errorf("config: %s is %v, must be zero (off) or positive and finite", t.name, t.v)
		}
	}
	if c.Activation != GeGLUTanh && c.Activation != SwiGLU {
		return fmt.Errorf("config: unknown activation %v", c.Activation)
	}
	if c.DType != Int8 && c.DType != F32 {
		return fmt.Errorf("config: unknown dtype %v", c.DType)
	}
	for _, t := range []struct {
		name string
		v    float64
	}{{"rope_theta_local", c.RopeThetaLocal}, {"rope_scaling.factor", c.RopeScaling.Factor},
		{"rope_scaling.low_freq_factor", c.RopeScaling.LowFreqFactor}, {"rope_scaling.high_freq_factor", c.RopeScaling.HighFreqFactor}} {
		if math.IsNaN(t.v) || math.IsInf(t.v, 0) || t.v < 0 {
			return fmt.Errorf("config: %s is %v, must be zero or positive and finite", t.name, t.v)
		}
	}
	if rs := c.RopeScaling; rs.Factor != 0 {
		if rs.Factor < 1 || rs.LowFreqFactor <= 0 || rs.HighFreqFactor <= rs.LowFreqFactor || rs.OriginalContext <= 0 {
			return fmt.Errorf("config: rope_scaling %+v: need factor >= 1, 0 < low_freq_factor < high_freq_factor, original_context > 0", rs)
		}
	}
	if err := c.validateLongRope(); err != nil {
		return err
	}
	hasLocal := false
	for i, l := range c.Layers {
		switch l.Kind {
		case Global:
			if l.Window != 0 {
				return fmt.Errorf("config: layer %d is global but has window %d", i, l.Window)
			}
		case Local:
			hasLocal = true
			if l.Window <= 0 {
				return fmt.Errorf("config: layer %d is local with window %d, must be positive", i, l.Window)
			}
		default:
			return fmt.Errorf("config: layer %d has unknown attention kind %v", i, l.Kind)
		}
		src := l.KVSource
		if src < 0 || src > i {
			return fmt.Errorf("config: layer %d reads KV from layer %d; a layer may only read its own KV or an earlier layer's", i, src)
		}
		if src == i {
			continue
		}
		p := c.Layers[src]
		if p.KVSource != src {
			return fmt.Errorf("config: layer %d reads KV from layer %d, which is itself a consumer (of layer %d); name the producer", i, src, p.KVSource)
		}
		if p.Kind != l.Kind || p.Window != l.Window {
			return fmt.Errorf("config: layer %d (%v, window %d) reads KV from layer %d of another kind (%v, window %d)", i, l.Kind, l.Window, src, p.Kind, p.Window)
		}
	}
	if hasLocal && (!(c.RopeThetaLocal > 0) || math.IsInf(c.RopeThetaLocal, 0)) {
		return errors.New("config: rope_theta_local must be positive and finite when any layer is local")
	}
	return nil
}

// KVBytesPerToken is the KV cache bytes one more token of context costs at a
// context of ctx positions: local producers stop growing once their window
// is full, consumers cost nothing.
func (c *Config) KVBytesPerToken(ctx int) float64 {
	return float64(c.KVBytes(ctx)) / float64(ctx)
}

// KVBytes is the size of the KV cache holding ctx positions.
func (c *Config) KVBytes(ctx int) int64 {
	var n int64
	for i, l := range c.Layers {
		if !c.Producer(i) {
			continue
		}
		slots := ctx
		if l.Kind == Local && l.Window < slots {
			slots = l.Window
		}
		n += int64(slots) * c.kvBytesPerSlot(c.KVHeads)
	}
	return n
}

// BaselineKVBytes is the KV cache size of the same model at ctx positions
// with multi-head attention, all layers global and no sharing: the design
// that the Character.AI techniques are measured against.
func (c *Config) BaselineKVBytes(ctx int) int64 {
	return int64(len(c.Layers)) * int64(ctx) * c.kvBytesPerSlot(c.Heads)
}

// kvBytesPerSlot is K and V for one position of one layer with kvHeads heads:
// int8 values plus a float32 scale per head, or float32 values.
func (c *Config) kvBytesPerSlot(kvHeads int) int64 {
	if c.DType == F32 {
		return 2 * int64(kvHeads) * int64(c.HeadDim) * 4
	}
	return 2 * int64(kvHeads) * (int64(c.HeadDim) + 4)
}

// validateLongRope checks LongRoPE's factors: one positive, finite factor
// per rotated pair in each list, and a positive original context and
// attention factor. It cannot be combined with Llama 3's scaling.
func (c *Config) validateLongRope() error {
	l := &c.LongRope
	if !l.On() {
		return nil
	}
	if c.RopeScaling.Factor != 0 {
		return errors.New("config: long_rope and rope_scaling are both set; a model has one RoPE scaling")
	}
	pairs := c.Rotary() / 2
	for _, f := range []struct {
		name string
		v    []float64
	}{{"long_rope.short_factor", l.ShortFactor}, {"long_rope.long_factor", l.LongFactor}} {
		if len(f.v) != pairs {
			return fmt.Errorf("config: %s has %d entries, want one per rotated pair (%d)", f.name, len(f.v), pairs)
		}
		for i, v := range f.v {
			if !(v > 0) || math.IsInf(v, 0) {
				return fmt.Errorf("config: %s[%d] is %v, must be positive and finite", f.name, i, v)
			}
		}
	}
	if l.OriginalContext <= 0 {
		return fmt.Errorf("config: long_rope.original_context is %d, must be positive", l.OriginalContext)
	}
	if !(l.AttnFactor > 0) || math.IsInf(l.AttnFactor, 0) {
		return fmt.Errorf("config: long_rope.attn_factor is %v, must be positive and finite", l.AttnFactor)
	}
	return nil
}
