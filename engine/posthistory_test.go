package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

const postHistory = "Answer as Ada, briefly."

// TestPostHistoryInPrompt checks where post-history instructions stand:
// after the history, before the reply, once, and not in the history of the
// next turn; and that the next reply is what a fresh session given the
// same history replies (so cutting them out of the KV is exact).
func TestPostHistoryInPrompt(t *testing.T) {
	ctx := context.Background()
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir, Options{})
			s := newSession(t, m, card)
			s.SetPostHistory(postHistory)
			r1, err := s.Send(ctx, "Hello, Ada.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			text := m.Tokenizer.Decode(s.Tokens())
			sys, user, post := strings.Index(text, card), strings.Index(text, "Hello, Ada."), strings.Index(text, postHistory)
			if sys < 0 || !(sys < user && user < post) || strings.Count(text, postHistory) != 1 {
				t.Fatalf("prompt %q: want the system prompt, the message, then the instructions once", text)
			}
			gen := m.Template.GenerationPrompt()
			wantTail := append(append(m.Template.PostHistory(s.Messages()[:2], postHistory), gen...), r1.Tokens...)
			if !slices.Equal(s.Tokens()[len(s.Tokens())-len(wantTail):], wantTail) {
				t.Errorf("the conversation does not end in the instructions, the generation prompt and the reply")
			}
			r2, err := s.Send(ctx, "Which map is oldest?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			text = m.Tokenizer.Decode(s.Tokens())
			if strings.Count(text, postHistory) != 1 || strings.Index(text, postHistory) < strings.Index(text, "Which map is oldest?") {
				t.Errorf("second turn's prompt %q: want the instructions once, after the newest message", text)
			}
			// A fresh session rendering the same history in one go.
			f := newSession(t, m, "")
			f.SetPostHistory(postHistory)
			if err := f.SetHistory(s.Messages()[:4]); err != nil {
				t.Fatal(err)
			}
			want, err := f.reply(ctx, greedy, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r2.Tokens, want.Tokens) || !slices.Equal(s.Tokens(), f.Tokens()) {
				t.Errorf("second reply %v, a fresh session's %v", r2.Tokens, want.Tokens)
			}
			// Regenerate puts the instructions back before the new reply.
			r3, err := s.Regenerate(ctx, greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r3.Tokens, r2.Tokens) || !slices.Equal(s.Tokens(), f.Tokens()) {
				t.Errorf("regenerated %v, first %v", r3.Tokens, r2.Tokens)
			}
		})
	}
}

// TestOldSaveWithPostHistory checks a chat saved before post-history
// instructions reached the prompt, continued with a card that has them:
// its tokens are the history's rendering, which the instructions do not
// change, so its KV is still good and the next reply is exactly what a
// replay from its messages gives. A save made with instructions comes
// back with them.
func TestOldSaveWithPostHistory(t *testing.T) {
	ctx := context.Background()
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir, Options{CacheBytes: -1})
			old := newSession(t, m, card)
			for _, msg := range []string{"Hello, Ada.", "Which map is oldest?"} {
				if _, err := old.Send(ctx, msg, greedy, nil); err != nil {
					t.Fatal(err)
				}
			}
			saved, err := old.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			next := func(s *Session) *Reply {
				t.Helper()
				t.Cleanup(func() { s.Close() })
				s.SetPostHistory(postHistory)
				r, err := s.Send(ctx, "And the newest?", greedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			restoredS, err := m.RestoreSession(saved)
			if err != nil {
				t.Fatal(err)
			}
			got := next(restoredS)
			// Its messages (reply tokens included) replayed in a fresh session.
			replayedS := newSession(t, m, "")
			if err := replayedS.SetHistory(old.Messages()); err != nil {
				t.Fatal(err)
			}
			want := next(replayedS)
			if !slices.Equal(got.Tokens, want.Tokens) || got.CachedTokens != len(old.Tokens()) {
				t.Errorf("restored old save replied %v with %d tokens of KV; replayed %v; want the same and all %d", got.Tokens, got.CachedTokens, want.Tokens, len(old.Tokens()))
			}
			if !slices.Equal(restoredS.Tokens(), replayedS.Tokens()) {
				t.Error("the restored and the replayed chat differ in tokens")
			}
			// From its texts alone (the fallback for a save of another model).
			fromText, err := m.ReplaySession(saved)
			if err != nil {
				t.Fatal(err)
			}
			next(fromText)
			if text := m.Tokenizer.Decode(fromText.Tokens()); strings.Count(text, postHistory) != 1 || strings.Index(text, postHistory) < strings.Index(text, "And the newest?") {
				t.Errorf("replayed from text: prompt %q lacks the instructions after the newest message", text)
			}

			// A save with instructions before its open reply.
			data, err := restoredS.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			again, err := m.RestoreSession(data)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			if again.PostHistory() != postHistory {
				t.Errorf("restored instructions %q, want %q", again.PostHistory(), postHistory)
			}
			a, err := again.Send(ctx, "Thank you.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := restoredS.Send(ctx, "Thank you.", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.Tokens, b.Tokens) || !slices.Equal(again.Tokens(), restoredS.Tokens()) {
				t.Errorf("after a save with instructions: %v, uninterrupted %v", a.Tokens, b.Tokens)
			}
		})
	}
}

