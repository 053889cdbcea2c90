package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
