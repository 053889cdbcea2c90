package cpu

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

const testVocab = 97

type testCase struct {
	name string
	cfg  *model.Config
}

func testCases() []testCase {
	return []testCase{
		{"cai-int8", testmodel.CAIShaped(testVocab, model.Int8)},
		{"cai-f32", testmodel.CAIShaped(testVocab, model.F32)},
		{"plain-int8", testmodel.Plain(testVocab, model.Int8)},
		{"plain-f32", testmodel.Plain(testVocab, model.F32)},
	}
}

func newModel(t *testing.T, c *model.Config) *Model {
	t.Helper()
	m, err := New(c, testmodel.Random(c, 7))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newArena(t *testing.T, c *model.Config, ctx int) *kv.Arena {
	t.Helper()
	lay, err := kv.NewLayout(c, ctx)
	if err != nil {
		t.Fatal(err)
	}
	return kv.NewArena(lay)
}

// TestDecodeMatchesRecompute runs a sequence several times longer than the
// window through the cache in uneven chunks (decode steps among them) and
// compares every position's logits with one prefill of the whole sequence.
// The per-token arithmetic is the same on both paths, so int8 logits must
// be identical (equal int32 accumulators); float32 within 1e-5 relative.
func TestDecodeMatchesRecompute(t *testing.T) {
	const n = 45 // window 8: more than five windows
	for _, tc := range testCases() {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, tc.cfg)
			ids := testmodel.Tokens(n, testVocab, 3)
			V := tc.cfg.Vocab
			want := make([]float32, n*V)
			if err := m.Forward(newArena(t, tc.cfg, 64), ids, 0, want); err != nil {
				t.Fatal(err)
			}
			a := newArena(t, tc.cfg, 64)
			pos := 0
			for i, size := range []int{1, 5, 1, 1, 13, 2, 1, 9, 1, 1, 10} {
				got := make([]float32, size*V)
				if err := m.Forward(a, ids[pos:pos+size], pos, got); err != nil {
					t.Fatal(err)
				}
				for j := range got {
					w := want[pos*V+j]
					tol := float32(0)
					if tc.cfg.DType == model.F32 {
						tol = 1e-5 * max(1, float32(math.Abs(float64(w))))
					}
					if d := float32(math.Abs(float64(got[j] - w))); d > tol || got[j] != got[j] {
						t.Fatalf("chunk %d: position %d token %d: cached %v, recomputed %v", i, pos+j/V, j%V, got[j], w)
					}
				}
				pos += size
			}
			if pos != n {
				t.Fatalf("chunks cover %d tokens, want %d", pos, n)
			}
		})
	}
}

