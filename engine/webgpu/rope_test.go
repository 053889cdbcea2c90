package webgpu

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestRopeRowsAreCosSin checks that the kept RoPE rows are CosSin's,
// bit for bit, for runs of positions that grow the rows, reuse them,
// straddle the most kept and lie past it, from sessions at once.
func TestRopeRowsAreCosSin(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	var rope [2]model.Rope
	rope[model.Global], rope[model.Local] = cfg.Rope(model.Global), cfg.Rope(model.Local)
	hd := cfg.HeadDim
	r := newRopeRows(&rope, hd)
	r.max = 200 // small, so that runs pass it
	runs := [][2]int{{0, 5}, {5, 1}, {3, 70}, {0, 130}, {190, 10}, {195, 9}, {199, 40}, {400, 3}, {128, 1}}
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(runs)*len(rope)) // room for every failure: a full channel would block the test
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range runs {
				run := runs[(i+g)%len(runs)]
				start, n := run[0], run[1]
				for kind := range rope {
					got := r.table(kind, start, n, make([]float32, n*hd))
					want := make([]float32, n*hd)
					for p := range n {
						rope[kind].CosSin(want[p*hd:(p+1)*hd], start+p)
					}
					if !slices.Equal(got, want) {
						errs <- fmt.Errorf("kind %d, positions [%d, %d): rows differ from CosSin's", kind, start, start+n)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for kind := range rope {
		if kept := len(r.rows[kind]) / hd; kept != r.max {
			t.Errorf("kind %d: %d positions kept, want the most, %d", kind, kept, r.max)
		}
	}
}
