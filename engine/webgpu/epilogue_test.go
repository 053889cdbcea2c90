//go:build !js && !wasip1

package webgpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestGatedMaximaCleared checks the gated epilogue's max |h| words after
// decode steps, lone (Forward) and batched (Greedy: many steps in one
// command list): the last layer's word of the last step must be the max
// |h| of the h that step left, not the max over earlier steps too, which
// is what a word not cleared at each step's start would hold (its
// quantisation scale then too coarse, silently).
func TestGatedMaximaCleared(t *testing.T) {
	cfg := testmodel.Plain(testVocab, model.Int8)
	gm, s := gpuSequence(t, device(t), cfg, testmodel.Random(cfg, 5), Options{}, 64)
	if s.gmax == 0 {
		t.Fatal("the default int8 plan has no gated epilogue")
	}
	last := len(cfg.Layers) - 1
	check := func(what string) {
		t.Helper()
		hb, err := gpu.ReadSync(gm.dev, s.gate, 0, int64(cfg.FFNHidden)*4)
		if err != nil {
			t.Fatal(err)
		}
		var want float32
		for i := 0; i < cfg.FFNHidden; i++ {
			v := math.Float32frombits(uint32(hb[4*i]) | uint32(hb[4*i+1])<<8 | uint32(hb[4*i+2])<<16 | uint32(hb[4*i+3])<<24)
			want = max(want, float32(math.Abs(float64(v))))
		}
		mb, err := gpu.ReadSync(gm.dev, s.gmax, 0, s.maximaBytes())
		if err != nil {
			t.Fatal(err)
		}
		o := 4 * last * gemvMaxTokens
		got := math.Float32frombits(uint32(mb[o]) | uint32(mb[o+1])<<8 | uint32(mb[o+2])<<16 | uint32(mb[o+3])<<24)
		if got != want {
			t.Fatalf("%s: the last layer's max |h| word holds %v, the step's h has %v", what, got, want)
		}
	}
	prompt := testmodel.Tokens(9, testVocab, 4)
	logits := make([]float32, testVocab)
	if err := s.Forward(prompt, 0, logits); err != nil {
		t.Fatal(err)
	}
	pos, tok := len(prompt), argmax(logits)
	for i := range 6 {
		if err := s.Forward([]int32{tok}, pos, logits); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("forward step %d", i))
		pos, tok = pos+1, argmax(logits)
	}
	for range 4 {
		ids, err := s.Greedy(tok, pos, 7)
		if err != nil {
			t.Fatal(err)
		}
		check("greedy batch")
		pos, tok = pos+len(ids), ids[len(ids)-1]
	}
}
