//go:build !js && !wasip1

package webgpu

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/internal/modeltest"
)

// stepBackend runs a model on the tests' device as an engine.Backend whose
// sequences count their Forward, Fill and ForwardPick calls: the steps a
// session takes.
type stepBackend struct {
	*Model
	forwards *int
}

type stepSeq struct {
	*Sequence
	forwards *int
}

func (b stepBackend) NewSequence(n int) (engine.Sequence, error) {
	s, err := b.Model.NewSequence(n)
	if err != nil {
		return nil, err
	}
	return stepSeq{s, b.forwards}, nil
}

func (s stepSeq) Forward(tokens []int32, start int, logits []float32) error {
	*s.forwards++
	return s.Sequence.Forward(tokens, start, logits)
}

// ForwardPick counts as a step: a prompt's last, drawing the reply's first
// token on the device.
func (s stepSeq) ForwardPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) (int32, error) {
	*s.forwards++
	return s.Sequence.ForwardPick(tokens, start, p, step, history)
}

// SubmitPick counts as a step too: ForwardPick's, with the reply's first
// batch submitted after it before its token is collected.
func (s stepSeq) SubmitPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) error {
	*s.forwards++
	return s.Sequence.SubmitPick(tokens, start, p, step, history)
}

// Fill counts as a step too: a long prompt's steps before its last.
func (s stepSeq) Fill(tokens []int32, start int) error {
	*s.forwards++
	return s.Sequence.Fill(tokens, start)
}

// stepModel loads the model in dir on the tests' device with steps of at
// most chunk tokens, its local layers' windows set to window (0 keeps
// them: the weights do not depend on it), in the float32 mode with f32.
func stepModel(t *testing.T, dir string, window int, f32 bool, chunk int, forwards *int) *engine.Model {
	t.Helper()
	f, w := modeltest.Load(t, dir)
	cfg := *f.Config()
	if f32 {
		var c *model.Config
		c, w = model.ToF32(&cfg, w)
		cfg = *c
	}
	cfg.Layers = slices.Clone(cfg.Layers)
	for i := range cfg.Layers {
		if cfg.Layers[i].Kind == model.Local && window > 0 {
			cfg.Layers[i].Window = window
		}
	}
	gm, err := New(device(t), &cfg, w, Options{Chunk: chunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gm.Close() })
	m, err := engine.Assemble(f, &cfg, stepBackend{gm, forwards}, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLongPrefillSteps reads a 300-token prompt on the GPU with its
// progress reported, as the page does: in steps as long as the sequence's
// (or as the rings allow the prefix cache's blocks to be captured after
// them), far fewer than the step per 32-token block of a sequence whose
// steps are 32 tokens (the page's stepping before), while the prefix cache
// ends up with the same blocks, byte for byte, and the reply is the same.
func TestLongPrefillSteps(t *testing.T) {
	const prompt = 300
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32(3 + (i*2654435761)%380)
	}
	for _, tc := range []struct {
		name   string
		dir    string
		window int
		f32    bool
		steps  int // the steps of the long stepping
	}{
		// All global: the prompt in one step.
		{"plain-tiny", "../../testdata/plain-tiny", 0, false, 1},
		// Rings of 100 + kv.RingRoom = 108 slots: a step may run 76
		// positions past the first block it completes, and stops at a
		// block's end or the prompt's: [0, 96) [96, 192) [192, 300).
		{"cai-tiny, windows of 100", "../../testdata/cai-tiny", 100, false, 3},
		{"cai-tiny f32, windows of 100", "../../testdata/cai-tiny", 100, true, 3}, // float32 KV: bit for bit too
		// Rings of 8 + 8: no step runs past a block, as before.
		{"cai-tiny", "../../testdata/cai-tiny", 0, false, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type run struct {
				steps, reports int
				done           []int
				reply          *engine.Reply
				cached         int
				blocks         []*kv.Snapshot
				m              *engine.Model
			}
			read := func(chunk int) run {
				var r run
				r.m = stepModel(t, tc.dir, tc.window, tc.f32, chunk, &r.steps)
				s, err := r.m.NewSession("")
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				p := engine.GenParams{MaxTokens: 1, OnPrefill: func(done, total int) {
					r.reports++
					r.done = append(r.done, done)
					if total != prompt {
						t.Errorf("progress of %d tokens, the prompt has %d", total, prompt)
					}
				}}
				if r.reply, err = s.Complete(context.Background(), ids, p, nil); err != nil {
					t.Fatal(err)
				}
				r.cached, r.blocks = r.m.Cache.Lookup(ids)
				return r
			}
			short, long := read(32), read(DefaultChunk)
			if short.steps != 10 || short.reports != 10 {
				t.Errorf("32-token steps: %d forwards, %d reports for %d tokens; want 10", short.steps, short.reports, prompt)
			}
			if long.steps != tc.steps || long.reports != tc.steps || long.done[len(long.done)-1] != prompt {
				t.Errorf("%d-token steps: %d forwards, progress %v; want %d steps up to %d", DefaultChunk, long.steps, long.done, tc.steps, prompt)
			}
			if short.cached != prompt/32*32 || long.cached != short.cached {
				t.Errorf("the prefix cache holds %d tokens of the prompt after 32-token steps, %d after long ones; want %d", short.cached, long.cached, prompt/32*32)
			}
			for i := range min(len(short.blocks), len(long.blocks)) {
				if !reflect.DeepEqual(short.blocks[i], long.blocks[i]) {
					t.Errorf("block %d differs between the steppings", i)
				}
			}
			if !reflect.DeepEqual(short.reply.Tokens, long.reply.Tokens) {
				t.Errorf("reply %v after 32-token steps, %v after long ones", short.reply.Tokens, long.reply.Tokens)
			}
		})
	}
}
