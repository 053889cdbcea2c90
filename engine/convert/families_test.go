package convert

import (
	"math"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/model"
)

// Config files as published for real checkpoints, written by transformers 4
// (rope_theta, rope_scaling and the older keys, not rope_parameters): the
// parity fixtures cover transformers 5's form.
const (
	gemma3_270mConfig = `{
  "_sliding_window_pattern": 6,
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": null,
  "bos_token_id": 2, "eos_token_id": 1, "final_logit_softcapping": null,
  "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
  "initializer_range": 0.02, "intermediate_size": 2048,
  "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention",
    "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention",
    "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 32768, "model_type": "gemma3_text",
  "num_attention_heads": 4, "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
  "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 512,
  "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0",
  "use_bidirectional_attention": false, "use_cache": true, "vocab_size": 262144
}`
	gemma3_1bPatternConfig = `{
  "architectures": ["Gemma3ForCausalLM"], "hidden_size": 1152, "intermediate_size": 6912,
  "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "num_hidden_layers": 26,
  "query_pre_attn_scalar": 256, "rope_theta": 1000000, "rope_local_base_freq": 10000,
  "sliding_window": 512, "sliding_window_pattern": 6, "vocab_size": 262144,
  "max_position_embeddings": 32768, "rope_scaling": null
}`
	llama32_1bConfig = `{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
}`
	llama2Config = `{
  "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
  "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "hidden_act": "silu", "tie_word_embeddings": false, "vocab_size": 32000
}`
)

func TestFamilyConfigs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		json  string
		check func(t *testing.T, c *model.Config)
	}{
		{"gemma 3 270m", gemma3_270mConfig, func(t *testing.T, c *model.Config) {
			checkGemmaLayers(t, c, 18, 512)
			want := model.Config{Vocab: 262144, Hidden: 640, Heads: 4, KVHeads: 1, HeadDim: 256, FFNHidden: 2048, ContextLen: 32768,
				RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4, NormEps: 1e-6, AttnScale: 1.0 / 16, EmbedScale: math.Sqrt(640), TiedEmbedding: true}
			checkScalars(t, c, &want)
			if !c.NormOnePlus || !c.QKNorm || !c.PostAttnNorm || !c.PostFFNNorm || c.Activation != model.GeGLUTanh || c.FinalSoftcap != 0 {
				t.Errorf("gemma flags: %+v", c)
			}
		}},
		{"gemma 3 sliding_window_pattern", gemma3_1bPatternConfig, func(t *testing.T, c *model.Config) {
			checkGemmaLayers(t, c, 26, 512)
		}},
		{"llama 3.2 1b", llama32_1bConfig, func(t *testing.T, c *model.Config) {
			want := model.Config{Vocab: 128256, Hidden: 2048, Heads: 32, KVHeads: 8, HeadDim: 64, FFNHidden: 8192, ContextLen: 131072,
				RopeThetaGlobal: 5e5, NormEps: 1e-5, TiedEmbedding: true,
				RopeScaling: model.RopeScaling{Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}}
			checkScalars(t, c, &want)
			if len(c.Layers) != 16 || c.Activation != model.SwiGLU || c.NormOnePlus || c.QKNorm {
				t.Errorf("llama shape: %d layers, %+v", len(c.Layers), c)
			}
		}},
		{"llama 2 7b", llama2Config, func(t *testing.T, c *model.Config) {
			want := model.Config{Vocab: 32000, Hidden: 4096, Heads: 32, KVHeads: 32, HeadDim: 128, FFNHidden: 11008, ContextLen: 4096,
				RopeThetaGlobal: 1e4, NormEps: 1e-5}
			checkScalars(t, c, &want)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc, err := parseHFConfig("config.json", []byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			_, fam, err := pickFamily(hc)
			if err != nil {
				t.Fatal(err)
			}
			c, err := fam.config(hc)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// checkGemmaLayers checks Gemma 3's pattern: five local layers of window
// w, then one global, each its own KV producer.
func checkGemmaLayers(t *testing.T, c *model.Config, n, w int) {
	t.Helper()
	if len(c.Layers) != n {
		t.Fatalf("%d layers, want %d", len(c.Layers), n)
	}
	for i, l := range c.Layers {
		want := model.Layer{Kind: model.Local, Window: w, KVSource: i}
		if i%6 == 5 {
			want = model.Layer{Kind: model.Global, KVSource: i}
		}
		if l != want {
			t.Errorf("layer %d is %+v, want %+v", i, l, want)
		}
	}
}

func checkScalars(t *testing.T, c, want *model.Config) {
	t.Helper()
	got := *c
	got.Layers, got.DType = nil, 0
	got.Activation, got.NormOnePlus, got.QKNorm, got.PostAttnNorm, got.PostFFNNorm, got.FinalSoftcap = 0, false, false, false, false, 0
	w := *want
	if math.Abs(got.AttnScale-w.AttnScale) < 1e-15 {
		got.AttnScale = w.AttnScale
	}
	if got.EmbedScale != w.EmbedScale || got.Vocab != w.Vocab || got.Hidden != w.Hidden || got.Heads != w.Heads ||
		got.KVHeads != w.KVHeads || got.HeadDim != w.HeadDim || got.FFNHidden != w.FFNHidden || got.ContextLen != w.ContextLen ||
		got.RopeThetaGlobal != w.RopeThetaGlobal || got.RopeThetaLocal != w.RopeThetaLocal || got.RopeScaling != w.RopeScaling ||
		got.NormEps != w.NormEps || got.AttnScale != w.AttnScale || got.TiedEmbedding != w.TiedEmbedding {
		t.Errorf("config\n got %+v\nwant %+v", got, w)
	}
}

// TestQwen3Refusals checks that Qwen3's sliding-window option, which no
// released model turns on and wick does not map, is refused by name.
func TestQwen3Refusals(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"architectures": ["Qwen3ForCausalLM"], "use_sliding_window": true}`, `"use_sliding_window" = true`},
		{`{"architectures": ["Qwen3ForCausalLM"], "layer_types": ["full_attention", "sliding_attention"]}`, `layer 1 is "sliding_attention"`},
		{`{"architectures": ["Qwen3ForCausalLM"], "attention_bias": true}`, `"attention_bias" = true`},
	} {
		c, err := parseHFConfig("config.json", []byte(tc.json))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := qwen3Config(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %s", tc.json, err, tc.want)
		}
	}
}

// TestGemma2Config checks the Gemma 2 mapping that the parity fixture does
// not pin: the default alternation of sliding and full layers (sliding
// first) when layer_types is absent, and the soft-caps.
func TestGemma2Config(t *testing.T) {
	c, err := parseHFConfig("config.json", []byte(`{"architectures": ["Gemma2ForCausalLM"], "num_hidden_layers": 4,
		"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
		"sliding_window": 16, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 32,
		"rope_theta": 10000.0, "vocab_size": 256}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gemma2.config(c)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range cfg.Layers {
		if wantLocal := i%2 == 0; (l.Kind == model.Local) != wantLocal || wantLocal && l.Window != 16 {
			t.Errorf("layer %d: %+v", i, l)
		}
	}
	if cfg.AttnSoftcap != 50 || cfg.FinalSoftcap != 30 || cfg.QKNorm || !cfg.NormOnePlus || cfg.RopeThetaLocal != cfg.RopeThetaGlobal {
		t.Errorf("config %+v", cfg)
	}
}
