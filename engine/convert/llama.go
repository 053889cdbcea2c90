package convert

import (
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// llama converts LlamaForCausalLM checkpoints: grouped-query attention,
// SwiGLU, a tied or untied head, and Llama 3's RoPE scaling. transformers'
// Llama checkpoints already permute q and k for the rotate-half RoPE pairs
// (i, i+head_dim/2) that wick uses, so weights are copied as they are.
var llama = family{
	config: llamaConfig,
	layerTensors: map[string]string{
		model.NameAttnNorm: "input_layernorm.weight",
		model.NameWQ:       "self_attn.q_proj.weight",
		model.NameWK:       "self_attn.k_proj.weight",
		model.NameWV:       "self_attn.v_proj.weight",
		model.NameWO:       "self_attn.o_proj.weight",
		// Llama's post_attention_layernorm is the norm before the FFN.
		model.NameFFNNorm: "post_attention_layernorm.weight",
		model.NameWGate:   "mlp.gate_proj.weight",
		model.NameWUp:     "mlp.up_proj.weight",
		model.NameWDown:   "mlp.down_proj.weight",
	},
	chat: llamaChat,
}

// llamaConfig maps a LlamaConfig. Defaults are LlamaConfig's.
func llamaConfig(c *hfConfig) (*model.Config, error) {
	for _, r := range []struct {
		key     string
		allowed []string
	}{
		{"hidden_act", []string{`"silu"`}},
		{"attention_bias", []string{"false"}},
		{"mlp_bias", []string{"false"}},
	} {
		if err := c.refuse(r.key, r.allowed...); err != nil {
			return nil, err
		}
	}
	cfg := &model.Config{Activation: model.SwiGLU}
	var err error
	ints := []struct {
		dst *int
		key string
		def int
	}{
		{&cfg.Vocab, "vocab_size", 32000},
		{&cfg.Hidden, "hidden_size", 4096},
		{&cfg.FFNHidden, "intermediate_size", 11008},
		{&cfg.Heads, "num_attention_heads", 32},
		{&cfg.ContextLen, "max_position_embeddings", 2048},
	}
	for _, f := range ints {
		if *f.dst, err = c.intOr(f.key, f.def); err != nil {
			return nil, err
		}
	}
	if cfg.KVHeads, err = c.intOr("num_key_value_heads", cfg.Heads); err != nil {
		return nil, err
	}
	if cfg.Heads == 0 || cfg.Hidden%cfg.Heads != 0 && !c.set("head_dim") {
		return nil, c.errf("num_attention_heads", "%d does not divide hidden_size %d, and there is no head_dim", cfg.Heads, cfg.Hidden)
	}
	if cfg.HeadDim, err = c.intOr("head_dim", cfg.Hidden/cfg.Heads); err != nil {
		return nil, err
	}
	if cfg.NormEps, err = c.floatOr("rms_norm_eps", 1e-6); err != nil {
		return nil, err
	}
	if cfg.TiedEmbedding, err = c.boolOr("tie_word_embeddings", false); err != nil {
		return nil, err
	}
	layers, err := c.intOr("num_hidden_layers", 32)
	if err != nil {
		return nil, err
	}
	for i := 0; i < layers; i++ {
		cfg.Layers = append(cfg.Layers, model.Layer{Kind: model.Global, KVSource: i})
	}

	// transformers 5 writes rope_parameters (rope_theta inside); older
	// configs have rope_theta beside rope_scaling.
	theta, err := c.floatOr("rope_theta", 10000)
	if err != nil {
		return nil, err
	}
	rp, err := c.sub("rope_parameters")
	if err != nil {
		return nil, err
	}
	if rp == nil {
		if rp, err = c.sub("rope_scaling"); err != nil {
			return nil, err
		}
	}
	p, err := parseRope(rp, theta)
	if err != nil {
		return nil, err
	}
	cfg.RopeThetaGlobal = p.theta
	s := p.scaling
	cfg.RopeScaling = model.RopeScaling{Factor: s.factor, LowFreqFactor: s.low, HighFreqFactor: s.high, OriginalContext: s.original}
	if p.long.short != nil {
		if cfg.LongRope, err = longRopeConfig(c, p.long, cfg.ContextLen); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// longRopeConfig completes LongRoPE scaling as transformers 5's
// _compute_longrope_parameters does: the original (pretrained) context is
// rope_parameters' original_max_position_embeddings, else the top-level one
// (transformers 4 configs keep it there), else max_position_embeddings;
// the scaling factor is the stated factor, else max_position_embeddings
// over the original context; and cos and sin are multiplied by the stated
// attention_factor, else sqrt(1 + ln(factor)/ln(original)) when the factor
// exceeds 1, else 1. The factor lists' lengths are checked against the
// rotated dimensions by model.Config.Validate.
func longRopeConfig(c *hfConfig, l longRope, context int) (model.LongRope, error) {
	orig := l.original
	if orig == 0 {
		var err error
		if orig, err = c.intOr("original_max_position_embeddings", context); err != nil {
			return model.LongRope{}, err
		}
	}
	if orig <= 1 {
		return model.LongRope{}, c.errf("original_max_position_embeddings", "%d: LongRoPE needs an original context above 1", orig)
	}
	factor := l.factor
	if factor == 0 {
		factor = float64(context) / float64(orig)
	}
	attn := l.attn
	if attn == 0 {
		attn = 1
		if factor > 1 {
			attn = math.Sqrt(1 + math.Log(factor)/math.Log(float64(orig)))
		}
	}
	return model.LongRope{ShortFactor: l.short, LongFactor: l.long, OriginalContext: orig, AttnFactor: attn}, nil
}

// llamaChat is Llama 2's [INST] template, built from config.json's bos and
// eos ids, for checkpoints without a chat template in tokenizer_config.json
// (Llama 3, Llama 3.2 and SmolLM2 have one, which is compiled instead).
func llamaChat(c *hfConfig, tok *tokenizer.Tokenizer) (*manifestpb.ChatTemplate, error) {
	id := func(key, piece string) (int32, error) {
		ids, err := c.ints(key)
		if err != nil {
			return 0, err
		}
		if len(ids) > 0 {
			return int32(ids[0]), nil
		}
		v, ok := tok.ID(piece)
		if !ok {
			return 0, fmt.Errorf("%s: no %q, and tokenizer %s has no %s piece", c.path, key, tok.Name(), piece)
		}
		return v, nil
	}
	bos, err := id("bos_token_id", "<s>")
	if err != nil {
		return nil, err
	}
	eos, err := id("eos_token_id", "</s>")
	if err != nil {
		return nil, err
	}
	return chat.Llama2ChatTemplate(tok, bos, eos)
}
