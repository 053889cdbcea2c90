package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/chat"
)

// continueCase is how the session that continues a reply is made.
type continueCase struct {
	name   string
	opts   Options
	device bool // greedy on a GreedyDecoder (batches of picks)
	// reload gives the session that continues: the one that replied, or
	// one restored or replayed from its save.
	reload func(t *testing.T, m *Model, s *Session) *Session
}

func sameSession(_ *testing.T, _ *Model, s *Session) *Session { return s }

func restored(t *testing.T, m *Model, s *Session) *Session {
	t.Helper()
	data, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.RestoreSession(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func replayed(t *testing.T, m *Model, s *Session) *Session {
	t.Helper()
	data, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.ReplaySession(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestContinueMatchesLongerReply checks Continue against generating longer
// in one go: greedy, a reply cut at 5 tokens and continued for 7 more is
// the reply of 12, token for token and as text, and the message holds all
// of it. With the reply's KV in the session only its last token is
// forwarded again; after a restore too where the model has no local layers
// (a restored ring is too short to run its last position again); after a
// replay the conversation is prefilled. Post-history instructions stand before
// the reply in both.
func TestContinueMatchesLongerReply(t *testing.T) {
	cases := []continueCase{
		{"kept", Options{CacheBytes: -1}, false, sameSession},
		{"prefix-cache", Options{}, false, sameSession},
		{"device-greedy", Options{}, true, sameSession},
		{"restored", Options{CacheBytes: -1}, false, restored},
		{"replayed", Options{CacheBytes: -1}, false, replayed},
	}
	for _, dir := range testModels {
		for _, post := range []string{"", "Answer in one sentence."} {
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s/%s/post%v", dir, c.name, post != ""), func(t *testing.T) {
					ctx := context.Background()
					m := load(t, dir, c.opts)
					if c.device {
						m.Backend = deviceBackend{m.Backend, m.Config.Vocab, &deviceLog{}}
					}
					ref := newSession(t, m, card)
					ref.SetPostHistory(post)
					want, err := ref.Send(ctx, "Tell me about the maps.", GenParams{MaxTokens: 12}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if len(want.Tokens) < 6 {
						t.Fatalf("the reference reply has %d tokens: the test needs more than 5", len(want.Tokens))
					}

					s := newSession(t, m, card)
					s.SetPostHistory(post)
					first, err := s.Send(ctx, "Tell me about the maps.", GenParams{MaxTokens: 5}, nil)
					if err != nil {
						t.Fatal(err)
					}
					s = c.reload(t, m, s)
					var streamed strings.Builder
					got, err := s.Continue(ctx, GenParams{MaxTokens: 7}, func(x string) { streamed.WriteString(x) })
					if err != nil {
						t.Fatal(err)
					}
					if c.name == "replayed" {
						// The reply comes back as its text, encoded again (these
						// tiny models' replies do not survive that): the
						// continuation is of those tokens, rendered as a fresh
						// conversation ending in the reply renders them.
						prior := m.Tokenizer.Encode(first.Text)
						msgs := s.Messages()[:2]
						wantToks := append(m.Template.Encode(msgs, false), m.Template.PostHistory(msgs, post)...)
						wantToks = append(append(wantToks, m.Template.GenerationPrompt()...), prior...)
						f := newSession(t, m, "")
						wantR, err := f.Complete(ctx, wantToks, GenParams{MaxTokens: 7}, nil)
						if err != nil {
							t.Fatal(err)
						}
						wantToks = append(wantToks, wantR.Tokens...)
						want = &Reply{Tokens: append(prior, wantR.Tokens...), Text: m.Tokenizer.Decode(append(prior, wantR.Tokens...)), Finish: wantR.Finish}
						ref = f
						ref.toks = wantToks
					}
					all := append(slices.Clone(first.Tokens), got.Tokens...)
					if c.name == "replayed" {
						all = append(m.Tokenizer.Encode(first.Text), got.Tokens...)
					}
					if !slices.Equal(all, want.Tokens) || got.Finish != want.Finish {
						t.Errorf("5 tokens then 7 more: %v (%s), 12 in one go: %v (%s)", all, got.Finish, want.Tokens, want.Finish)
					}
					// A reply cut inside a character showed U+FFFD for its
					// first bytes; the continuation streams the whole character.
					if !strings.HasSuffix(want.Text, streamed.String()) || got.Text != streamed.String() || streamed.Len() == 0 {
						t.Errorf("streamed %q (reply text %q), in one go %q", streamed.String(), got.Text, want.Text)
					}
					last := s.Messages()[len(s.Messages())-1]
					if last.Role != chat.Assistant || last.Content != want.Text || !slices.Equal(last.Tokens, want.Tokens) || len(s.Messages()) != 3 {
						t.Errorf("messages after continue: %d, last %+v; want the reply of 12 as the third", len(s.Messages()), last)
					}
					if !slices.Equal(s.Tokens(), ref.Tokens()) {
						t.Errorf("conversation tokens differ from the reply of 12's:\n%v\n%v", s.Tokens(), ref.Tokens())
					}
					// The conversation up to the reply of 5: all of its KV but the last token's is reused.
					n := len(s.Tokens()) - len(got.Tokens)
					// A restored ring holds Window-1 positions, too few to run its last
					// one again: a model with local layers refills after a restore.
					kept := n - 1
					if c.name == "replayed" || c.name == "restored" && m.rings {
						kept = 0
					}
					if got.CachedTokens != kept || got.PromptTokens != n-kept {
						t.Errorf("continue reused %d tokens of KV and prefilled %d; want %d and %d", got.CachedTokens, got.PromptTokens, kept, n-kept)
					}
					if c.name == "replayed" {
						return
					}
					// The next turn goes on from the whole reply, as it does from the reply of 12.
					a, err := s.Send(ctx, "And then?", greedy, nil)
					if err != nil {
						t.Fatal(err)
					}
					b, err := ref.Send(ctx, "And then?", greedy, nil)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(a.Tokens, b.Tokens) {
						t.Errorf("the turn after continue replied %v, after the reply of 12 %v", a.Tokens, b.Tokens)
					}
				})
			}
		}
	}
}

// TestContinueStopsAndCancels checks that a continuation ends where the
// reply in one go ends, at a stop token, and that a cancelled one keeps
// what it generated in the same message.
func TestContinueStopsAndCancels(t *testing.T) {
	ctx := context.Background()
	m := load(t, testModels[0], Options{})
	ref := newSession(t, m, card)
	long, err := ref.Send(ctx, "Tell me about the maps.", GenParams{MaxTokens: 12}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The reply's ninth token becomes a stop token.
	withStops(t, m, long.Tokens[8])
	if slices.Contains(long.Tokens[:8], long.Tokens[8]) {
		t.Skipf("token %d occurs before its ninth place in %v", long.Tokens[8], long.Tokens)
	}
	s := newSession(t, m, card)
	if _, err := s.Send(ctx, "Tell me about the maps.", GenParams{MaxTokens: 5}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := s.Continue(ctx, GenParams{MaxTokens: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Finish != FinishStop || !slices.Equal(r.Tokens, long.Tokens[5:8]) {
		t.Errorf("continue gave %v (%s), want %v then the stop", r.Tokens, r.Finish, long.Tokens[5:8])
	}

	s2 := newSession(t, m, card)
	if _, err := s2.Send(ctx, "Tell me about the maps.", GenParams{MaxTokens: 3}, nil); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	r, err = s2.Continue(cctx, GenParams{MaxTokens: 20}, func(string) {
		if n++; n == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || r == nil || r.Finish != FinishCancelled {
		t.Fatalf("got %v, %+v; want a cancelled continuation", err, r)
	}
	last := s2.Messages()[len(s2.Messages())-1]
	if !slices.Equal(last.Tokens, long.Tokens[:3+len(r.Tokens)]) || len(r.Tokens) < 2 {
		t.Errorf("after a cancelled continuation the reply holds %v, want %v", last.Tokens, long.Tokens[:3+len(r.Tokens)])
	}
}

// TestContinueRefusals checks what cannot be continued, and that a
// continuation that fails or does not fit leaves the conversation as it
// was, so that it can simply be tried again.
func TestContinueRefusals(t *testing.T) {
	ctx := context.Background()
	m := load(t, testModels[0], Options{CacheBytes: -1, Context: 64})
	fail := false
	m.Backend = failingBackend{m.Backend, &fail}
	s := newSession(t, m, "You are Ada.")
	if _, err := s.Continue(ctx, greedy, nil); err == nil {
		t.Error("continued a conversation without a reply")
	}
	if _, err := s.Send(ctx, "Hello.", GenParams{MaxTokens: 4}, nil); err != nil {
		t.Fatal(err)
	}
	msgs, toks := s.Messages(), s.Tokens()
	fail = true
	if _, err := s.Continue(ctx, greedy, nil); err == nil {
		t.Fatal("a continuation whose forward pass failed succeeded")
	}
	if !slices.Equal(s.Tokens(), toks) || !reflect.DeepEqual(s.Messages(), msgs) || s.KVLen() != 0 {
		t.Fatalf("a failed continuation changed the conversation: %d messages, %d tokens, %d of KV", len(s.Messages()), len(s.Tokens()), s.KVLen())
	}
	// The same from a replayed chat, whose reply is rendered from its text.
	rs := replayed(t, m, s)
	msgs = rs.Messages()
	if _, err := rs.Continue(ctx, greedy, nil); err == nil {
		t.Fatal("a replayed continuation whose forward pass failed succeeded")
	}
	if len(rs.Tokens()) != 0 || !reflect.DeepEqual(rs.Messages(), msgs) {
		t.Fatalf("a failed continuation changed the replayed conversation: %d tokens, messages %+v", len(rs.Tokens()), rs.Messages())
	}
	fail = false
	// Fill the context, then continue: refused, nothing changed.
	r, err := s.Continue(ctx, GenParams{}, nil)
	if err != nil || r.Finish != FinishLength && r.Finish != FinishStop {
		t.Fatalf("continue to the context's end: %v, %+v", err, r)
	}
	if r.Finish == FinishStop {
		t.Skip("the reply stopped before the context's end")
	}
	msgs, toks = s.Messages(), s.Tokens()
	if _, err := s.Continue(ctx, greedy, nil); !errors.Is(err, ErrContextFull) {
		t.Errorf("continue in a full context: %v, want ErrContextFull", err)
	}
	if !slices.Equal(s.Tokens(), toks) || !reflect.DeepEqual(s.Messages(), msgs) {
		t.Error("a refused continuation changed the conversation")
	}
}