// TestRingHoldsLastWindow checks that a local producer's ring, of its
// window and kv.RingRoom slots, holds exactly the KV of the last positions
// that fill them, each in slot pos % slots, and that decoding token by
// token leaves the same arena bytes as one prefill.
func TestRingHoldsLastWindow(t *testing.T) {
	c := testmodel.CAIShaped(testVocab, model.Int8)
	m := newModel(t, c)
	const n = 29
	ids := testmodel.Tokens(n, testVocab, 5)
	whole := newArena(t, c, 64)
	seen := map[int]*chunkKV{}
	m.observeKV = func(ri int, ck *chunkKV) { seen[ri] = ck }
	if err := m.Forward(whole, ids, 0, make([]float32, c.Vocab)); err != nil {
		t.Fatal(err)
	}
	m.observeKV = nil
	rings := 0
	for ri := range whole.Regions {
		r := &whole.Regions[ri]
		if !r.Ring {
			continue
		}
		rings++
		if want := c.Layers[r.Layer].Window + kv.RingRoom; r.Slots != want {
			t.Fatalf("region of layer %d has %d slots, want the window and kv.RingRoom, %d", r.Layer, r.Slots, want)
		}
		if n <= r.Slots {
			t.Fatalf("%d positions do not wrap a ring of %d slots", n, r.Slots)
		}
		ck := seen[ri]
		for slot := 0; slot < r.Slots; slot++ {
			// The one position among the last window that maps to this slot.
			pos := n - r.Slots + ((slot-(n-r.Slots))%r.Slots+r.Slots)%r.Slots
			got := whole.K(r, pos, 0)
			if !slices.Equal(got.I8, ck.kq[pos*c.HeadDim:(pos+1)*c.HeadDim]) || *got.Scale != ck.kScale[pos] {
				t.Errorf("layer %d slot %d: does not hold position %d", r.Layer, slot, pos)
			}
		}
	}
	if rings == 0 {
		t.Fatal("no ring regions in the CAI-shaped model")
	}
	stepped := newArena(t, c, 64)
	for p := 0; p < n; p++ {
		if err := m.Forward(stepped, ids[p:p+1], p, make([]float32, c.Vocab)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(whole.Buf, stepped.Buf) {
		t.Error("arena after token-by-token decode differs from the arena after one prefill")
	}
}

// TestConsumerReadsProducerKV checks cross-layer sharing: a consumer layer
// has no region of its own, its attention changes when its producer's KV is
// perturbed and not when another producer's is.
func TestConsumerReadsProducerKV(t *testing.T) {
	c := testmodel.CAIShaped(testVocab, model.Int8)
	m := newModel(t, c)
	a := newArena(t, c, 64)
	ids := testmodel.Tokens(20, testVocab, 9)
	if err := m.Forward(a, ids, 0, make([]float32, c.Vocab)); err != nil {
		t.Fatal(err)
	}
	producers := 0
	for i := range c.Layers {
		if c.Producer(i) {
			producers++
		}
	}
	if len(a.Regions) != producers {
		t.Fatalf("%d regions for %d producer layers: consumers must allocate no KV", len(a.Regions), producers)
	}
	if want := c.KVBytes(64); a.Bytes < want {
		t.Fatalf("arena of %d bytes is smaller than the KV of %d", a.Bytes, want)
	}
	for _, tc := range []struct{ consumer, producer, other int }{{1, 0, 2}, {11, 5, 0}} {
		if c.Layers[tc.consumer].KVSource != tc.producer || a.OfLayer[tc.consumer] != a.OfLayer[tc.producer] {
			t.Fatalf("layer %d should read layer %d's region", tc.consumer, tc.producer)
		}
		q := make([]float32, c.QDim())
		for i := range q {
			q[i] = float32(i%7) - 3
		}
		attend := func() []float32 {
			out := make([]float32, c.QDim())
			// One query at position 20 that reads only the arena (an empty chunk would
			// be read for position 20 itself, so give it one from a copy of position 19).
			r := a.Region(tc.consumer)
			prev := a.K(r, 19, 0)
			ck := &chunkKV{kq: append([]int8(nil), prev.I8...), vq: append([]int8(nil), a.V(r, 19, 0).I8...),
				kScale: []float32{*prev.Scale}, vScale: []float32{*a.V(r, 19, 0).Scale}}
			m.attend(out, q, a, r, ck, tc.consumer, 20, 1)
			return out
		}
		base := attend()
		other := a.Region(tc.other)
		a.K(other, 19, 0).I8[0] ^= 0x55
		if !equal(base, attend()) {
			t.Errorf("layer %d changed when layer %d's KV was perturbed", tc.consumer, tc.other)
		}
		a.K(a.Region(tc.producer), 19, 0).I8[0] ^= 0x55
		if equal(base, attend()) {
			t.Errorf("layer %d did not change when its producer %d's KV was perturbed", tc.consumer, tc.producer)
		}
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestForwardRejectsBadInput(t *testing.T) {
	c := testmodel.Plain(testVocab, model.F32)
	m := newModel(t, c)
	a := newArena(t, c, 16)
	for _, tc := range []struct {
		name   string
		ids    []int32
		start  int
		logits int
	}{
		{"token out of vocab", []int32{1, testVocab}, 0, testVocab},
		{"negative token", []int32{-1}, 0, testVocab},
		{"past context", []int32{1, 2}, 15, testVocab},
		{"no tokens", nil, 0, testVocab},
		{"bad logits size", []int32{1}, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Forward(a, tc.ids, tc.start, make([]float32, tc.logits)); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
