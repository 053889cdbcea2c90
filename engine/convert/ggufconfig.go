package convert

import (
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/gguf"
	"github.com/wick-run/wick/engine/model"
)

// This file maps a GGUF file's metadata (llama.cpp's keys, as its
// converter writes them) onto model.Config, one general.architecture at a
// time. Where llama.cpp hard-codes a value instead of reading a key (Gemma's
// attention scale and layer pattern), the same value is assumed here, and
// the key is read first where llama.cpp reads one.

// ggufArch is how one general.architecture maps onto wick.
type ggufArch struct {
	bias    bool // q/k/v biases (Qwen 2)
	permute bool // llama.cpp's converter interleaved Q and K rows for its RoPE
	qkNorm  bool // attn_q_norm and attn_k_norm over each head (Qwen3, Gemma 3)
	// gemma is 2 or 3 for Gemma's computation: GeGLU, norms after attention
	// and the FFN, embeddings scaled by sqrt(hidden), sliding-window layers
	// (every swaPattern-th layer global unless the file lists them).
	gemma      int
	swaPattern int
	// fused: q, k and v may come as one attn_qkv and gate and up as one
	// ffn_up (gate rows first), as llama.cpp keeps Phi-3's.
	fused bool
}

var ggufArchs = map[string]ggufArch{
	"llama":  {permute: true},
	"qwen2":  {bias: true},
	"qwen3":  {qkNorm: true},
	"phi3":   {fused: true},
	"gemma2": {gemma: 2, swaPattern: 2},
	"gemma3": {gemma: 3, swaPattern: 6, qkNorm: true},
}

// ggufMeta reads arch's keys of f.
type ggufMeta struct {
	f    *gguf.File
	arch string
}

func (m ggufMeta) has(key string) bool {
	_, ok := m.f.Metadata[m.arch+"."+key]
	return ok
}

// int reads a positive integer key.
func (m ggufMeta) int(key string) (int, error) {
	v, ok := m.f.Int(m.arch + "." + key)
	if !ok || v <= 0 || v > 1<<30 {
		return 0, fmt.Errorf("metadata %s.%s is missing or not a positive integer", m.arch, key)
	}
	return int(v), nil
}

// intOr reads a non-negative integer key, def when it is absent.
func (m ggufMeta) intOr(key string, def int) (int, error) {
	if !m.has(key) {
		return def, nil
	}
	v, ok := m.f.Int(m.arch + "." + key)
	if !ok || v < 0 || v > 1<<30 {
		return 0, fmt.Errorf("metadata %s.%s is not a non-negative integer", m.arch, key)
	}
	return int(v), nil
}

// float reads a float key, def when it is absent.
func (m ggufMeta) float(key string, def float64) (float64, error) {
	switch v := m.f.Metadata[m.arch+"."+key].(type) {
	case nil:
		return def, nil
	case float32:
		return float64(v), nil
	case float64:
		return v, nil
	}
	return 0, fmt.Errorf("metadata %s.%s is not a float", m.arch, key)
}

