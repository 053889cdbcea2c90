package convert

import (
	"fmt"
	"maps"
	"math"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// gemma3 converts Gemma3ForCausalLM checkpoints (Gemma 3 270M and 1B; the
// larger Gemma 3 models are Gemma3ForConditionalGeneration, with a vision
// tower and linear RoPE scaling, and are refused).
//
// Gemma 3 is close to the Character.AI design already: one KV head, five
// sliding-window layers per global one. transformers' sliding window W lets
// the query at p attend to keys p-W+1..p (masking_utils'
// sliding_window_overlay: kv_idx > q_idx - W), which is wick's Window; the
// parity fixture (window 8, prompt 40) pins it.
var gemma3 = family{
	config: gemma3Config,
	layerTensors: map[string]string{
		model.NameAttnNorm:     "input_layernorm.weight",
		model.NameWQ:           "self_attn.q_proj.weight",
		model.NameWK:           "self_attn.k_proj.weight",
		model.NameWV:           "self_attn.v_proj.weight",
		model.NameQNorm:        "self_attn.q_norm.weight",
		model.NameKNorm:        "self_attn.k_norm.weight",
		model.NameWO:           "self_attn.o_proj.weight",
		model.NamePostAttnNorm: "post_attention_layernorm.weight",
		model.NameFFNNorm:      "pre_feedforward_layernorm.weight",
		model.NameWGate:        "mlp.gate_proj.weight",
		model.NameWUp:          "mlp.up_proj.weight",
		model.NameWDown:        "mlp.down_proj.weight",
		model.NamePostFFNNorm:  "post_feedforward_layernorm.weight",
	},
	builtinChat: true,
	chat: func(_ *hfConfig, tok *tokenizer.Tokenizer) (*manifestpb.ChatTemplate, error) {
		return chat.GemmaChatTemplate(tok)
	},
}

// gemma2 converts Gemma2ForCausalLM checkpoints: Gemma 3's layout without
// the QK-norm, with an attention-logit soft-cap (wick's AttnSoftcap), one
// RoPE base for both kinds of layer, and sliding and full layers
// alternating (sliding first) unless layer_types says otherwise. Its chat
// format is Gemma's, as for Gemma 3.
var gemma2 = family{
	config:       func(c *hfConfig) (*model.Config, error) { return gemmaConfig(c, 2) },
	layerTensors: gemma2Tensors(),
	builtinChat:  true,
	chat:         gemma3.chat,
}

func gemma2Tensors() map[string]string {
	m := maps.Clone(gemma3.layerTensors)
	delete(m, model.NameQNorm)
	delete(m, model.NameKNorm)
	return m
}

// gemma3Config maps a Gemma3TextConfig. Defaults are Gemma3TextConfig's.
func gemma3Config(c *hfConfig) (*model.Config, error) { return gemmaConfig(c, 3) }

// gemmaConfig maps a Gemma2Config (gen 2) or Gemma3TextConfig (gen 3).
func gemmaConfig(c *hfConfig, gen int) (*model.Config, error) {
	softcapAllowed := []string{"null"}
	if gen == 2 {
		softcapAllowed = nil // read below
	}
	for _, r := range []struct {
		key     string
		allowed []string
	}{
		{"attn_logit_softcapping", softcapAllowed},
		{"attention_bias", []string{"false"}},
		{"use_bidirectional_attention", []string{"false", "null"}},
		{"hidden_activation", []string{`"gelu_pytorch_tanh"`}},
		{"hidden_act", []string{`"gelu_pytorch_tanh"`, "null"}},
		{"rope_scaling", []string{"null"}},
	} {
		if r.allowed == nil {
			continue
		}
		if err := c.refuse(r.key, r.allowed...); err != nil {
			return nil, err
		}
	}
	cfg := &model.Config{
		NormOnePlus: true, QKNorm: gen == 3, PostAttnNorm: true, PostFFNNorm: true,
		Activation: model.GeGLUTanh,
	}
	var err error
	ints := []struct {
		dst *int
		key string
		def int
	}{
		{&cfg.Vocab, "vocab_size", 262208},
		{&cfg.Hidden, "hidden_size", 2304},
		{&cfg.FFNHidden, "intermediate_size", 9216},
		{&cfg.Heads, "num_attention_heads", 8},
		{&cfg.KVHeads, "num_key_value_heads", 4},
		{&cfg.HeadDim, "head_dim", 256},
		{&cfg.ContextLen, "max_position_embeddings", 131072},
	}
	for _, f := range ints {
		if *f.dst, err = c.intOr(f.key, f.def); err != nil {
			return nil, err
		}
	}
	if cfg.NormEps, err = c.floatOr("rms_norm_eps", 1e-6); err != nil {
		return nil, err
	}
	if cfg.TiedEmbedding, err = c.boolOr("tie_word_embeddings", true); err != nil {
		return nil, err
	}
	qpas, err := c.floatOr("query_pre_attn_scalar", 256)
	if err != nil {
		return nil, err
	}
	if !(qpas > 0) {
		return nil, c.errf("query_pre_attn_scalar", "must be positive, got %v", qpas)
	}
	cfg.AttnScale = 1 / math.Sqrt(qpas)
	// transformers multiplies embeddings by sqrt(hidden) cast to the weights'
	// dtype; the float32 reference is float32(sqrt(hidden)), as here.
	cfg.EmbedScale = math.Sqrt(float64(cfg.Hidden))
	if cfg.FinalSoftcap, err = c.floatOr("final_logit_softcapping", 0); err != nil {
		return nil, err
	}
	if gen == 2 {
		if cfg.AttnSoftcap, err = c.floatOr("attn_logit_softcapping", 0); err != nil {
			return nil, err
		}
	}

	layers, err := c.intOr("num_hidden_layers", 26)
	if err != nil {
		return nil, err
	}
	kinds, err := gemma3LayerTypes(c, layers, map[int]int{2: 2, 3: 6}[gen])
	if err != nil {
		return nil, err
	}
	window, err := c.intOr("sliding_window", 4096)
	if err != nil {
		return nil, err
	}
	for i, k := range kinds {
		l := model.Layer{Kind: model.Global, KVSource: i}
		switch k {
		case "sliding_attention":
			l.Kind, l.Window = model.Local, window
		case "full_attention":
		default:
			return nil, c.errf("layer_types", "layer %d is %q; wick supports sliding_attention and full_attention", i, k)
		}
		cfg.Layers = append(cfg.Layers, l)
	}

	var global, local float64
	if gen == 2 {
		global, err = singleRope(c)
		local = global
	} else {
		global, local, err = gemma3Rope(c)
	}
	if err != nil {
		return nil, err
	}
	cfg.RopeThetaGlobal, cfg.RopeThetaLocal = global, local
	return cfg, nil
}

// gemma3LayerTypes reads layer_types, or derives them from the older
// sliding_window_pattern (every pattern-th layer global) as transformers does.
func gemma3LayerTypes(c *hfConfig, layers, defaultPattern int) ([]string, error) {
	kinds, err := c.strings("layer_types")
	if err != nil {
		return nil, err
	}
	if kinds != nil {
		if len(kinds) != layers {
			return nil, c.errf("layer_types", "%d entries for num_hidden_layers %d", len(kinds), layers)
		}
		return kinds, nil
	}
	key := "sliding_window_pattern"
	if !c.set(key) {
		key = "_sliding_window_pattern"
	}
	pattern, err := c.intOr(key, defaultPattern)
	if err != nil {
		return nil, err
	}
	if pattern < 1 {
		return nil, c.errf(key, "must be at least 1, got %d", pattern)
	}
	kinds = make([]string, layers)
	for i := range kinds {
		kinds[i] = "sliding_attention"
		if (i+1)%pattern == 0 {
			kinds[i] = "full_attention"
		}
	}
	return kinds, nil
}

// gemma3Rope reads the two RoPE bases: transformers 5's rope_parameters per
// layer type, or the older rope_theta and rope_local_base_freq. Gemma's
// scaled RoPE (linear, in the 4B+ models) is refused by parseRope.
func gemma3Rope(c *hfConfig) (global, local float64, err error) {
	if global, err = c.floatOr("rope_theta", 1e6); err != nil {
		return 0, 0, err
	}
	if local, err = c.floatOr("rope_local_base_freq", 1e4); err != nil {
		return 0, 0, err
	}
	rp, err := c.sub("rope_parameters")
	if err != nil || rp == nil {
		return global, local, err
	}
	if rp.set("rope_type") || rp.set("rope_theta") {
		return 0, 0, fmt.Errorf("%s: want one entry per layer type (full_attention, sliding_attention), got a single setting", rp.path)
	}
	for _, t := range []struct {
		kind string
		dst  *float64
	}{{"full_attention", &global}, {"sliding_attention", &local}} {
		sub, err := rp.sub(t.kind)
		if err != nil {
			return 0, 0, err
		}
		p, err := parseRope(sub, *t.dst)
		if err != nil {
			return 0, 0, err
		}
		if p.scaling != (ropeScaling{}) {
			return 0, 0, fmt.Errorf("%s: unsupported option: llama3 rope scaling on a Gemma 3 %s layer", rp.path, t.kind)
		}
		*t.dst = p.theta
	}
	return global, local, nil
}

// singleRope reads one RoPE base without scaling: rope_parameters (transformers
// 5) or rope_theta.
func singleRope(c *hfConfig) (float64, error) {
	theta, err := c.floatOr("rope_theta", 1e4)
	if err != nil {
		return 0, err
	}
	rp, err := c.sub("rope_parameters")
	if err != nil {
		return 0, err
	}
	if rp == nil {
		if rp, err = c.sub("rope_scaling"); err != nil {
			return 0, err
		}
	}
	p, err := parseRope(rp, theta)
	if err != nil {
		return 0, err
	}
	if p.scaling != (ropeScaling{}) {
		return 0, fmt.Errorf("%s: unsupported option: rope scaling on a Gemma 2 model", c.path)
	}
	return p.theta, nil
}
