package main

import (
	"context"
	"flag"
	"os"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/golden-*.txt from the models' replies")

// TestBundledModelGolden chats with the bundled model as a new user of
// `wick chat` does (its default character, a first question) and compares
// the greedy reply with the committed one: a change to the engine, the
// prompt or the model that changes what people see shows up here. After a
// deliberate change (a retrained model), rewrite it with
//
//	go test ./cmd/wick -run TestBundledModelGolden -update
func TestBundledModelGolden(t *testing.T) {
	const golden = "testdata/golden-wick-cai-21m.txt"
	m, err := engine.Load("../../models/wick-cai-21m", engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetHistory(chat.DefaultCard.Messages()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Send(context.Background(), "Who are you?", engine.GenParams{MaxTokens: 32}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(r.Text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if r.Text != string(want) {
		t.Fatalf("the bundled model's greedy reply changed:\n got %q\nwant %q\n(after a deliberate change: go test ./cmd/wick -run TestBundledModelGolden -update)", r.Text, want)
	}
	t.Logf("reply (%s): %q", r.Finish, r.Text)
}
