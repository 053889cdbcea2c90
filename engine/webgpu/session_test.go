//go:build !js && !wasip1

package webgpu_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/webgpu"
	"github.com/wick-run/wick/internal/modeltest"
)

// logitsOnly hides a sequence's Greedy, so sessions decode through Forward
// and read every step's logits back.
type logitsOnly struct{ engine.Backend }

func (b logitsOnly) NewSequence(n int) (engine.Sequence, error) {
	s, err := b.Backend.NewSequence(n)
	if err != nil {
		return nil, err
	}
	return struct{ engine.Sequence }{s}, nil
}

// counted passes Greedy and the pipelined batches on and counts the calls,
// to show the sessions under test do decode on the GPU.
type counted struct {
	engine.Backend
	calls *int
}

type countedSeq struct {
	engine.Sequence
	calls *int
}

func (b counted) NewSequence(n int) (engine.Sequence, error) {
	s, err := b.Backend.NewSequence(n)
	if err != nil {
		return nil, err
	}
	return countedSeq{s, b.calls}, nil
}

func (s countedSeq) Greedy(token int32, start, steps int) ([]int32, error) {
	*s.calls++
	return s.Sequence.(engine.GreedyDecoder).Greedy(token, start, steps)
}

// SubmitBatch and CollectBatch pass the pipelined batches on
// (engine.BatchPipeliner), counting the submits.
func (s countedSeq) SubmitBatch(b engine.Batch) error {
	*s.calls++
	return s.Sequence.(engine.BatchPipeliner).SubmitBatch(b)
}

func (s countedSeq) CollectBatch() ([]int32, error) {
	return s.Sequence.(engine.BatchPipeliner).CollectBatch()
}

