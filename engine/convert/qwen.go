package convert

import (
	"maps"

	"github.com/wick-run/wick/engine/model"
)

// qwen2 converts Qwen2ForCausalLM checkpoints (Qwen 2 and 2.5): Llama's
// layout with a bias on the q, k and v projections (wick's QKVBias; Qwen2
// has no attention_bias option, the biases are always there).
var qwen2 = family{
	config: qwen2Config,
	layerTensors: func() map[string]string {
		m := maps.Clone(llama.layerTensors)
		m[model.NameBQ] = "self_attn.q_proj.bias"
		m[model.NameBK] = "self_attn.k_proj.bias"
		m[model.NameBV] = "self_attn.v_proj.bias"
		return m
	}(),
	chat: llamaChat,
}

func qwen2Config(c *hfConfig) (*model.Config, error) {
	if err := refuseQwenWindows(c); err != nil {
		return nil, err
	}
	cfg, err := llamaConfig(c)
	if err != nil {
		return nil, err
	}
	cfg.QKVBias = true
	return cfg, nil
}

// qwen3 converts Qwen3ForCausalLM checkpoints: Llama's layout with an
// RMSNorm over each query and key head before RoPE (q_norm, k_norm, with
// plain weights: wick's QKNorm without NormOnePlus), head_dim independent of
// hidden_size, and no biases. Qwen's sliding-window option (off in every
// released Qwen3) is refused.
var qwen3 = family{
	config: qwen3Config,
	layerTensors: func() map[string]string {
		m := maps.Clone(llama.layerTensors)
		m[model.NameQNorm] = "self_attn.q_norm.weight"
		m[model.NameKNorm] = "self_attn.k_norm.weight"
		return m
	}(),
	chat: llamaChat,
}

func qwen3Config(c *hfConfig) (*model.Config, error) {
	if err := refuseQwenWindows(c); err != nil {
		return nil, err
	}
	cfg, err := llamaConfig(c)
	if err != nil {
		return nil, err
	}
	cfg.QKNorm = true
	return cfg, nil
}

// refuseQwenWindows refuses Qwen's sliding-window attention, which
// transformers applies only with use_sliding_window, to layers from
// max_window_layers on, and which no released Qwen 2.5 or 3 turns on.
func refuseQwenWindows(c *hfConfig) error {
	if err := c.refuse("use_sliding_window", "false", "null"); err != nil {
		return err
	}
	types, err := c.strings("layer_types")
	if err != nil {
		return err
	}
	for i, t := range types {
		if t != "full_attention" {
			return c.errf("layer_types", "layer %d is %q; wick converts Qwen models with full attention only", i, t)
		}
	}
	return nil
}
