//go:build !js && !wasip1

package webgpu

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
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

// TestRopeCopiesAreCosSin checks the rows a step copies into its rope
// buffer from the model's rows on the GPU (copyRope): CosSin's, bit for
// bit, for runs that write more rows, reuse them and reach the last row
// kept, into a buffer poisoned before each; runs past the rows kept are
// not copied (the step writes them instead).
func TestRopeCopiesAreCosSin(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	d := device(t)
	m, s := gpuSequence(t, d, cfg, testmodel.Random(cfg, 3), Options{}, 64)
	m.ropeRows.max = 200 // small, so that runs reach it
	hd := cfg.HeadDim
	stride := int64(s.C*hd) * 4
	poison := slices.Repeat([]byte{0xff}, int(2*stride))
	for _, run := range [][2]int{{0, 5}, {5, 1}, {3, 60}, {60, 64}, {136, 64}, {199, 1}, {150, 50}, {190, 11}, {400, 3}} {
		start, n := run[0], run[1]
		if err := d.Write(s.rope, 0, poison); err != nil {
			t.Fatal(err)
		}
		var e gpu.Encoder
		copied := m.copyRope(&e, s.rope, stride, start, n)
		if want := start+n <= 200; copied != want {
			t.Errorf("positions [%d, %d): copied %v, want %v (the rows kept end at 200)", start, start+n, copied, want)
		}
		if !copied {
			continue
		}
		if err := d.Run(e.Bytes()); err != nil {
			t.Fatal(err)
		}
		got, err := gpu.ReadSync(d, s.rope, 0, 2*stride)
		if err != nil {
			t.Fatal(err)
		}
		for kind := range m.rope {
			want := make([]float32, n*hd)
			for p := range n {
				m.rope[kind].CosSin(want[p*hd:(p+1)*hd], start+p)
			}
			if at := int64(kind) * stride; !slices.Equal(got[at:at+int64(4*n*hd)], f32bytes(want)) {
				t.Errorf("kind %d, positions [%d, %d): the rows copied are not CosSin's", kind, start, start+n)
			}
		}
	}
}
