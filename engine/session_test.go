package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/sample"
)

var testModels = []string{"../testdata/cai-tiny", "../testdata/plain-tiny"}

func load(t *testing.T, dir string, opts Options) *Model {
	t.Helper()
	if opts.Backend == "" {
		opts.Backend = "cpu"
	}
	m, err := Load(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newSession(t *testing.T, m *Model, system string) *Session {
	t.Helper()
	s, err := m.NewSession(system)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var greedy = GenParams{MaxTokens: 12}

// TestTurnsReuseKV checks that a second turn prefills only its new tokens
// and still gives exactly the reply a fresh session gives when it prefills
// the whole conversation at once (or, with the prefix cache, restores its
// cached blocks and prefills the rest).
func TestTurnsReuseKV(t *testing.T) {
	for _, dir := range testModels {
		for _, cache := range []int64{-1, 0} {
			t.Run(fmt.Sprintf("%s/cache%d", dir, cache), func(t *testing.T) {
				m := load(t, dir, Options{CacheBytes: cache})
				s := newSession(t, m, "You are Ada. You like maps.")
				r1, err := s.Send(context.Background(), "Hello, who are you?", greedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r1.CachedTokens != 0 || r1.PromptTokens == 0 {
					t.Fatalf("first turn: %d cached, %d prompt tokens", r1.CachedTokens, r1.PromptTokens)
				}
				before := len(s.Tokens())
				r2, err := s.Send(context.Background(), "Tell me about the sea.", greedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r2.CachedTokens != before {
					t.Errorf("second turn reused %d tokens of KV, want all %d of the first turn", r2.CachedTokens, before)
				}
				// A fresh session given the same history in one go.
				f := newSession(t, m, "")
				f.msgs = s.Messages()[:len(s.msgs)-1]
				f.msgs[len(f.msgs)-2].Content = "" // rendered from its tokens, not its text
				r3, err := f.reply(context.Background(), greedy, nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				total := r2.CachedTokens + r2.PromptTokens
				wantCached := 0
				if m.Cache != nil {
					wantCached = (total - 1) / m.Cache.Block() * m.Cache.Block()
				}
				if r3.CachedTokens != wantCached || r3.PromptTokens != total-wantCached {
					t.Errorf("fresh session restored %d and prefilled %d tokens, want %d and %d", r3.CachedTokens, r3.PromptTokens, wantCached, total-wantCached)
				}
				if !slices.Equal(r2.Tokens, r3.Tokens) {
					t.Errorf("reply with cached KV %v, recomputed %v", r2.Tokens, r3.Tokens)
				}
			})
		}
	}
}

// TestStreamedTextIsTheReply checks that the streamed pieces add up to the
// reply text, which decodes the reply's tokens.
func TestStreamedTextIsTheReply(t *testing.T) {
	m := load(t, testModels[0], Options{})
	s := newSession(t, m, "")
	var streamed strings.Builder
	p := GenParams{MaxTokens: 40, Sample: sample.Params{Temperature: 1, Seed: 3}}
	r, err := s.Send(context.Background(), "Say something with an € in it.", p, func(x string) { streamed.WriteString(x) })
	if err != nil {
		t.Fatal(err)
	}
	if streamed.String() != r.Text || r.Text != m.Tokenizer.Decode(r.Tokens) {
		t.Errorf("streamed %q, reply text %q, decoded tokens %q", streamed.String(), r.Text, m.Tokenizer.Decode(r.Tokens))
	}
}

// TestRegenerateAndEdit checks that regenerating with the same parameters
// gives the same reply and that the KV is cut back in place where the
// layout allows (all-global model) and refilled where a ring has wrapped.
func TestRegenerateAndEdit(t *testing.T) {
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir, Options{})
			s := newSession(t, m, "")
			r1, err := s.Send(context.Background(), "Hello there, friend of mine.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			r2, err := s.Regenerate(context.Background(), greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r1.Tokens, r2.Tokens) {
				t.Errorf("regenerated %v, first reply %v", r2.Tokens, r1.Tokens)
			}
			inPlace := m.layout.CanRewind(r1.CachedTokens+r1.PromptTokens+len(r1.Tokens), r1.CachedTokens+r1.PromptTokens)
			// The reply, with its generation prompt, is what regenerate recomputes.
			want := r1.CachedTokens + r1.PromptTokens - len(m.Template.GenerationPrompt())
			if !inPlace {
				want = 0
			}
			if r2.CachedTokens != want {
				t.Errorf("regenerate reused %d tokens of KV, want %d (rewind in place: %v)", r2.CachedTokens, want, inPlace)
			}
			r3, err := s.EditLast(context.Background(), "Hello there, friend of mine.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r1.Tokens, r3.Tokens) {
				t.Errorf("edit to the same text gave %v, first reply %v", r3.Tokens, r1.Tokens)
			}
			if n := len(s.Messages()); n != 2 {
				t.Errorf("%d messages after edit, want 2", n)
			}
		})
	}
}

func TestContextFull(t *testing.T) {
	m := load(t, testModels[0], Options{Context: 64})
	s := newSession(t, m, "")
	if _, err := s.Send(context.Background(), "Hi.", GenParams{MaxTokens: 4}, nil); err != nil {
		t.Fatal(err)
	}
	msgs, toks := s.Messages(), s.Tokens()
	_, err := s.Send(context.Background(), strings.Repeat("A long message. ", 20), greedy, nil)
	if !errors.Is(err, ErrContextFull) {
		t.Fatalf("got %v, want ErrContextFull", err)
	}
	if !slices.Equal(s.Tokens(), toks) || len(s.Messages()) != len(msgs) {
		t.Error("a refused turn changed the conversation")
	}
	r, err := s.Send(context.Background(), "Ok.", GenParams{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Finish != FinishLength && r.Finish != FinishStop {
		t.Errorf("finish %q", r.Finish)
	}
	if len(s.Tokens()) >= 64 {
		t.Errorf("conversation of %d tokens in a context of 64", len(s.Tokens()))
	}
}

func TestCancel(t *testing.T) {
	m := load(t, testModels[0], Options{})
	s := newSession(t, m, "")
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	r, err := s.Send(ctx, "Go on.", GenParams{MaxTokens: 100}, func(string) {
		if n++; n == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || r == nil || r.Finish != FinishCancelled {
		t.Fatalf("got %v, %+v; want a cancelled reply", err, r)
	}
	if len(r.Tokens) > 4 {
		t.Errorf("%d tokens generated after cancel", len(r.Tokens))
	}
	if last := s.Messages()[len(s.Messages())-1]; last.Role != chat.Assistant {
		t.Errorf("partial reply not kept: last message %+v", last)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  string
		opts Options
		want string
	}{
		{"missing dir", "../testdata/nope", Options{}, "nope"},
		{"unknown backend", testModels[0], Options{Backend: "quantum"}, "unknown backend"},
		{"context too big", testModels[0], Options{Backend: "cpu", Context: 1 << 20}, "context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.dir, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// countingSeq counts the tokens that go through the forward pass, to
// check that restored KV is not computed again.
type countingSeq struct {
	*cpu.Sequence
	n *atomic.Int64
}

func (s countingSeq) Forward(tokens []int32, start int, logits []float32) error {
	s.n.Add(int64(len(tokens)))
	return s.Sequence.Forward(tokens, start, logits)
}

type countingBackend struct {
	Backend
	n *atomic.Int64
}

func (b countingBackend) NewSequence(context int) (Sequence, error) {
	s, err := b.Backend.NewSequence(context)
	if err != nil {
		return nil, err
	}
	return countingSeq{s.(*cpu.Sequence), b.n}, nil
}

// counted loads dir with a backend that counts forwarded tokens.
func counted(t *testing.T, dir string, opts Options) (*Model, *atomic.Int64) {
	m := load(t, dir, opts)
	n := new(atomic.Int64)
	m.Backend = countingBackend{m.Backend, n}
	return m, n
}

// forwards is the number of tokens a reply r forwarded, away from the
// context limit: its prompt and every generated token (each is fed back
// before the next is sampled, or before MaxTokens is checked).
func forwards(r *Reply) int64 { return int64(r.PromptTokens + len(r.Tokens)) }

const card = "You are Ada, a cartographer of the northern seas. You speak briefly, you love old maps, and you never lie about the weather."

// TestPrefixCacheAcrossSessions checks that a new conversation with the
// same character card, and a regenerated reply, restore the cached prefix,
// forward only the rest, and reply exactly as without the cache.
func TestPrefixCacheAcrossSessions(t *testing.T) {
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			ref := load(t, dir, Options{CacheBytes: -1})
			m, count := counted(t, dir, Options{})
			B := m.Cache.Block()
			want := func(msg string) []int32 {
				r, err := newSession(t, ref, card).Send(context.Background(), msg, greedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				return r.Tokens
			}
			first := newSession(t, m, card)
			r1, err := first.Send(context.Background(), "Where is the nearest harbour?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name string
				msg  string
			}{
				{"same card, same message", "Where is the nearest harbour?"},
				{"same card, another message", "What is your favourite map?"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					s := newSession(t, m, card)
					before := count.Load()
					r, err := s.Send(context.Background(), tc.msg, greedy, nil)
					if err != nil {
						t.Fatal(err)
					}
					cardToks := len(m.Template.Encode([]chat.Message{{Role: chat.System, Content: card}}, false))
					if r.CachedTokens < cardToks/B*B || r.CachedTokens%B != 0 || r.CachedTokens == 0 {
						t.Errorf("restored %d tokens; the card alone renders to %d (blocks of %d)", r.CachedTokens, cardToks, B)
					}
					if got := count.Load() - before; got != forwards(r) {
						t.Errorf("forwarded %d tokens, want %d (prompt %d, cached %d, generated %d)", got, forwards(r), r.PromptTokens, r.CachedTokens, len(r.Tokens))
					}
					if w := want(tc.msg); !slices.Equal(r.Tokens, w) {
						t.Errorf("reply %v, without the cache %v", r.Tokens, w)
					}
				})
			}
			t.Run("regenerate", func(t *testing.T) {
				before := count.Load()
				r, err := first.Regenerate(context.Background(), greedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				if total := r1.CachedTokens + r1.PromptTokens; r.CachedTokens < (total-1)/B*B {
					t.Errorf("regenerate reused %d tokens of %d", r.CachedTokens, total)
				}
				if got := count.Load() - before; got != forwards(r) {
					t.Errorf("forwarded %d tokens, want %d", got, forwards(r))
				}
				if !slices.Equal(r.Tokens, r1.Tokens) {
					t.Errorf("regenerated %v, first reply %v", r.Tokens, r1.Tokens)
				}
			})
		})
	}
}

// TestConcurrentSessionsShareCache runs conversations on one model from
// several goroutines: each reply must equal the same conversation run alone.
func TestConcurrentSessionsShareCache(t *testing.T) {
	m := load(t, testModels[0], Options{})
	ref := load(t, testModels[0], Options{CacheBytes: -1})
	msgs := []string{"Hello!", "Where are the maps?", "Hello!", "Tell me of storms."}
	want := make([][]int32, len(msgs))
	for i, msg := range msgs {
		r, err := newSession(t, ref, card).Send(context.Background(), msg, greedy, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = r.Tokens
	}
	var wg sync.WaitGroup
	for round := 0; round < 3; round++ {
		for i, msg := range msgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := m.NewSession(card)
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Close()
				r, err := s.Send(context.Background(), msg, greedy, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if !slices.Equal(r.Tokens, want[i]) {
					t.Errorf("round %d, %q: reply %v, alone %v", round, msg, r.Tokens, want[i])
				}
			}()
		}
	}
	wg.Wait()
}

// TestSaveRestoreContinues saves a conversation, loads the model again (as
// a new process would) with no prefix cache, restores the file and
// continues: the reply must be the uninterrupted chat's, and only the new
// turn's tokens may be forwarded.
func TestSaveRestoreContinues(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		opts Options
	}{
		{testModels[0], Options{}},
		{testModels[0], Options{Float32: true}},
		{testModels[1], Options{}},
	} {
		t.Run(fmt.Sprintf("%s/f32=%v", tc.dir, tc.opts.Float32), func(t *testing.T) {
			ctx := context.Background()
			m := load(t, tc.dir, tc.opts)
			s := newSession(t, m, card)
			for _, msg := range []string{"Hello, Ada.", "Which map is oldest?"} {
				if _, err := s.Send(ctx, msg, greedy, nil); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(t.TempDir(), "chat.wick")
			if err := s.Save(path); err != nil {
				t.Fatal(err)
			}
			saved := len(s.Tokens())
			uninterrupted, err := s.Send(ctx, "And the newest?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}

			opts := tc.opts
			opts.CacheBytes = -1
			m2, count := counted(t, tc.dir, opts)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s2, err := m2.RestoreSession(data)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s2.Close() })
			if s2.KVLen() != saved || len(s2.Messages()) != 5 {
				t.Fatalf("restored %d tokens of KV and %d messages, want %d and 5", s2.KVLen(), len(s2.Messages()), saved)
			}
			r, err := s2.Send(ctx, "And the newest?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.CachedTokens != saved || r.PromptTokens != uninterrupted.PromptTokens {
				t.Errorf("restored chat reused %d and prefilled %d tokens, the uninterrupted one %d and %d", r.CachedTokens, r.PromptTokens, uninterrupted.CachedTokens, uninterrupted.PromptTokens)
			}
			if got := count.Load(); got != forwards(r) {
				t.Errorf("forwarded %d tokens after restoring, want %d (the new turn only)", got, forwards(r))
			}
			if !slices.Equal(r.Tokens, uninterrupted.Tokens) {
				t.Errorf("restored chat replied %v, the uninterrupted one %v", r.Tokens, uninterrupted.Tokens)
			}
		})
	}
}

// TestRestoreRefusesBadFiles checks that damaged and foreign files are
// refused with the right error, and that a file of another model still
// gives its messages back through ReplaySession.
func TestRestoreRefusesBadFiles(t *testing.T) {
	ctx := context.Background()
	m := load(t, testModels[0], Options{})
	s := newSession(t, m, card)
	if _, err := s.Send(ctx, "Hello, Ada.", greedy, nil); err != nil {
		t.Fatal(err)
	}
	good, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	future := bytes.Clone(good)
	future[8] = 9
	other := load(t, testModels[1], Options{})
	f32 := load(t, testModels[0], Options{Float32: true})
	for _, tc := range []struct {
		name string
		m    *Model
		data []byte
		want error
	}{
		{"truncated", m, good[:len(good)-7], kv.ErrSnapshotCorrupt},
		{"corrupted", m, flipped, kv.ErrSnapshotCorrupt},
		{"future version", m, future, kv.ErrSnapshotVersion},
		{"another model", other, good, kv.ErrSnapshotModel},
		{"another mode", f32, good, kv.ErrSnapshotModel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.m.RestoreSession(tc.data)
			if !errors.Is(err, tc.want) || s != nil {
				t.Fatalf("got %v, %v; want %v", s, err, tc.want)
			}
			r, err := tc.m.ReplaySession(tc.data)
			if tc.want != kv.ErrSnapshotModel {
				if err == nil {
					t.Fatal("replay accepted a damaged file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if len(r.Messages()) != 3 || r.KVLen() != 0 {
				t.Fatalf("replay gave %d messages and %d tokens of KV, want 3 and 0", len(r.Messages()), r.KVLen())
			}
			reply, err := r.Send(ctx, "Go on.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if reply.CachedTokens != 0 || reply.PromptTokens == 0 {
				t.Errorf("replayed chat reused %d tokens", reply.CachedTokens)
			}
		})
	}
}

// failingBackend wraps a backend whose sequences fail every Forward while
// *fail is set: a GPU step that WebGPU refused, say.
type failingBackend struct {
	Backend
	fail *bool
}

type failingSequence struct {
	Sequence
	fail *bool
}

func (b failingBackend) NewSequence(n int) (Sequence, error) {
	s, err := b.Backend.NewSequence(n)
	return failingSequence{s, b.fail}, err
}

func (s failingSequence) Forward(tokens []int32, start int, logits []float32) error {
	if *s.fail {
		return errors.New("injected device failure")
	}
	return s.Sequence.Forward(tokens, start, logits)
}

// TestFailedTurnLeavesConversation checks that a turn whose forward pass
// fails is not taken (the conversation is as it was) and that the next
// turn replies exactly as if the failed one had never been tried.
func TestFailedTurnLeavesConversation(t *testing.T) {
	ctx := context.Background()
	m := load(t, testModels[0], Options{CacheBytes: -1})
	fail := false
	m.Backend = failingBackend{m.Backend, &fail}
	s := newSession(t, m, "You are Ada.")
	if _, err := s.Send(ctx, "Hello.", greedy, nil); err != nil {
		t.Fatal(err)
	}
	msgs, toks := s.Messages(), s.Tokens()
	fail = true
	if _, err := s.Send(ctx, "Where are the maps?", greedy, nil); err == nil {
		t.Fatal("a turn whose forward pass failed succeeded")
	}
	if !slices.Equal(s.Tokens(), toks) || !reflect.DeepEqual(s.Messages(), msgs) {
		t.Fatalf("a failed turn changed the conversation: %d messages, %d tokens (was %d, %d)", len(s.Messages()), len(s.Tokens()), len(msgs), len(toks))
	}
	fail = false
	got, err := s.Send(ctx, "Where are the maps?", greedy, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := newSession(t, m, "You are Ada.")
	if _, err := ref.Send(ctx, "Hello.", greedy, nil); err != nil {
		t.Fatal(err)
	}
	want, err := ref.Send(ctx, "Where are the maps?", greedy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tokens, want.Tokens) {
		t.Errorf("after a failed turn: %v, want %v", got.Tokens, want.Tokens)
	}
}
