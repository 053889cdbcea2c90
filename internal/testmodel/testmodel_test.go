package testmodel_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestPeaked checks that the test models' greedy choices have clear
// margins: int8 rounding between backends moves logits by far less than
// the median top-2 gap, so exact-token comparisons are meaningful.
func TestPeaked(t *testing.T) {
	for _, c := range []*model.Config{testmodel.CAIShaped(384, model.Int8), testmodel.Plain(384, model.F32)} {
		m, err := cpu.New(c, testmodel.Random(c, 1))
		if err != nil {
			t.Fatal(err)
		}
		seq, err := m.NewSequence(64)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 1))
		ids := make([]int32, 48)
		for i := range ids {
			ids[i] = int32(r.IntN(c.Vocab))
		}
		logits := make([]float32, len(ids)*c.Vocab)
		if err := seq.Forward(ids, 0, logits); err != nil {
			t.Fatal(err)
		}
		var margins []float32
		for p := range ids {
			margins = append(margins, testmodel.Margin(logits[p*c.Vocab:(p+1)*c.Vocab]))
		}
		slices.Sort(margins)
		median := margins[len(margins)/2]
		t.Logf("%v: top-2 margin min %.3f median %.3f", c.DType, margins[0], median)
		if median < 0.5 {
			t.Errorf("%v model: median top-2 margin %.3f, want at least 0.5", c.DType, median)
		}
		// Greedy decoding must wander: a model that repeats one token makes
		// every token comparison between backends trivially equal.
		seen := map[int32]bool{}
		next := ids[len(ids)-1]
		last := make([]float32, c.Vocab)
		for p := len(ids); p < 64; p++ {
			if err := seq.Forward([]int32{next}, p, last); err != nil {
				t.Fatal(err)
			}
			next = int32(slices.Index(last, slices.Max(last)))
			seen[next] = true
		}
		t.Logf("%v: %d distinct greedy tokens in 16 steps", c.DType, len(seen))
		if len(seen) < 5 {
			t.Errorf("%v model: greedy decoding visits only %d distinct tokens in 16 steps", c.DType, len(seen))
		}
	}
}

func TestMargin(t *testing.T) {
	if got := testmodel.Margin([]float32{1, 5, 3, 4.5}); got != 0.5 {
		t.Errorf("Margin = %v, want 0.5", got)
	}
}
