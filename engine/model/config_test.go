package model_test

import (
	"math"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *model.Config)
		want   string // substring of the error; "" means valid
	}{
		{"cai-shaped is valid", func(c *model.Config) {}, ""},
		{"zero heads", func(c *model.Config) { c.Heads = 0 }, "heads is 0"},
		{"zero kv heads", func(c *model.Config) { c.KVHeads = 0 }, "kv_heads is 0"},
		{"heads not a multiple of kv heads", func(c *model.Config) { c.KVHeads = 3 }, "not a multiple"},
		{"no layers", func(c *model.Config) { c.Layers = nil }, "layers is 0"},
		{"odd head dim", func(c *model.Config) { c.HeadDim = 15 }, "odd"},
		{"local window 0", func(c *model.Config) { c.Layers[2].Window = 0 }, "layer 2 is local with window 0"},
		{"global with window", func(c *model.Config) { c.Layers[5].Window = 4 }, "layer 5 is global but has window 4"},
		{"reads a later layer", func(c *model.Config) { c.Layers[0].KVSource = 1 }, "layer 0 reads KV from layer 1"},
		{"reads a layer of another kind", func(c *model.Config) { c.Layers[5].KVSource = 4 }, "of another kind"},
		{"reads a consumer", func(c *model.Config) { c.Layers[2].KVSource = 1 }, "itself a consumer"},
		{"reads another window", func(c *model.Config) { c.Layers[1].Window = 16 }, "of another kind"},
		{"negative kv source", func(c *model.Config) { c.Layers[3].KVSource = -1 }, "reads KV from layer -1"},
		{"nan rope theta", func(c *model.Config) { c.RopeThetaGlobal = math.NaN() }, "rope_theta_global"},
		{"nan local theta", func(c *model.Config) { c.RopeThetaLocal = math.NaN() }, "rope_theta_local"},
		{"missing local theta", func(c *model.Config) { c.RopeThetaLocal = 0 }, "rope_theta_local"},
		{"negative softcap", func(c *model.Config) { c.FinalSoftcap = -1 }, "final_softcap"},
		{"nan rope scaling", func(c *model.Config) { c.RopeScaling.Factor = math.NaN() }, "rope_scaling.factor"},
		{"bad rope scaling", func(c *model.Config) {
			c.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 4, HighFreqFactor: 1, OriginalContext: 8192}
		}, "rope_scaling"},
		{"longrope factors of the wrong length", func(c *model.Config) {
			c.LongRope = longRope(c.Rotary()/2 + 1)
		}, "long_rope.short_factor has"},
		{"longrope factor zero", func(c *model.Config) {
			c.LongRope = longRope(c.Rotary() / 2)
			c.LongRope.LongFactor[1] = 0
		}, "long_rope.long_factor[1] is 0"},
		{"longrope without attn factor", func(c *model.Config) {
			c.LongRope = longRope(c.Rotary() / 2)
			c.LongRope.AttnFactor = math.NaN()
		}, "long_rope.attn_factor"},
		{"longrope with llama3 scaling", func(c *model.Config) {
			c.LongRope = longRope(c.Rotary() / 2)
			c.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
		}, "both set"},
		{"longrope", func(c *model.Config) { c.LongRope = longRope(c.Rotary() / 2) }, ""},
		{"llama3 rope scaling", func(c *model.Config) {
			c.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
		}, ""},
		{"unknown dtype", func(c *model.Config) { c.DType = 7 }, "unknown dtype"},
		{"huge vocab", func(c *model.Config) { c.Vocab = 1 << 30 }, "above the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testmodel.CAIShaped(100, model.Int8)
			tc.change(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestKVReduction checks the KV accounting against a count by hand for the
// CAI-shaped test model: 7 producers, 6 of them local rings of 8 slots and
// 1 global, each slot one KV head of 16 int8 values plus a float32 scale,
// for K and V.
func TestKVReduction(t *testing.T) {
	c := testmodel.CAIShaped(100, model.Int8)
	// Producers: layers 0, 2, 4 (local), 5 (global), 6, 8, 10 (local).
	const perSlot = 2 * (16 + 4)
	for _, ctx := range []int{4, 8, 100, 1024} {
		want := int64(6*min(ctx, 8)*perSlot + ctx*perSlot)
		if got := c.KVBytes(ctx); got != want {
			t.Errorf("KVBytes(%d) = %d, want %d", ctx, got, want)
		}
	}
	// Baseline: 12 layers, all global, 4 heads of 16 int8 + scale, K and V.
	if got, want := c.BaselineKVBytes(1024), int64(12*1024*2*4*(16+4)); got != want {
		t.Errorf("BaselineKVBytes(1024) = %d, want %d", got, want)
	}
	if r := float64(c.BaselineKVBytes(1024)) / float64(c.KVBytes(1024)); r < 20 {
		t.Errorf("reduction at 1024 is %.1fx; the design promises more than 20x", r)
	}
	f := testmodel.Plain(100, model.F32)
	if got, want := f.KVBytes(10), int64(4*10*2*2*12*4); got != want {
		t.Errorf("plain f32 KVBytes(10) = %d, want %d", got, want)
	}
}

func TestRopeFreqsLlama3Scaling(t *testing.T) {
	c := testmodel.Plain(100, model.F32)
	c.HeadDim, c.RopeThetaGlobal = 128, 500000
	plain := c.RopeFreqs(model.Global)
	c.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
	scaled := c.RopeFreqs(model.Global)
	if scaled[0] != plain[0] {
		t.Errorf("highest frequency changed: %g -> %g", plain[0], scaled[0])
	}
	last := len(plain) - 1
	if math.Abs(scaled[last]-plain[last]/8) > 1e-15 {
		t.Errorf("lowest frequency %g, want %g / 8", scaled[last], plain[last])
	}
}

// longRope is LongRoPE scaling with n factors of each kind.
func longRope(n int) model.LongRope {
	l := model.LongRope{OriginalContext: 64, AttnFactor: 1.5}
	for i := 0; i < n; i++ {
		l.ShortFactor = append(l.ShortFactor, 1+0.05*float64(i))
		l.LongFactor = append(l.LongFactor, 1+0.5*float64(i))
	}
	return l
}

// TestLongRope checks the cos|sin table of LongRoPE against values derived
// from transformers 5.17's _compute_longrope_parameters and its dynamic
// update, for the phi35 fixture's settings (head_dim 16, theta 1e4,
// max_position_embeddings 512, original_max_position_embeddings 64, the
// fixture's short and long factors): a forward whose longest position is
// p uses long_factor when p+1 > 64 and short_factor otherwise, inv_freq[i]
// = 1/(factor[i] * 1e4^(2i/16)), and cos and sin are multiplied by
// sqrt(1 + ln(512/64)/ln(64)) = sqrt(1.5). The wanted values were computed
// from that formula in float64 (Python's math module), independently of
// this package. The fixture's own positions (0..63) never reach the long
// factors, so this is what checks them.
func TestLongRope(t *testing.T) {
	c := testmodel.Plain(512, model.F32)
	c.HeadDim, c.RotaryDim, c.RopeThetaGlobal = 16, 0, 1e4
	c.LongRope = longRope(8)
	c.LongRope.AttnFactor = math.Sqrt(1 + math.Log(8)/math.Log(64))
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r := c.Rope(model.Global)
	for _, tc := range []struct {
		pos      int
		pair     int
		cos, sin float64
	}{
		{63, 1, 1.215324415386775, 0.15161320973052797}, // the last short position
		{63, 7, 1.2246115127036103, 0.018073266273006133},
		{64, 1, 0.7361015839338159, 0.9788536448980139}, // the first long one
		{64, 7, 1.224732484856929, 0.00550822441193908},
		{300, 1, 1.1214249544696315, 0.4923475109034114},
		{300, 7, 1.2244727159446684, 0.025817976432849034},
	} {
		tab := make([]float32, 16)
		r.CosSin(tab, tc.pos)
		gc, gs := float64(tab[tc.pair]), float64(tab[8+tc.pair])
		if math.Abs(gc-tc.cos) > 1e-6 || math.Abs(gs-tc.sin) > 1e-6 {
			t.Errorf("position %d pair %d: cos, sin %.9g, %.9g; transformers' formula %.9g, %.9g", tc.pos, tc.pair, gc, gs, tc.cos, tc.sin)
		}
	}
}