// ggufConfig maps the metadata of arch onto a wick config.
func ggufConfig(f *gguf.File, arch string, a ggufArch) (*model.Config, error) {
	m := ggufMeta{f, arch}
	cfg := &model.Config{Activation: model.SwiGLU, QKVBias: a.bias, QKNorm: a.qkNorm}
	var err error
	for _, fld := range []struct {
		dst *int
		key string
	}{
		{&cfg.Hidden, "embedding_length"}, {&cfg.FFNHidden, "feed_forward_length"},
		{&cfg.Heads, "attention.head_count"}, {&cfg.ContextLen, "context_length"},
	} {
		if *fld.dst, err = m.int(fld.key); err != nil {
			return nil, err
		}
	}
	cfg.KVHeads = cfg.Heads
	if m.has("attention.head_count_kv") {
		if cfg.KVHeads, err = m.int("attention.head_count_kv"); err != nil {
			return nil, err
		}
	}
	cfg.HeadDim = cfg.Hidden / cfg.Heads
	if m.has("attention.key_length") {
		if cfg.HeadDim, err = m.int("attention.key_length"); err != nil {
			return nil, err
		}
	}
	if m.has("attention.value_length") {
		if v, err := m.int("attention.value_length"); err != nil {
			return nil, err
		} else if v != cfg.HeadDim {
			return nil, fmt.Errorf("metadata %s.attention.value_length %d differs from key_length %d; wick needs one head width", arch, v, cfg.HeadDim)
		}
	}
	// Partial rotary (Phi-4-mini's 0.75 of each head): rope.dimension_count
	// leading dimensions are rotated, in NeoX pairs (i, i+rot/2), as
	// llama.cpp's Phi-3 graph and transformers do.
	if m.has("rope.dimension_count") {
		rot, err := m.int("rope.dimension_count")
		if err != nil {
			return nil, err
		}
		switch {
		case rot > cfg.HeadDim || rot%2 != 0:
			return nil, fmt.Errorf("metadata %s.rope.dimension_count %d: want an even number of dimensions up to the head width %d", arch, rot, cfg.HeadDim)
		case rot < cfg.HeadDim && a.permute:
			return nil, fmt.Errorf("metadata %s.rope.dimension_count %d: partial rotary is not supported for %s (its rows are interleaved for the whole head)", arch, rot, arch)
		case rot < cfg.HeadDim:
			cfg.RotaryDim = rot
		}
	}
	if cfg.RopeThetaGlobal, err = m.float("rope.freq_base", 10000); err != nil {
		return nil, err
	}
	// The local layers' base: rope.freq_base_swa, else the global one,
	// except for Gemma 3, whose earlier GGUFs do not store its 10000 (llama.cpp
	// hard-coded it then).
	localDef := cfg.RopeThetaGlobal
	if a.gemma == 3 {
		localDef = 10000
	}
	if cfg.RopeThetaLocal, err = m.float("rope.freq_base_swa", localDef); err != nil {
		return nil, err
	}
	if cfg.NormEps, err = m.float("attention.layer_norm_rms_epsilon", 1e-5); err != nil {
		return nil, err
	}
	if s, ok := f.String(arch + ".rope.scaling.type"); ok && s != "none" && !(s == "longrope" && a.fused) {
		return nil, fmt.Errorf("metadata %s.rope.scaling.type %q is not supported", arch, s)
	}
	if t := f.Tensor(ropeFreqs); t != nil {
		if cfg.LongRope, err = ggufRopeFreqs(f, t, cfg); err != nil {
			return nil, err
		}
	}
	if f.Tensor(ropeFactorsLong) != nil || f.Tensor(ropeFactorsShort) != nil {
		if cfg.LongRope.On() {
			return nil, fmt.Errorf("both %s and %s: one RoPE scaling at a time", ropeFreqs, ropeFactorsLong)
		}
		if cfg.LongRope, err = ggufLongRope(f, m, cfg); err != nil {
			return nil, err
		}
	}
	layers, err := m.int("block_count")
	if err != nil {
		return nil, err
	}
	for i := 0; i < layers; i++ {
		cfg.Layers = append(cfg.Layers, model.Layer{Kind: model.Global, KVSource: i})
	}
	window, err := m.intOr("attention.sliding_window", 0)
	if err != nil {
		return nil, err
	}
	switch {
	case a.gemma > 0:
		if err := ggufGemma(m, a, cfg, window); err != nil {
			return nil, err
		}
	case a.fused && window > 0 && window < cfg.ContextLen:
		// Phi-3 (mini 4k): a window on every layer, as transformers and
		// wick's safetensors conversion apply it. (llama.cpp turns Phi's
		// windows off; Phi-3.5 and Phi-4-mini have none shorter than the
		// context.)
		for i := range cfg.Layers {
			cfg.Layers[i].Kind, cfg.Layers[i].Window = model.Local, window
		}
	}
	emb := f.Tensor("token_embd.weight")
	if emb == nil || len(emb.Dims) != 2 {
		return nil, fmt.Errorf("no two-dimensional token_embd.weight")
	}
	cfg.Vocab = int(emb.Rows())
	cfg.TiedEmbedding = f.Tensor("output.weight") == nil
	return cfg, nil
}

