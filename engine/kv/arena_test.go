package kv_test

import (
	"testing"

	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestCanRewindMatchesSimulation checks CanRewind against a direct
// simulation of a ring: which position each slot holds after writing
// [0, from), and whether every position attention at `to` needs is there.
func TestCanRewindMatchesSimulation(t *testing.T) {
	c := testmodel.CAIShaped(50, model.Int8)
	lay, err := kv.NewLayout(c, 64)
	if err != nil {
		t.Fatal(err)
	}
	w := c.Layers[0].Window
	for from := 0; from <= 40; from++ {
		holds := make([]int, w)
		for i := range holds {
			holds[i] = -1
		}
		for p := 0; p < from; p++ {
			holds[p%w] = p
		}
		for to := 0; to <= from; to++ {
			want := true
			for j := max(0, to-w+1); j < to; j++ {
				if holds[j%w] != j {
					want = false
				}
			}
			if got := lay.CanRewind(from, to); got != want {
				t.Fatalf("CanRewind(%d, %d) = %v, simulation says %v", from, to, got, want)
			}
		}
	}
	global, err := kv.NewLayout(testmodel.Plain(50, model.F32), 64)
	if err != nil {
		t.Fatal(err)
	}
	if !global.CanRewind(60, 3) {
		t.Error("an all-global layout must always rewind")
	}
}

func TestLayout(t *testing.T) {
	c := testmodel.CAIShaped(50, model.Int8)
	lay, err := kv.NewLayout(c, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range lay.Regions {
		for _, off := range []int64{r.K, r.V, r.KScale, r.VScale} {
			if off%kv.Align != 0 {
				t.Errorf("region %d: offset %d not aligned to %d", i, off, kv.Align)
			}
		}
		if r.Ring != (c.Layers[r.Layer].Kind == model.Local) {
			t.Errorf("region %d (layer %d): ring %v", i, r.Layer, r.Ring)
		}
	}
	for l := range c.Layers {
		if got, want := lay.Regions[lay.OfLayer[l]].Layer, c.Layers[l].KVSource; got != want {
			t.Errorf("layer %d reads the region of layer %d, want %d", l, got, want)
		}
	}
	if _, err := kv.NewLayout(c, c.ContextLen+1); err == nil {
		t.Error("a context above context_len was accepted")
	}
}
