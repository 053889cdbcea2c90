//go:build !js && !wasip1

package webgpu_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/engine/webgpu"
)

// tally counts what a GPU sequence was asked to do: tokens forwarded
// (prefill: greedy replies decode through Greedy), decode batches (Greedy
// calls and pipelined submits) and restores. It keeps every optional
// interface of *webgpu.Sequence.
type tally struct{ forwarded, greedy, restores int }

type tallied struct {
	engine.Backend
	n *tally
}

type talliedSeq struct {
	*webgpu.Sequence
	n *tally
}

func (b tallied) NewSequence(ctx int) (engine.Sequence, error) {
	s, err := b.Backend.NewSequence(ctx)
	if err != nil {
		return nil, err
	}
	return talliedSeq{s.(*webgpu.Sequence), b.n}, nil
}

func (s talliedSeq) Forward(tokens []int32, start int, logits []float32) error {
	s.n.forwarded += len(tokens)
	return s.Sequence.Forward(tokens, start, logits)
}

func (s talliedSeq) Fill(tokens []int32, start int) error {
	s.n.forwarded += len(tokens)
	return s.Sequence.Fill(tokens, start)
}

func (s talliedSeq) ForwardPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) (int32, error) {
	s.n.forwarded += len(tokens)
	return s.Sequence.ForwardPick(tokens, start, p, step, history)
}

func (s talliedSeq) SubmitPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) error {
	s.n.forwarded += len(tokens)
	return s.Sequence.SubmitPick(tokens, start, p, step, history)
}

func (s talliedSeq) Greedy(token int32, start, steps int) ([]int32, error) {
	s.n.greedy++
	return s.Sequence.Greedy(token, start, steps)
}

func (s talliedSeq) SubmitBatch(b engine.Batch) error {
	s.n.greedy++
	return s.Sequence.SubmitBatch(b)
}

func (s talliedSeq) Restore(parts []*kv.Snapshot) error {
	s.n.restores++
	return s.Sequence.Restore(parts)
}

