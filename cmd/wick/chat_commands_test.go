package main

import (
	"strings"
	"testing"
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
