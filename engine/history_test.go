package engine

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/chat"
)

// TestSetHistory checks that a session seeded with SetHistory renders the
// conversation exactly as the chat template does, replies as a session that
// reached the same point by itself, and keeps the KV of the messages it
// shares with what it held before.
func TestSetHistory(t *testing.T) {
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir, Options{})
			ctx := context.Background()
			history := []chat.Message{
				{Role: chat.System, Content: "You are Ada. You like maps."},
				{Role: chat.User, Content: "Hello, who are you?"},
				{Role: chat.Assistant, Content: "I am Ada."},
			}

			// A fresh session: the tokens are the template's rendering.
			s := newSession(t, m, "dropped: SetHistory replaces it")
			if err := s.SetHistory(history); err != nil {
				t.Fatal(err)
			}
			r1, err := s.Send(ctx, "Tell me about the sea.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := m.Template.Encode(append(slices.Clone(history), chat.Message{Role: chat.User, Content: "Tell me about the sea."}), true)
			if got := s.Tokens(); !slices.Equal(got[:min(len(want), len(got))], want) {
				t.Fatalf("rendered %v, template says %v", got, want)
			}
			if r1.CachedTokens != 0 || r1.PromptTokens != len(want) {
				t.Errorf("fresh history: %d cached, %d prompt tokens; want 0, %d", r1.CachedTokens, r1.PromptTokens, len(want))
			}

			// The same conversation again, as a client resends it: all of the
			// session's KV is kept, and the reply is that of a session that
			// continues on its own.
			before := len(s.Tokens())
			again := s.Messages()
			cont := newSession(t, m, "")
			if err := cont.SetHistory(again); err != nil {
				t.Fatal(err)
			}
			rCont, err := cont.Send(ctx, "And the mountains?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetHistory(again); err != nil {
				t.Fatal(err)
			}
			r2, err := s.Send(ctx, "And the mountains?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r2.CachedTokens != before {
				t.Errorf("resent history reused %d tokens of KV, want all %d", r2.CachedTokens, before)
			}
			if !slices.Equal(r2.Tokens, rCont.Tokens) {
				t.Errorf("reply after resent history %v, fresh session %v", r2.Tokens, rCont.Tokens)
			}

			// A different conversation with the same system prompt: the reply
			// is that of a fresh session.
			other := []chat.Message{history[0], {Role: chat.User, Content: "Draw me a map."}, {Role: chat.Assistant, Content: "Here."}}
			fresh := newSession(t, m, "")
			if err := fresh.SetHistory(other); err != nil {
				t.Fatal(err)
			}
			rFresh, err := fresh.Send(ctx, "Thanks.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetHistory(other); err != nil {
				t.Fatal(err)
			}
			r3, err := s.Send(ctx, "Thanks.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r3.Tokens, rFresh.Tokens) || !slices.Equal(s.Tokens(), fresh.Tokens()) {
				t.Errorf("reused session replied %v, fresh session %v", r3.Tokens, rFresh.Tokens)
			}
			if r3.CachedTokens+r3.PromptTokens != rFresh.CachedTokens+rFresh.PromptTokens {
				t.Errorf("reused session: %d cached + %d prompt tokens, fresh session %d + %d", r3.CachedTokens, r3.PromptTokens, rFresh.CachedTokens, rFresh.PromptTokens)
			}
		})
	}
}

func TestSetHistoryUnknownRole(t *testing.T) {
	m := load(t, testModels[0], Options{})
	s := newSession(t, m, "")
	err := s.SetHistory([]chat.Message{{Role: chat.User, Content: "hi"}, {Role: chat.Role(7)}})
	if err == nil || !strings.Contains(err.Error(), "message 1") {
		t.Fatalf("got %v, want an error naming message 1", err)
	}
	if len(s.Messages()) != 0 {
		t.Errorf("a refused history changed the conversation: %v", s.Messages())
	}
}
