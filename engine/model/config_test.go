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
