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
	w, slots := c.Layers[0].Window, lay.Regions[0].Slots
	if !lay.Regions[0].Ring || slots != w+kv.RingRoom {
		t.Fatalf("layer 0's region: ring %v of %d slots, want a ring of the window %d and RingRoom %d", lay.Regions[0].Ring, slots, w, kv.RingRoom)
	}
	rewound := 0 // the most positions taken back past a wrapped ring
	for from := 0; from <= 40; from++ {
		holds := make([]int, slots)
		for i := range holds {
			holds[i] = -1
		}
		for p := 0; p < from; p++ {
			holds[p%slots] = p
		}
		for to := 0; to <= from; to++ {
			want := true
			for j := max(0, to-w+1); j < to; j++ {
				if holds[j%slots] != j {
					want = false
				}
			}
			if got := lay.CanRewind(from, to); got != want {
				t.Fatalf("CanRewind(%d, %d) = %v, simulation says %v", from, to, got, want)
			}
			if want && from > slots && to >= w {
				rewound = max(rewound, from-to)
			}
		}
	}
	// What the room is for: a device's batch that ran past a stop token
	// is taken back whole once the ring has wrapped.
	if rewound != kv.RingRoom+1 {
		t.Errorf("a wrapped ring takes back at most %d positions, want RingRoom+1 = %d", rewound, kv.RingRoom+1)
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
