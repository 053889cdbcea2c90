package engine

import (
	"fmt"
	"slices"

	"github.com/wick-run/wick/engine/chat"
)

// SetHistory replaces the conversation with msgs without generating: the
// next Send continues from them, as a server does when a client sends the
// whole conversation with every request. The system prompt given to
// NewSession is replaced too; include it in msgs to keep it.
//
// Messages are copied. The KV cache of the longest run of leading messages
// that msgs shares with the current conversation is kept where the layout
// allows a rewind to it; the rest is prefilled by the next Send. Assistant
// messages are compared with their Tokens too, since tokens, not text, are
// what the cache holds. Nothing is tokenised or computed here, so a
// conversation too long for the context is refused by the next Send.
func (s *Session) SetHistory(msgs []chat.Message) error {
	for i, m := range msgs {
		if m.Role > chat.Assistant {
			return fmt.Errorf("set history: message %d has unknown role %v", i, m.Role)
		}
	}
	keep := 0
	for keep < len(msgs) && keep < len(s.msgs) && sameMessage(s.msgs[keep], msgs[keep]) {
		keep++
	}
	// Truncating at the very end would close an open reply; keeping every
	// message needs no truncation at all.
	if keep < len(s.msgs) {
		s.truncate(keep)
	}
	for _, m := range msgs[keep:] {
		m.Tokens = slices.Clone(m.Tokens)
		s.msgs = append(s.msgs, m)
	}
	return nil
}

// sameMessage reports whether a and b render to the same tokens after the
// same earlier messages.
func sameMessage(a, b chat.Message) bool {
	if a.Role != b.Role || a.Content != b.Content {
		return false
	}
	if a.Role != chat.Assistant {
		return true
	}
	return (a.Tokens == nil) == (b.Tokens == nil) && slices.Equal(a.Tokens, b.Tokens)
}
