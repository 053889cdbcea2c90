package host

import (
	"context"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/sample"
	_ "github.com/wick-run/wick/engine/webgpu" // the native backend the module's GPU path must match
)

// turns are the two chat turns every parity test runs; the second reuses
// the first turn's KV cache.
var turns = []string{"Hello there, how are you?", "Tell me more."}

const turnTokens = 12

// nativeTurns runs the turns greedily on the native engine.
func nativeTurns(t *testing.T, dir, backend string) []*engine.Reply {
	t.Helper()
	m, err := engine.Load(dir, engine.Options{Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []*engine.Reply
	for _, text := range turns {
		r, err := s.Send(context.Background(), text, engine.GenParams{MaxTokens: turnTokens, Sample: sample.Params{}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestGreedyMatchesNative checks that the module under wazero generates
// exactly the native engine's tokens, for both test models, on the GPU path
// (the module's kernels on the host's native device, weights streamed by
// the host) and on the CPU path (the module's own CPU backend).
func TestGreedyMatchesNative(t *testing.T) {
	rt := sharedRuntime(t)
	for _, tc := range []struct{ name, dir, backend, wantBackend string }{
		{"cai-tiny int8 gpu", "../../testdata/cai-tiny", "webgpu", "webgpu"},
		{"cai-tiny int8 cpu", "../../testdata/cai-tiny", "cpu", "cpu"},
		{"plain-tiny f32 gpu", "../../testdata/plain-tiny", "webgpu", "webgpu"},
		{"plain-tiny f32 cpu", "../../testdata/plain-tiny", "cpu", "cpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			want := nativeTurns(t, tc.dir, tc.backend)
			inst, err := rt.Load(ctx, LoadOptions{Dir: tc.dir, Backend: tc.backend})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)
			if got := inst.Info.Backend; len(got) < len(tc.wantBackend) || got[:len(tc.wantBackend)] != tc.wantBackend {
				t.Fatalf("module runs backend %q, want %s", got, tc.wantBackend)
			}
			s, err := inst.NewSession(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			for i, text := range turns {
				var streamed []int32
				r, err := s.Send(ctx, Turn{Text: text, MaxTokens: turnTokens}, func(tok Token) bool {
					streamed = append(streamed, tok.ID)
					return true
				})
				if err != nil {
					t.Fatalf("turn %d: %v", i, err)
				}
				w := want[i]
				if !slices.Equal(r.Tokens, w.Tokens) || r.Finish != string(w.Finish) {
					t.Errorf("turn %d: module gave %v (%s), native %v (%s)", i, r.Tokens, r.Finish, w.Tokens, w.Finish)
				}
				if !slices.Equal(streamed, r.Tokens) {
					t.Errorf("turn %d: streamed %v, replied %v", i, streamed, r.Tokens)
				}
				if r.Cached != w.CachedTokens || r.Prompt != w.PromptTokens {
					t.Errorf("turn %d: module cached %d and prefilled %d tokens, native %d and %d", i, r.Cached, r.Prompt, w.CachedTokens, w.PromptTokens)
				}
				if i > 0 && r.Cached == 0 {
					t.Errorf("turn %d reused no KV", i)
				}
			}
		})
	}
}
