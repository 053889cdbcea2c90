//go:build !js && !wasip1

package webgpu_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/engine/webgpu"
)

// countingSampler passes Sample and the pipelined batches on and counts
// the calls.
type countingSampler struct {
	engine.Backend
	calls *int
}

type countingSamplerSeq struct {
	*webgpu.Sequence
	calls *int
}

func (b countingSampler) NewSequence(n int) (engine.Sequence, error) {
	s, err := b.Backend.NewSequence(n)
	if err != nil {
		return nil, err
	}
	return countingSamplerSeq{s.(*webgpu.Sequence), b.calls}, nil
}

func (s countingSamplerSeq) Sample(token int32, start, steps int, p sample.Params, step uint32, history []int32) ([]int32, error) {
	*s.calls++
	return s.Sequence.Sample(token, start, steps, p, step, history)
}

func (s countingSamplerSeq) SubmitBatch(b engine.Batch) error {
	*s.calls++
	return s.Sequence.SubmitBatch(b)
}

// TestSessionSamplesOnGPU runs sampled conversations on the WebGPU backend
// twice: drawn on the GPU in batches (engine.SampleDecoder), and through
// Forward with the logits read back and engine/sample's Sampler. Every
// reply must be the same, turn after turn (the history, the sampler's
// step and the seed carry over correctly between batches).
func TestSessionSamplesOnGPU(t *testing.T) {
	if _, ok := any(&webgpu.Sequence{}).(engine.SampleDecoder); !ok {
		t.Fatal("webgpu.Sequence is no engine.SampleDecoder")
	}
	for _, dir := range []string{"../../testdata/cai-tiny", "../../testdata/plain-tiny"} {
		for _, p := range []sample.Params{
			{Temperature: 0.9, Seed: 1},
			{Temperature: 1.2, TopK: 8, TopP: 0.9, Seed: 2},
			{Temperature: 0.7, RepetitionPenalty: 1.3, Seed: 3},
			{RepetitionPenalty: 1.5, Seed: 4},
		} {
			t.Run(fmt.Sprintf("%s/%+v", dir, p), func(t *testing.T) {
				ctx := context.Background()
				var calls int
				m := loadWith(t, dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
				m.Backend = countingSampler{m.Backend, &calls}
				ref := loadWith(t, dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
				ref.Backend = logitsOnly{ref.Backend}
				gs, err := m.NewSession(ada)
				if err != nil {
					t.Fatal(err)
				}
				defer gs.Close()
				rs, err := ref.NewSession(ada)
				if err != nil {
					t.Fatal(err)
				}
				defer rs.Close()
				gp := engine.GenParams{Sample: p, MaxTokens: 16}
				for _, msg := range []string{"Hello there, who are you?", "Tell me about the sea."} {
					rg, err := gs.Send(ctx, msg, gp, nil)
					if err != nil {
						t.Fatal(err)
					}
					rr, err := rs.Send(ctx, msg, gp, nil)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(rg.Tokens, rr.Tokens) || rg.Finish != rr.Finish || gs.KVLen() != rs.KVLen() {
						t.Fatalf("%q: sampled on the GPU %v (%s, KV %d), through the logits %v (%s, KV %d)", msg, rg.Tokens, rg.Finish, gs.KVLen(), rr.Tokens, rr.Finish, rs.KVLen())
					}
				}
				if calls == 0 {
					t.Error("no reply was sampled on the GPU")
				}
			})
		}
	}
}