func loadGPU(t *testing.T, dir string, ctx int) *engine.Model {
	t.Helper()
	m, err := engine.Load(dir, engine.Options{Backend: "webgpu", Context: ctx})
	if err != nil {
		t.Fatalf("%v\n(install mesa-vulkan-drivers and libvulkan1: `make deps` does)", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// stopAlso makes m's template stop at id too: the tiny random models rarely
// pick a real stop token, and stops inside a batch are what is under test.
func stopAlso(t *testing.T, m *engine.Model, id int32) {
	t.Helper()
	f := modeltest.Open(t, m.Dir)
	ct := proto.Clone(f.Manifest().GetChat()).(*manifestpb.ChatTemplate)
	ct.StopIds = append(ct.StopIds, id)
	tmpl, err := chat.New(ct, m.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	m.Template = tmpl
}

// TestSessionGreedyOnGPU runs the same conversation twice on the WebGPU
// backend: greedy replies decoded with the argmax on the GPU (a few steps
// per readback), and through Forward with every step's logits read back.
// Every turn must be the same: tokens, text, finish, streamed pieces, the
// prompt and cached counts and the KV kept, through regenerate, edit, raw
// completion, stops inside a batch and the context limit.
func TestSessionGreedyOnGPU(t *testing.T) {
	for _, dir := range []string{"../../testdata/cai-tiny", "../../testdata/plain-tiny"} {
		for _, tc := range []struct {
			name      string
			context   int
			maxTokens int
			stopAt    int // also stop at the first reply's token at this index; -1: no
		}{
			{"max tokens", 0, 10, -1},
			{"stop at 1", 0, 24, 1},
			{"stop at 2", 0, 24, 2},
			{"stop at 4", 0, 24, 4},
			{"context limit", 120, 0, -1},
		} {
			t.Run(fmt.Sprintf("%s/%s", dir, tc.name), func(t *testing.T) {
				gpu := loadGPU(t, dir, tc.context)
				if _, ok := any(&webgpu.Sequence{}).(engine.GreedyDecoder); !ok {
					t.Fatal("webgpu.Sequence is no engine.GreedyDecoder")
				}
				var calls int
				gpu.Backend = counted{gpu.Backend, &calls}
				ref := loadGPU(t, dir, tc.context)
				ref.Backend = logitsOnly{ref.Backend}
				p := engine.GenParams{MaxTokens: tc.maxTokens}
				if tc.stopAt >= 0 {
					s, err := ref.NewSession("")
					if err != nil {
						t.Fatal(err)
					}
					r, err := s.Send(context.Background(), "Hello there, who are you?", engine.GenParams{MaxTokens: 8}, nil)
					s.Close()
					if err != nil {
						t.Fatal(err)
					}
					stopAlso(t, gpu, r.Tokens[tc.stopAt])
					stopAlso(t, ref, r.Tokens[tc.stopAt])
				}
				sg, err := gpu.NewSession("You are Ada.")
				if err != nil {
					t.Fatal(err)
				}
				defer sg.Close()
				sr, err := ref.NewSession("You are Ada.")
				if err != nil {
					t.Fatal(err)
				}
				defer sr.Close()
				ctx := context.Background()
				for _, st := range []struct {
					name string
					run  func(*engine.Session, engine.GenParams, func(string)) (*engine.Reply, error)
				}{
					{"send", func(s *engine.Session, p engine.GenParams, f func(string)) (*engine.Reply, error) {
						return s.Send(ctx, "Hello there, who are you?", p, f)
					}},
					{"send again", func(s *engine.Session, p engine.GenParams, f func(string)) (*engine.Reply, error) {
						return s.Send(ctx, "Tell me about the sea.", p, f)
					}},
					{"regenerate", func(s *engine.Session, p engine.GenParams, f func(string)) (*engine.Reply, error) {
						return s.Regenerate(ctx, p, f)
					}},
					{"complete", func(s *engine.Session, p engine.GenParams, f func(string)) (*engine.Reply, error) {
						return s.Complete(ctx, []int32{5, 6, 7}, p, f)
					}},
					{"edit", func(s *engine.Session, p engine.GenParams, f func(string)) (*engine.Reply, error) {
						return s.EditLast(ctx, "And the mountains?", p, f)
					}},
				} {
					var pg, pr []string
					rg, errG := st.run(sg, p, func(x string) { pg = append(pg, x) })
					rr, errR := st.run(sr, p, func(x string) { pr = append(pr, x) })
					if (errG == nil) != (errR == nil) {
						t.Fatalf("%s: errors %v (GPU argmax), %v (logits)", st.name, errG, errR)
					}
					if errG != nil {
						continue
					}
					if !slices.Equal(rg.Tokens, rr.Tokens) || rg.Finish != rr.Finish || rg.Text != rr.Text {
						t.Fatalf("%s: GPU argmax gave %v (%s), the logits %v (%s)", st.name, rg.Tokens, rg.Finish, rr.Tokens, rr.Finish)
					}
					if rg.PromptTokens != rr.PromptTokens || rg.CachedTokens != rr.CachedTokens || sg.KVLen() != sr.KVLen() {
						t.Errorf("%s: prompt/cached/KV %d/%d/%d, the logits %d/%d/%d", st.name, rg.PromptTokens, rg.CachedTokens, sg.KVLen(), rr.PromptTokens, rr.CachedTokens, sr.KVLen())
					}
					if !slices.Equal(pg, pr) {
						t.Errorf("%s: streamed %q, the logits %q", st.name, pg, pr)
					}
				}
				if calls == 0 {
					t.Error("no reply took the argmax on the GPU")
				}
			})
		}
	}
}

// chunked splits every Greedy call into calls of at most n steps, each
// with its own readback: how a session with smaller batches decodes. It
// submits no batch ahead (it is no engine.BatchPipeliner).
type chunked struct {
	engine.Backend
	n int
}

type chunkedSeq struct {
	engine.Sequence
	n int
}

func (b chunked) NewSequence(n int) (engine.Sequence, error) {
	s, err := b.Backend.NewSequence(n)
	if err != nil {
		return nil, err
	}
	return chunkedSeq{s, b.n}, nil
}

func (s chunkedSeq) Greedy(token int32, start, steps int) ([]int32, error) {
	var ids []int32
	for len(ids) < steps {
		part, err := s.Sequence.(engine.GreedyDecoder).Greedy(token, start+len(ids), min(s.n, steps-len(ids)))
		if err != nil {
			return nil, err
		}
		ids = append(ids, part...)
		token = part[len(part)-1]
	}
	return ids, nil
}

// BenchmarkSessionDecode measures greedy replies of the bundled model (or
// the model directory in $WICK_SESSION_BENCH_MODEL) on the WebGPU
// backend: through the logits (a readback of the logits per token), with
// the argmax on the GPU at 1, 2 and 4 steps per readback, and at 4 with
// the next batch submitted before each readback (what sessions run where
// nothing limits it). Replies run to 128 tokens: the template's stop
// tokens are replaced by one the model does not pick.
func BenchmarkSessionDecode(b *testing.B) {
	const tokens = 128
	dir := "../../models/wick-cai-21m"
	if d := os.Getenv("WICK_SESSION_BENCH_MODEL"); d != "" {
		dir = d
	}
	for _, tc := range []struct {
		name string
		wrap func(engine.Backend) engine.Backend
	}{
		{"logits", func(b engine.Backend) engine.Backend { return logitsOnly{b} }},
		{"argmax-1", func(b engine.Backend) engine.Backend { return chunked{b, 1} }},
		{"argmax-2", func(b engine.Backend) engine.Backend { return chunked{b, 2} }},
		{"argmax-4", func(b engine.Backend) engine.Backend { return chunked{b, 4} }},
		{"argmax-4-ahead", func(b engine.Backend) engine.Backend { return b }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, err := engine.Load(dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			m.Backend = tc.wrap(m.Backend)
			f := modeltest.Open(b, m.Dir)
			ct := proto.Clone(f.Manifest().GetChat()).(*manifestpb.ChatTemplate)
			// The last id both the model and its tokenizer have.
			ct.StopIds = []int32{int32(min(m.Config.Vocab, m.Tokenizer.Vocab()) - 1)}
			if m.Template, err = chat.New(ct, m.Tokenizer); err != nil {
				b.Fatal(err)
			}
			generated := 0
			b.ResetTimer()
			for range b.N {
				s, err := m.NewSession("")
				if err != nil {
					b.Fatal(err)
				}
				r, err := s.Send(context.Background(), "Tell me a story about the sea.", engine.GenParams{MaxTokens: tokens}, nil)
				s.Close()
				if err != nil {
					b.Fatal(err)
				}
				generated += len(r.Tokens)
			}
			b.ReportMetric(float64(generated)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
