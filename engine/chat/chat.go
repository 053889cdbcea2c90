// Package chat renders conversations into the token sequence a chat model
// expects, following the model's chat template from its manifest.
//
// The rendering is built so that KV caching between turns works: the tokens
// of a conversation are always a prefix of the tokens of the same
// conversation with more messages, and an assistant message can be rendered
// from the very tokens the model generated, so the next turn's sequence
// extends what is already in the cache instead of diverging from it.
package chat

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/tokenizer"
)

// Role says who wrote a message.
type Role uint8

const (
	System    Role = iota // instructions to the model (for wick, the character card)
	User                  // the person chatting
	Assistant             // the model
)

// String returns the role's lowercase name.
func (r Role) String() string {
	switch r {
	case System:
		return "system"
	case User:
		return "user"
	case Assistant:
		return "assistant"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Message is one turn of a conversation.
type Message struct {
	Role    Role
	Content string
	// Tokens, for an assistant message the model generated, are the ids it
	// sampled, without the stop token that ended the turn. When Tokens is
	// non-nil, Encode uses it instead of encoding Content, because a model
	// often spells its text differently from how the tokenizer would encode
	// it, and only its own spelling matches the KV cache. Template.Generated
	// builds such a message. Ignored for other roles.
	Tokens []int32
}

// blankLine separates a folded system prompt from the first user message.
const blankLine = "\n\n"

// Template renders conversations for one model. It is safe for concurrent
// use.
type Template struct {
	tok     *tokenizer.Tokenizer
	bos     int32 // -1: none
	fold    bool  // system prompt goes into the first user turn
	roles   [3]roleText
	special map[string]int32 // the template's special-token texts
	stops   []int32
	// defaultSystem is the system message written before a conversation
	// that does not start with one; nil: none.
	defaultSystem *string
}

// roleText is a RoleFormat.
type roleText struct{ prefix, suffix string }

// New checks a manifest's chat template against the tokenizer and prepares
// it. It fails when the bos or a stop id is outside the vocabulary, when
// there is no stop id (generation would never end), or when a special token's
// text and id disagree with the tokenizer.
//
// Role prefixes and suffixes are split at the template's special-token texts,
// which become their ids whatever the tokenizer's piece type for them, and the
// text between is encoded normally. The tokenizer alone already matches
// user-defined pieces such as Gemma's <start_of_turn>, but SentencePiece never
// matches control pieces (<bos>, <eos>) in text, and a template may need them.
// With fold_system_into_first_user the system format is not used.
func New(t *manifestpb.ChatTemplate, tok *tokenizer.Tokenizer) (*Template, error) {
	if t == nil {
		return nil, errors.New("chat template: missing")
	}
	if tok == nil {
		return nil, errors.New("chat template: no tokenizer")
	}
	vocab := tok.Vocab()
	inVocab := func(id int32) bool { return id >= 0 && int(id) < vocab }
	fail := func(format string, args ...any) error {
		return fmt.Errorf("chat template (tokenizer %s, %d pieces): %s", tok.Name(), vocab, fmt.Sprintf(format, args...))
	}

	tm := &Template{tok: tok, bos: t.GetBosId(), fold: t.GetFoldSystemIntoFirstUser()}
	if tm.bos != -1 && !inVocab(tm.bos) {
		return nil, fail("bos_id %d is outside the vocabulary (-1 means none)", tm.bos)
	}
	if len(t.GetStopIds()) == 0 {
		return nil, fail("no stop_ids")
	}
	for _, id := range t.GetStopIds() {
		if !inVocab(id) {
			return nil, fail("stop id %d is outside the vocabulary", id)
		}
	}
	tm.stops = slices.Clone(t.GetStopIds())

	special := make(map[string]int32)
	for i, st := range t.GetSpecialTokens() {
		text, id := st.GetText(), st.GetId()
		switch want, ok := tok.ID(text); {
		case text == "":
			return nil, fail("special_tokens[%d] has no text", i)
		case !inVocab(id):
			return nil, fail("special token %q: id %d is outside the vocabulary", text, id)
		case !ok:
			return nil, fail("special token %q (id %d) is not a piece of the tokenizer", text, id)
		case want != id:
			return nil, fail("special token %q has id %d, the tokenizer says %d", text, id, want)
		}
		special[text] = id
	}
	tm.special = special
	formats := [...]*manifestpb.RoleFormat{System: t.GetSystem(), User: t.GetUser(), Assistant: t.GetAssistant()}
	for r, f := range formats {
		tm.roles[r] = roleText{prefix: f.GetPrefix(), suffix: f.GetSuffix()}
	}
	if t.DefaultSystem != nil {
		if tm.fold {
			return nil, fail("a default system message with the system prompt folded into the first user turn")
		}
		d := t.GetDefaultSystem()
		tm.defaultSystem = &d
	}
	return tm, nil
}

// enc encodes template text, special-token texts as their ids.
func (tm *Template) enc(s string) []int32 { return encodeWithSpecials(tm.tok, tm.special, s) }

// encMessage encodes a message's template prefix, content and template
// suffix as one text: only the template's special tokens split it (the
// content's text is left to the tokenizer, which never matches control
// tokens such as <eos> in it), and the text on either side of the
// content's edges is encoded together with it.
func (tm *Template) encMessage(prefix, content, suffix string) []int32 {
	var ids []int32
	var text strings.Builder
	flush := func() {
		ids = append(ids, tm.tok.Encode(text.String())...)
		text.Reset()
	}
	template := func(s string) {
		for len(s) > 0 {
			at, sp := nextSpecial(tm.special, s)
			if at < 0 {
				text.WriteString(s)
				return
			}
			text.WriteString(s[:at])
			flush()
			ids = append(ids, tm.special[sp])
			s = s[at+len(sp):]
		}
	}
	template(prefix)
	text.WriteString(content)
	template(suffix)
	flush()
	return ids
}

// encodeWithSpecials encodes s, turning every occurrence of a special
// token's text into its id (the longest text wins where several start at the
// same place) and encoding the text between with the tokenizer.
func encodeWithSpecials(tok *tokenizer.Tokenizer, special map[string]int32, s string) []int32 {
	var ids []int32
	for len(s) > 0 {
		at, text := nextSpecial(special, s)
		if at < 0 {
			return append(ids, tok.Encode(s)...)
		}
		ids = append(ids, tok.Encode(s[:at])...)
		ids = append(ids, special[text])
		s = s[at+len(text):]
	}
	return ids
}

// nextSpecial finds the first special-token text in s (the longest where
// several start at one place); at is -1 when there is none.
func nextSpecial(special map[string]int32, s string) (at int, text string) {
	at = -1
	for t := range special {
		i := strings.Index(s, t)
		if i >= 0 && (at < 0 || i < at || i == at && len(t) > len(text)) {
			at, text = i, t
		}
	}
	return at, text
}

// Encode renders a conversation into token ids: bos (once, if the template
// has one), then each message as its role's prefix, its content and its
// role's suffix, the text of each message encoded on its own (split only at
// the template's special tokens, as Hugging Face encodes a rendered
// template: a tokenizer that prepends "▁" to every stretch of text between
// special tokens, as Phi-3's does, must see "\nHello" whole), then, if
// addGenerationPrompt, the assistant prefix that the model's reply follows.
// It is Begin, then EncodeMessage for each message in turn, then
// GenerationPrompt.
//
// Because messages are encoded separately, Encode(msgs[:k], false) is a
// prefix of Encode(msgs, x) for every k, and Encode(msgs, true) followed by a
// reply's tokens and its stop token is a prefix of the rendering of msgs plus
// that reply (see Generated). KV reuse between turns relies on both.
//
// An assistant message with Tokens is rendered from them: prefix, Tokens,
// suffix. When the suffix begins with the stop token the model ended on
// (Gemma: "<end_of_turn>\n", stopping at <end_of_turn>), that is exactly what
// the model produced, up to and including the stop token, followed by the rest
// of the suffix ("\n"). A model that ends on another stop id (Gemma's <eos>)
// differs from the rendering in that one token, which is recomputed.
//
// When the template folds the system prompt into the first user message
// (models without a system role, such as Gemma), a system message opens a user
// turn: the user prefix and the system text. A user message right after it
// continues that turn with a blank line, its text and the user suffix;
// anything else after it (a character's greeting, the generation prompt)
// first closes the turn with the user suffix. The open turn is what lets both
// continuations extend the same tokens. An empty system message is left out.
//
// Content is encoded as text, in which the tokenizer matches user-defined
// symbols: a user who types <end_of_turn> produces the real token, as with
// SentencePiece and Hugging Face templates. Roles other than the three known
// ones are rendered as user messages.
func (tm *Template) Encode(msgs []Message, addGenerationPrompt bool) []int32 {
	ids := tm.Begin()
	for i := range msgs {
		ids = append(ids, tm.EncodeMessage(msgs, i)...)
	}
	if addGenerationPrompt {
		if tm.openSystem(msgs, len(msgs)) {
			ids = append(ids, tm.enc(tm.roles[User].suffix)...)
		}
		ids = append(ids, tm.GenerationPrompt()...)
	}
	return ids
}

// Begin returns the tokens a conversation starts with: bos, or nothing.
func (tm *Template) Begin() []int32 {
	if tm.bos < 0 {
		return nil
	}
	return []int32{tm.bos}
}

// EncodeMessage returns the tokens that message i adds to the rendering of
// msgs[:i], so that a session can render a conversation as it grows. They
// depend only on msgs[i] and the messages before it (see Encode for folded
// system prompts); an i outside msgs gives nil. The first message's tokens
// begin with the template's default system message when it is not a
// system message itself.
func (tm *Template) EncodeMessage(msgs []Message, i int) []int32 {
	if i < 0 || i >= len(msgs) {
		return nil
	}
	if i == 0 && msgs[0].Role != System && tm.defaultSystem != nil {
		// The template's own system message stands before a conversation
		// without one; it belongs to the first message's tokens, so that
		// they depend on msgs[0] alone.
		f := tm.roles[System]
		ids := tm.encMessage(f.prefix, *tm.defaultSystem, f.suffix)
		return append(ids, tm.encodeMessage(msgs, 0)...)
	}
	return tm.encodeMessage(msgs, i)
}

func (tm *Template) encodeMessage(msgs []Message, i int) []int32 {
	m := msgs[i]
	user := tm.roles[User]
	afterSystem := tm.openSystem(msgs, i)
	switch {
	case m.Role == System && tm.fold && m.Content == "":
		return nil
	case (m.Role == User || m.Role > Assistant) && afterSystem:
		return tm.encMessage("", blankLine+m.Content, user.suffix)
	}
	var ids []int32
	if afterSystem {
		ids = tm.enc(user.suffix)
	}
	switch {
	case m.Role == System && tm.fold:
		return append(ids, tm.encMessage(user.prefix, m.Content, "")...)
	case m.Role == Assistant && m.Tokens != nil:
		f := tm.roles[Assistant]
		ids = append(ids, tm.enc(f.prefix)...)
		ids = append(ids, m.Tokens...)
		return append(ids, tm.enc(f.suffix)...)
	}
	f := user
	if m.Role == System || m.Role == Assistant {
		f = tm.roles[m.Role]
	}
	return append(ids, tm.encMessage(f.prefix, m.Content, f.suffix)...)
}

// openSystem reports whether the rendering of msgs[:i] ends inside a user
// turn opened by a folded system message (empty ones render nothing and are
// skipped).
func (tm *Template) openSystem(msgs []Message, i int) bool {
	if !tm.fold {
		return false
	}
	for j := i - 1; j >= 0; j-- {
		if msgs[j].Role != System {
			return false
		}
		if msgs[j].Content != "" {
			return true
		}
	}
	return false
}

// PostHistory returns the tokens of instructions that stand after the
// conversation msgs, before the generation prompt (a character card's
// post_history_instructions): a system message after msgs, closed where a
// template that folds the system prompt opens a user turn for it. Empty
// text gives nil.
func (tm *Template) PostHistory(msgs []Message, text string) []int32 {
	if text == "" {
		return nil
	}
	all := append(slices.Clip(msgs), Message{Role: System, Content: text})
	ids := tm.EncodeMessage(all, len(msgs))
	if tm.openSystem(all, len(all)) {
		ids = append(ids, tm.enc(tm.roles[User].suffix)...)
	}
	return ids
}

// GenerationPrompt returns the assistant prefix, which the model's reply
// follows: what Encode appends for addGenerationPrompt after a user or
// assistant message.
func (tm *Template) GenerationPrompt() []int32 {
	return tm.enc(tm.roles[Assistant].prefix)
}

// AssistantSuffix returns the tokens that close an assistant turn. A session
// that keeps the generated tokens (stop token excluded) appends these before
// the next message; the result is the rendering of a Generated message.
func (tm *Template) AssistantSuffix() []int32 {
	return tm.enc(tm.roles[Assistant].suffix)
}

// Generated returns the assistant message for tokens the model sampled after
// Encode(msgs, true): one trailing stop id, if any, is dropped, Tokens keeps
// the rest (copied) so that the next Encode extends the KV cache exactly, and
// Content is their text.
func (tm *Template) Generated(ids []int32) Message {
	if n := len(ids); n > 0 && tm.IsStop(ids[n-1]) {
		ids = ids[:n-1]
	}
	tokens := make([]int32, len(ids)) // non-nil even when empty: the reply was empty
	copy(tokens, ids)
	return Message{Role: Assistant, Content: tm.tok.Decode(tokens), Tokens: tokens}
}

// IsStop reports whether generation ends at id.
func (tm *Template) IsStop(id int32) bool { return slices.Contains(tm.stops, id) }

// StopIDs returns the ids generation ends at (a copy), for a sampler that
// checks them on the GPU.
func (tm *Template) StopIDs() []int32 { return slices.Clone(tm.stops) }

// GemmaChatTemplate returns Gemma's chat template for tok, as a manifest
// stores it:
//
//	<bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n{reply}<end_of_turn>\n...
//
// stopping at <end_of_turn> or <eos>, with the system prompt folded into the
// first user message because Gemma has no system role. The ids of <bos>,
// <eos>, <start_of_turn> and <end_of_turn> come from tok.
func GemmaChatTemplate(tok *tokenizer.Tokenizer) (*manifestpb.ChatTemplate, error) {
	if tok == nil {
		return nil, errors.New("gemma chat template: no tokenizer")
	}
	ids := make(map[string]int32)
	var special []*manifestpb.SpecialToken
	for _, p := range []string{"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"} {
		id, ok := tok.ID(p)
		if !ok {
			return nil, fmt.Errorf("gemma chat template: tokenizer %s has no %s piece", tok.Name(), p)
		}
		ids[p] = id
		special = append(special, &manifestpb.SpecialToken{Text: p, Id: id})
	}
	return &manifestpb.ChatTemplate{
		BosId:                   ids["<bos>"],
		User:                    &manifestpb.RoleFormat{Prefix: "<start_of_turn>user\n", Suffix: "<end_of_turn>\n"},
		Assistant:               &manifestpb.RoleFormat{Prefix: "<start_of_turn>model\n", Suffix: "<end_of_turn>\n"},
		FoldSystemIntoFirstUser: true,
		StopIds:                 []int32{ids["<end_of_turn>"], ids["<eos>"]},
		SpecialTokens:           special,
	}, nil
}

// GemmaTemplate returns the Template of GemmaChatTemplate, wick's default.
func GemmaTemplate(tok *tokenizer.Tokenizer) (*Template, error) {
	t, err := GemmaChatTemplate(tok)
	if err != nil {
		return nil, err
	}
	return New(t, tok)
}
