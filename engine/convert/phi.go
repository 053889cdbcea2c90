package convert

import (
	"maps"
	"math"

	"github.com/wick-run/wick/engine/model"
)

// phi3 converts Phi3ForCausalLM checkpoints (Phi-3, Phi-3.5-mini,
// Phi-4-mini): Llama's computation with q, k and v stacked in one qkv_proj
// and gate and up in one gate_up_proj (split by rows here, gate first as
// transformers' chunk(2) takes it), a partial rotary factor (Phi-4-mini's
// 0.75: wick's RotaryDim), and a sliding window on every layer where the
// config sets one shorter than the context. LongRoPE scaling (Phi-3.5-mini,
// Phi-4-mini's long context) is read by the Llama mapping (parseRope) into
// model.Config.LongRope, which every backend applies.
var phi3 = family{
	config: phi3Config,
	layerTensors: func() map[string]string {
		m := maps.Clone(llama.layerTensors)
		for _, n := range []string{model.NameWQ, model.NameWK, model.NameWV, model.NameWGate, model.NameWUp} {
			delete(m, n)
		}
		return m
	}(),
	fused: map[string]fusedPart{
		model.NameWQ: {"self_attn.qkv_proj.weight", func(c *model.Config) (int, int, int) {
			return 0, c.QDim(), c.QDim() + 2*c.KVDim()
		}},
		model.NameWK: {"self_attn.qkv_proj.weight", func(c *model.Config) (int, int, int) {
			return c.QDim(), c.QDim() + c.KVDim(), c.QDim() + 2*c.KVDim()
		}},
		model.NameWV: {"self_attn.qkv_proj.weight", func(c *model.Config) (int, int, int) {
			return c.QDim() + c.KVDim(), c.QDim() + 2*c.KVDim(), c.QDim() + 2*c.KVDim()
		}},
		model.NameWGate: {"mlp.gate_up_proj.weight", func(c *model.Config) (int, int, int) {
			return 0, c.FFNHidden, 2 * c.FFNHidden
		}},
		model.NameWUp: {"mlp.gate_up_proj.weight", func(c *model.Config) (int, int, int) {
			return c.FFNHidden, 2 * c.FFNHidden, 2 * c.FFNHidden
		}},
	},
	chat: llamaChat,
}

func phi3Config(c *hfConfig) (*model.Config, error) {
	// The partial rotary factor sits at the top level (transformers 4) or in
	// rope_parameters (5); it is taken out before the Llama mapping, which
	// refuses it.
	factor, err := c.floatOr("partial_rotary_factor", 1)
	if err != nil {
		return nil, err
	}
	delete(c.m, "partial_rotary_factor")
	for _, key := range []string{"rope_parameters", "rope_scaling"} {
		rp, err := c.sub(key)
		if err != nil {
			return nil, err
		}
		if rp != nil && rp.set("partial_rotary_factor") {
			if factor, err = rp.float("partial_rotary_factor"); err != nil {
				return nil, err
			}
			delete(rp.m, "partial_rotary_factor")
		}
	}
	cfg, err := llamaConfig(c)
	if err != nil {
		return nil, err
	}
	if !(factor > 0 && factor <= 1) {
		return nil, c.errf("partial_rotary_factor", "must be in (0, 1], got %v", factor)
	}
	rot := float64(cfg.HeadDim) * factor
	if rot != math.Trunc(rot) || int(rot)%2 != 0 {
		return nil, c.errf("partial_rotary_factor", "%v of head_dim %d is not an even number of dimensions", factor, cfg.HeadDim)
	}
	if int(rot) != cfg.HeadDim {
		cfg.RotaryDim = int(rot)
	}
	window, err := c.intOr("sliding_window", 0)
	if err != nil {
		return nil, err
	}
	if window > 0 && window < cfg.ContextLen {
		for i := range cfg.Layers {
			cfg.Layers[i].Kind, cfg.Layers[i].Window = model.Local, window
		}
	}
	return cfg, nil
}
