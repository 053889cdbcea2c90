package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
)

// TestChatImpossibleCommands checks that /regen before any reply and /edit
// with nothing to edit print a notice and the chat goes on (they ended it
// with exit 1).
func TestChatImpossibleCommands(t *testing.T) {
	stdout, stderr := runChatLoop(t, "/regen\n/edit Hello.\n/edit\nHi.\n/regen\n/edit Hello again.\n", "", "")
	for _, want := range []string{
		"/regen: there is no reply to regenerate yet",
		"/edit: there is no message of yours to edit yet",
		"/edit needs the new text",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no notice %q in:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, " prompt tokens ("); n != 3 {
		t.Errorf("%d replies, want 3 (Hi., /regen, /edit):\n%s\n%s", n, stdout, stderr)
	}
}

// TestChatContinueWithCard chats with a shared card that has post-history
// instructions, cuts a reply at 4 tokens and continues it with /continue:
// the saved chat holds one reply, the native engine's reply of 8 tokens
// generated after the card's instructions, which the save keeps.
func TestChatContinueWithCard(t *testing.T) {
	data, err := os.ReadFile("../../engine/chat/testdata/cards/v2-book.json")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := chat.ParseCard(data)
	if err != nil {
		t.Fatal(err)
	}
	card := sc.Card("Tom", "")
	if card.PostHistoryText() == "" {
		t.Fatal("the fixture card has no post_history_instructions")
	}
	save := filepath.Join(t.TempDir(), "chat.wick")
	o := chatOpts{model: modelFlags{dir: "../../testdata/cai-tiny", backend: "cpu"}, gen: genFlags{maxTokens: 4, topP: 1, repPenalty: 1}, card: card, save: save}
	_, notes := chatWith(t, o, "Hi.\n/continue\n")
	if !strings.Contains(notes, "[chat ended: 2 replies, ") {
		t.Errorf("notices %q: want 2 replies (Hi., /continue)", notes)
	}

	m, err := engine.Load("../../testdata/cai-tiny", engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	saved, err := os.ReadFile(save)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.RestoreSession(saved)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	want, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	if err := want.SetHistory(card.Messages()); err != nil {
		t.Fatal(err)
	}
	want.SetPostHistory(card.PostHistoryText())
	if _, err := want.Send(context.Background(), "Hi.", engine.GenParams{MaxTokens: 8}, nil); err != nil {
		t.Fatal(err)
	}
	gm, wm := got.Messages(), want.Messages()
	if len(gm) != len(wm) || !slices.Equal(gm[len(gm)-1].Tokens, wm[len(wm)-1].Tokens) || got.PostHistory() != card.PostHistoryText() {
		t.Errorf("saved chat: %d messages, last %+v, instructions %q; want %d, %+v, %q", len(gm), gm[len(gm)-1], got.PostHistory(), len(wm), wm[len(wm)-1], card.PostHistoryText())
	}
	if !strings.Contains(m.Tokenizer.Decode(got.Tokens()), card.PostHistoryText()) {
		t.Error("the saved conversation does not hold the card's instructions")
	}
}
