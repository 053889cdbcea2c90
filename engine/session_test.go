package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/chat"
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
// the whole conversation at once.
func TestTurnsReuseKV(t *testing.T) {
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir, Options{})
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
			r3, err := f.reply(context.Background(), greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r3.PromptTokens != r2.CachedTokens+r2.PromptTokens {
				t.Errorf("fresh session prefilled %d tokens, the cached one %d+%d", r3.PromptTokens, r2.CachedTokens, r2.PromptTokens)
			}
			if !slices.Equal(r2.Tokens, r3.Tokens) {
				t.Errorf("reply with cached KV %v, recomputed %v", r2.Tokens, r3.Tokens)
			}
		})
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