// ggufGemma sets Gemma 2's and 3's computation.
//
// llama.cpp's converter stores Gemma's norm weights as 1 + w (Gemma's
// RMSNorm multiplies by 1 + w), in float32 as transformers adds them, so
// the file's weights are the multipliers: NormOnePlus stays off.
func ggufGemma(m ggufMeta, a ggufArch, cfg *model.Config, window int) error {
	cfg.Activation = model.GeGLUTanh
	cfg.PostAttnNorm, cfg.PostFFNNorm = true, true
	cfg.EmbedScale = math.Sqrt(float64(cfg.Hidden))
	var err error
	// Soft-caps: llama.cpp's defaults when the keys are absent (Gemma 2's
	// 50 and 30; Gemma 3 has no attention cap and its final cap only when
	// written).
	finalDef, attnDef := 0.0, 0.0
	if a.gemma == 2 {
		finalDef, attnDef = 30, 50
	}
	if cfg.FinalSoftcap, err = m.float("final_logit_softcapping", finalDef); err != nil {
		return err
	}
	if a.gemma == 2 {
		if cfg.AttnSoftcap, err = m.float("attn_logit_softcapping", attnDef); err != nil {
			return err
		}
	} else if m.has("attn_logit_softcapping") {
		return fmt.Errorf("metadata %s.attn_logit_softcapping: Gemma 3 has no attention soft-cap", m.arch)
	}
	// The attention scale: attention.scale where the file has it; else
	// llama.cpp's rule, 1/sqrt(head_dim), except for the 27B models
	// (1/sqrt(hidden/heads)), which transformers' query_pre_attn_scalar
	// agrees with for every released Gemma 2 and 3.
	scale, err := m.float("attention.scale", 0)
	if err != nil {
		return err
	}
	switch {
	case scale < 0 || math.IsInf(scale, 0) || math.IsNaN(scale):
		return fmt.Errorf("metadata %s.attention.scale %v: must be positive", m.arch, scale)
	case scale > 0:
		cfg.AttnScale = scale
	case a.gemma == 2 && len(cfg.Layers) == 46 || a.gemma == 3 && len(cfg.Layers) == 62:
		cfg.AttnScale = 1 / math.Sqrt(float64(cfg.Hidden/cfg.Heads))
	}
	if window == 0 {
		if a.gemma == 3 {
			return nil // no sliding window: every layer global, as llama.cpp reads it
		}
		window = 4096 // llama.cpp's default for Gemma 2
	}
	sliding, err := ggufSlidingLayers(m, a.swaPattern, len(cfg.Layers))
	if err != nil {
		return err
	}
	for i, s := range sliding {
		if s {
			cfg.Layers[i].Kind, cfg.Layers[i].Window = model.Local, window
		}
	}
	return nil
}

// ggufSlidingLayers reads which layers are sliding-window ones as llama.cpp
// does: attention.sliding_window_pattern as a list of booleans, or as n
// (layer i slides unless i%n == n-1), or else the architecture's n.
func ggufSlidingLayers(m ggufMeta, def, layers int) ([]bool, error) {
	key := m.arch + ".attention.sliding_window_pattern"
	out := make([]bool, layers)
	if list, ok := m.f.Metadata[key].([]any); ok {
		if len(list) != layers {
			return nil, fmt.Errorf("metadata %s has %d entries for %d layers", key, len(list), layers)
		}
		for i, v := range list {
			b, ok := v.(bool)
			if !ok {
				return nil, fmt.Errorf("metadata %s[%d] is not a boolean", key, i)
			}
			out[i] = b
		}
		return out, nil
	}
	n, err := m.intOr("attention.sliding_window_pattern", def)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = n == 0 || i%n < n-1
	}
	return out, nil
}

