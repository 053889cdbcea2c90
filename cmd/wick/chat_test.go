package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wick-run/wick/engine/chat"
)

// runChatLoop runs the chat on the test model with stdin and returns what it
// printed to stdout and stderr.
func runChatLoop(t *testing.T, stdin, save, resume string) (stdout, stderr string) {
	t.Helper()
	o := chatOpts{
		model:  modelFlags{dir: "../../testdata/cai-tiny", backend: "cpu"},
		gen:    genFlags{maxTokens: 10, topP: 1, repPenalty: 1},
		system: "You are Ada, a cartographer of the northern seas. You speak briefly and love old maps.",
		save:   save, resume: resume,
	}
	if resume != "" {
		o.system = ""
	}
	return chatWith(t, o, stdin)
}

// chatWith runs chatLoop with o and stdin and returns what it printed.
func chatWith(t *testing.T, o chatOpts, stdin string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := chatLoop(o, strings.NewReader(stdin), &out, &errOut); err != nil {
		t.Fatalf("chat: %v\n%s", err, errOut.String())
	}
	return out.String(), errOut.String()
}

var (
	resumedLine = regexp.MustCompile(`resumed 3 messages from .*, (\d+) of (\d+) tokens with their KV restored`)
	statsLine   = regexp.MustCompile(`(\d+) prompt tokens \((\d+) cached\)`)
)

// TestChatSaveResume chats one turn with -save, resumes in a new chat loop
// (which loads the model again) and checks that the second turn replies as
// an uninterrupted chat does without recomputing the first.
func TestChatSaveResume(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ada.chat")
	whole, wholeNotes := runChatLoop(t, "Hello there.\nWhich map is oldest?\n", "", "")
	first, _ := runChatLoop(t, "Hello there.\n", file, "")
	r1 := strings.TrimSuffix(strings.TrimPrefix(first, "> "), "\n> \n")
	r2, ok := strings.CutPrefix(whole, "> "+r1+"\n> ")
	if !ok {
		t.Fatalf("the uninterrupted chat %q does not begin with the first reply %q", whole, r1)
	}
	r2 = strings.TrimSuffix(r2, "\n> \n")

	resumed, notes := runChatLoop(t, "Which map is oldest?\n", file, file)
	if want := "(last reply) " + r1 + "\n> " + r2 + "\n> \n"; resumed != want {
		t.Errorf("resumed chat printed %q, want %q", resumed, want)
	}
	m := resumedLine.FindStringSubmatch(notes)
	s := statsLine.FindStringSubmatch(notes)
	if m == nil || s == nil {
		t.Fatalf("notices %q lack the resume or the reply line", notes)
	}
	if m[1] != m[2] || s[2] != m[1] {
		t.Errorf("restored KV of %s of %s tokens, the next turn reused %s: want all", m[1], m[2], s[2])
	}
	if w := statsLine.FindAllStringSubmatch(wholeNotes, -1); len(w) != 2 || w[1][1] != s[1] {
		t.Errorf("the resumed turn prefilled %s tokens, the uninterrupted chat's second turn %v", s[1], w)
	}
	// The saved file now holds both turns.
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}
	_, notes = runChatLoop(t, "", "", file)
	if !strings.Contains(notes, "resumed 5 messages") {
		t.Errorf("second resume: %q, want 5 messages", notes)
	}
}

func TestChatResumeRefusesDamagedFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.chat")
	if err := os.WriteFile(file, []byte("wickKV\r\n\x01\x00\x00\x00 and then nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := chatOpts{model: modelFlags{dir: "../../testdata/cai-tiny", backend: "cpu"}, resume: file}
	var out bytes.Buffer
	err := chatLoop(o, strings.NewReader(""), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "corrupted or truncated") {
		t.Fatalf("got %v, want a corrupted-file error", err)
	}
}

// replies splits a chat's stdout into the replies after each prompt.
func replies(stdout string) []string {
	var out []string
	for _, part := range strings.Split(stdout, "> ")[1:] {
		if r := strings.TrimSuffix(part, "\n"); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// TestChatRegenerateSamplesAfresh regenerates at temperature 1 on the tiny
// random model, whose next-token distribution is nearly flat: every reply
// must differ, because each samples with its own seed. At temperature 0
// they must all be the same.
func TestChatRegenerateSamplesAfresh(t *testing.T) {
	for _, tt := range []struct {
		name string
		temp float64
		same bool
	}{{"temperature 1", 1, false}, {"greedy", 0, true}} {
		t.Run(tt.name, func(t *testing.T) {
			o := chatOpts{
				model: modelFlags{dir: "../../testdata/cai-tiny", backend: "cpu"},
				gen:   genFlags{maxTokens: 12, temp: tt.temp, topP: 1, repPenalty: 1, seed: 7},
				card:  chat.DefaultCard,
			}
			out, _ := chatWith(t, o, "Hello.\n/regen\n/regen\n")
			r := replies(out)
			if len(r) != 3 {
				t.Fatalf("got %d replies, want 3: %q", len(r), out)
			}
			if same := r[0] == r[1] && r[1] == r[2]; same != tt.same {
				t.Fatalf("replies %q: all the same %v, want %v", r, same, tt.same)
			}
			if !tt.same && (r[0] == r[1] || r[1] == r[2] || r[0] == r[2]) {
				t.Fatalf("replies %q: two regenerations gave the same text", r)
			}
		})
	}
}

// TestChatCharacters checks who the terminal chat plays: the default
// character, or a shared card's, with its greeting shown (names
// substituted) and a closing line of totals.
func TestChatCharacters(t *testing.T) {
	card, err := os.ReadFile("../../engine/chat/testdata/cards/v2-book.json")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := chat.ParseCard(card)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		card     chat.Card
		greeting string
	}{
		{"default character", chat.DefaultCard, "Maren: " + chat.DefaultCard.Greeting},
		{"shared card", sc.Card("Tom", "A traveller."), "Captain Ives: *slaps the rail* Steady, old girl. Welcome aboard, Tom."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := chatOpts{model: modelFlags{dir: "../../testdata/cai-tiny", backend: "cpu"}, gen: genFlags{maxTokens: 4, topP: 1, repPenalty: 1}, card: tt.card}
			out, notes := chatWith(t, o, "Hi.\n")
			if !strings.HasPrefix(out, tt.greeting+"\n> ") {
				t.Errorf("the chat began %q, want the greeting %q", out, tt.greeting)
			}
			if !strings.Contains(notes, "as "+tt.card.Name+",") || !strings.Contains(notes, "[chat ended: 1 replies, ") {
				t.Errorf("notices %q: want the character named and the totals at the end", notes)
			}
		})
	}
}

// TestSilenceStderr checks that what C libraries write to fd 2 while the
// model loads is dropped, and that wick's own notices still get through.
func TestSilenceStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(int(w.Fd()), 2); err != nil {
		t.Fatal(err)
	}
	real, restore := silenceStderr()
	unix.Write(2, []byte("library noise\n"))
	fmt.Fprint(real, "notice\n")
	restore()
	unix.Write(2, []byte("after\n"))
	unix.Dup2(orig, 2)
	unix.Close(orig)
	w.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "notice\nafter\n" {
		t.Fatalf("stderr got %q, want the notice and what came after, without the noise", got)
	}
}