// TestPrefillProgress checks OnPrefill: it counts the turn's prompt up to
// its end, in steps no longer than prefillChunk, never going back, with and
// without the prefix cache, and on a second turn only its new tokens.
func TestPrefillProgress(t *testing.T) {
	ctx := context.Background()
	for _, cache := range []int64{-1, 0} {
		m := load(t, testModels[0], Options{CacheBytes: cache})
		s := newSession(t, m, card+strings.Repeat(" Ada keeps maps of every coast.", 3))
		for turn, msg := range []string{"Hello, Ada.", strings.Repeat("Tell me more. ", 10)} {
			var steps [][2]int
			p := greedy
			p.OnPrefill = func(done, total int) { steps = append(steps, [2]int{done, total}) }
			r, err := s.Send(ctx, msg, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) < 2 {
				t.Fatalf("cache %d, turn %d: %d progress reports for %d tokens", cache, turn, len(steps), r.PromptTokens)
			}
			prev := 0
			for _, st := range steps {
				if st[1] != r.PromptTokens || st[0] <= prev || st[0]-prev > prefillChunk {
					t.Fatalf("cache %d, turn %d: reports %v for a prompt of %d tokens", cache, turn, steps, r.PromptTokens)
				}
				prev = st[0]
			}
			if prev != r.PromptTokens {
				t.Errorf("cache %d, turn %d: progress ended at %d of %d", cache, turn, prev, r.PromptTokens)
			}
		}
	}
}

// TestCancelWhileReading checks a cancel while a long prompt is read: the
// reading stops at the next chunk, the reply ends as cancelled with no
// tokens, and the next turn reads the rest and replies as a fresh session
// given the same conversation does.
func TestCancelWhileReading(t *testing.T) {
	ctx := context.Background()
	m := load(t, testModels[0], Options{CacheBytes: -1})
	s := newSession(t, m, card+strings.Repeat(" Ada keeps maps of every coast.", 3))
	cctx, cancel := context.WithCancel(ctx)
	p := greedy
	reports := 0
	p.OnPrefill = func(done, total int) {
		if reports++; reports == 1 {
			cancel()
		}
	}
	r, err := s.Send(cctx, "Hello, Ada.", p, nil)
	if !errors.Is(err, context.Canceled) || r == nil || r.Finish != FinishCancelled || len(r.Tokens) != 0 {
		t.Fatalf("cancelled while reading: %v, %+v", err, r)
	}
	if reports != 1 || r.PromptTokens != prefillChunk || s.KVLen() != prefillChunk {
		t.Errorf("%d reports, %d tokens read, %d of KV; want the reading stopped after the first chunk of %d", reports, r.PromptTokens, s.KVLen(), prefillChunk)
	}
	got, err := s.Send(ctx, "Are you there?", greedy, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newSession(t, m, "")
	if err := f.SetHistory(s.Messages()[:len(s.Messages())-1]); err != nil {
		t.Fatal(err)
	}
	want, err := f.reply(ctx, greedy, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tokens, want.Tokens) || !slices.Equal(s.Tokens(), f.Tokens()) {
		t.Errorf("after a cancelled reading: %v, a fresh session %v", got.Tokens, want.Tokens)
	}
}