// ropeFreqs is the tensor in which llama.cpp's converter stores Llama 3's
// RoPE scaling: one divisor of each rotated pair's inverse frequency,
// computed from config.json's rope_scaling (factor, low and high frequency
// factors, original context), which the GGUF metadata does not keep.
const ropeFreqs = "rope_freqs.weight"

// ropeFactorsLong and ropeFactorsShort are Phi-3's LongRoPE factors as
// llama.cpp's converter writes them (rope_scaling's long_factor and
// short_factor), with the original context and attention factor in the
// metadata.
const (
	ropeFactorsLong  = "rope_factors_long.weight"
	ropeFactorsShort = "rope_factors_short.weight"
)

// ggufFactors reads a tensor of one positive factor per rotated pair.
func ggufFactors(f *gguf.File, name string, cfg *model.Config) ([]float64, error) {
	t := f.Tensor(name)
	pairs := cfg.Rotary() / 2
	if t == nil {
		return nil, fmt.Errorf("tensor %s is missing", name)
	}
	if t.Type != gguf.F32 || len(t.Dims) != 1 || t.Dims[0] != uint64(pairs) {
		return nil, fmt.Errorf("tensor %s is %v %v, want F32 [%d] (one factor per rotated pair)", name, t.Type, t.Dims, pairs)
	}
	v := make([]float32, pairs)
	if err := f.ReadRows(t, 0, 1, v); err != nil {
		return nil, err
	}
	factors := make([]float64, pairs)
	for i, x := range v {
		if !(x > 0) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("tensor %s: factor %d is %v, must be positive and finite", name, i, x)
		}
		factors[i] = float64(x)
	}
	return factors, nil
}

// ggufRopeFreqs reads rope_freqs.weight into the config field that divides
// each pair's frequency, LongRope, with the same factors below and beyond
// the original context and no attention factor: llama.cpp applies them at
// every position.
func ggufRopeFreqs(f *gguf.File, _ *gguf.Tensor, cfg *model.Config) (model.LongRope, error) {
	factors, err := ggufFactors(f, ropeFreqs, cfg)
	if err != nil {
		return model.LongRope{}, err
	}
	return model.LongRope{ShortFactor: factors, LongFactor: factors, OriginalContext: cfg.ContextLen, AttnFactor: 1}, nil
}

// ggufLongRope reads Phi's LongRoPE: the short factors up to the original
// context, the long ones from there on (transformers' rule, which wick's
// safetensors conversion follows; llama.cpp picks one set for the whole
// context it is run with), and the attention factor.
func ggufLongRope(f *gguf.File, m ggufMeta, cfg *model.Config) (model.LongRope, error) {
	long, err := ggufFactors(f, ropeFactorsLong, cfg)
	if err != nil {
		return model.LongRope{}, err
	}
	short, err := ggufFactors(f, ropeFactorsShort, cfg)
	if err != nil {
		return model.LongRope{}, err
	}
	orig, err := m.int("rope.scaling.original_context_length")
	if err != nil {
		return model.LongRope{}, err
	}
	attn, err := m.float("rope.scaling.attn_factor", 1)
	if err != nil {
		return model.LongRope{}, err
	}
	if !(attn > 0) || math.IsInf(attn, 0) {
		return model.LongRope{}, fmt.Errorf("metadata %s.rope.scaling.attn_factor %v: must be positive", m.arch, attn)
	}
	return model.LongRope{ShortFactor: short, LongFactor: long, OriginalContext: orig, AttnFactor: attn}, nil
}