func loadWith(t *testing.T, dir string, opts engine.Options) *engine.Model {
	t.Helper()
	m, err := engine.Load(dir, opts)
	if err != nil {
		t.Fatalf("%v\n(install mesa-vulkan-drivers and libvulkan1: `make deps` does)", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

const ada = "You are Ada, a cartographer of the northern seas. You speak briefly, you love old maps, and you never lie about the weather."

// TestSessionPrefixCacheOnGPU runs sessions on the WebGPU backend with the
// prefix cache on: a new chat with the same card restores the card's blocks
// from the cache (snapshots the GPU took), a regenerated reply restores the
// whole turn before it, each prefills only the rest, and every reply is
// the one a session without the cache gives. Replies are greedy, so they
// decode on the GPU in batches that stop at block boundaries.
func TestSessionPrefixCacheOnGPU(t *testing.T) {
	for _, dir := range []string{"../../testdata/cai-tiny", "../../testdata/plain-tiny"} {
		t.Run(dir, func(t *testing.T) {
			if _, ok := any(&webgpu.Sequence{}).(engine.Snapshotter); !ok {
				t.Fatal("webgpu.Sequence is no engine.Snapshotter")
			}
			ctx := context.Background()
			p := engine.GenParams{MaxTokens: 12}
			ref := loadWith(t, dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
			m := loadWith(t, dir, engine.Options{Backend: "webgpu"})
			var n tally
			m.Backend = tallied{m.Backend, &n}
			B := m.Cache.Block()
			want := func(msg string) []int32 {
				s, err := ref.NewSession(ada)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				r, err := s.Send(ctx, msg, p, nil)
				if err != nil {
					t.Fatal(err)
				}
				return r.Tokens
			}
			first, err := m.NewSession(ada)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			r1, err := first.Send(ctx, "Where is the nearest harbour?", p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Cache.Stats().Blocks == 0 {
				t.Fatal("the first chat left no blocks in the prefix cache")
			}
			for _, msg := range []string{"Where is the nearest harbour?", "What is your favourite map?"} {
				t.Run(msg, func(t *testing.T) {
					s, err := m.NewSession(ada)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					before := n
					r, err := s.Send(ctx, msg, p, nil)
					if err != nil {
						t.Fatal(err)
					}
					if r.CachedTokens == 0 || r.CachedTokens%B != 0 || n.restores != before.restores+1 {
						t.Errorf("restored %d tokens in %d restores; want whole blocks of %d from one", r.CachedTokens, n.restores-before.restores, B)
					}
					if got := n.forwarded - before.forwarded; got != r.PromptTokens {
						t.Errorf("prefilled %d tokens, want the %d the cache lacked", got, r.PromptTokens)
					}
					if w := want(msg); !slices.Equal(r.Tokens, w) {
						t.Errorf("reply %v, without the cache %v", r.Tokens, w)
					}
				})
			}
			t.Run("regenerate", func(t *testing.T) {
				before := n
				r, err := first.Regenerate(ctx, p, nil)
				if err != nil {
					t.Fatal(err)
				}
				if total := r1.CachedTokens + r1.PromptTokens; r.CachedTokens < (total-1)/B*B {
					t.Errorf("regenerate reused %d tokens of %d", r.CachedTokens, total)
				}
				if got := n.forwarded - before.forwarded; got != r.PromptTokens {
					t.Errorf("prefilled %d tokens, want %d", got, r.PromptTokens)
				}
				if !slices.Equal(r.Tokens, r1.Tokens) {
					t.Errorf("regenerated %v, first reply %v", r.Tokens, r1.Tokens)
				}
			})
			if n.greedy == 0 {
				t.Error("no reply decoded on the GPU")
			}
		})
	}
}

// TestSaveRestoreOnGPU saves a conversation with its KV and restores it on
// a freshly loaded model (no prefix cache), on the GPU or the CPU either
// side: the restored session holds the KV, prefills only the new turn, and
// replies as the uninterrupted chat did.
func TestSaveRestoreOnGPU(t *testing.T) {
	const dir = "../../testdata/cai-tiny"
	p := engine.GenParams{MaxTokens: 10}
	for _, tc := range []struct{ save, restore string }{
		{"webgpu", "webgpu"},
		{"cpu", "webgpu"},
		{"webgpu", "cpu"},
	} {
		t.Run(fmt.Sprintf("%s to %s", tc.save, tc.restore), func(t *testing.T) {
			ctx := context.Background()
			m := loadWith(t, dir, engine.Options{Backend: tc.save})
			s, err := m.NewSession(ada)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// Past the window of the model's local layers: rings have wrapped.
			for _, msg := range []string{"Hello, Ada.", "Which map is oldest, and who drew it?"} {
				if _, err := s.Send(ctx, msg, p, nil); err != nil {
					t.Fatal(err)
				}
			}
			data, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			saved := s.KVLen()
			uninterrupted, err := s.Send(ctx, "And the newest?", p, nil)
			if err != nil {
				t.Fatal(err)
			}

			m2 := loadWith(t, dir, engine.Options{Backend: tc.restore, CacheBytes: -1})
			var n tally
			if tc.restore == "webgpu" {
				m2.Backend = tallied{m2.Backend, &n}
			}
			s2, err := m2.RestoreSession(data)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if s2.KVLen() != saved || saved == 0 {
				t.Fatalf("restored %d tokens of KV, the saved session held %d", s2.KVLen(), saved)
			}
			r, err := s2.Send(ctx, "And the newest?", p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.CachedTokens != saved || r.PromptTokens != uninterrupted.PromptTokens {
				t.Errorf("restored chat reused %d and prefilled %d tokens, the uninterrupted one %d and %d", r.CachedTokens, r.PromptTokens, uninterrupted.CachedTokens, uninterrupted.PromptTokens)
			}
			if tc.restore == "webgpu" && (n.restores != 1 || n.forwarded != r.PromptTokens) {
				t.Errorf("%d restores and %d tokens prefilled after restoring, want 1 and %d (the new turn only)", n.restores, n.forwarded, r.PromptTokens)
			}
			if !slices.Equal(r.Tokens, uninterrupted.Tokens) {
				t.Errorf("restored chat replied %v, the uninterrupted one %v", r.Tokens, uninterrupted.Tokens)
			}
		})
	}
}
