package jinja

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/tokenizer"
)

// Compile turns a chat template into wick's role format (a bos, and a
// prefix and suffix per role), which the runtime renders append-only so
// that every turn extends the KV cache of the one before.
//
// It renders probe conversations with marker texts in place of the
// messages and reads the text around the markers: the generation prompt is
// what add_generation_prompt appends after a user message; the user suffix
// is what a user message is followed by either way (cut at a special
// token's start, so that Phi's eos after the last message is not taken
// for it); the rest follows from conversations with a system message, an
// assistant reply and a second user message. A template that puts the
// system prompt into the first user message (Gemma's kind) is recognised
// by the blank line between them.
//
// The system turn a template writes when a conversation has no system
// message (Qwen 2.5's and SmolLM2's default prompt, Llama 3's dated turn)
// is kept as the format's default system message.
//
// Compile then renders further conversations both ways, through the
// template and through the compiled format, and returns the ones that
// differ as notes: a template that trims messages, or rewrites earlier
// turns (Qwen3 drops the reasoning of earlier replies) cannot be followed
// exactly by an append-only format. A template whose basic probes fail is
// an error.
//
// special names the tokenizer's special-token texts (in the template) and
// stops the ids generation ends at. o gives bos_token, eos_token and
// further variables; the date a template prints (strftime_now, Llama 3's
// date_string) is frozen at o.Now.
func (t *Template) Compile(tok *tokenizer.Tokenizer, o Options, stops []int32) (*manifestpb.ChatTemplate, []string, error) {
	if tok == nil {
		return nil, nil, errors.New("chat template: no tokenizer")
	}
	if len(stops) == 0 {
		return nil, nil, errors.New("chat template: no stop token")
	}
	render := func(gen bool, msgs ...Message) (string, error) {
		o := o
		o.AddGenerationPrompt = gen
		return t.Render(msgs, o)
	}
	const (
		sysM  = "WICKSYSTEMMARKER"
		u1M   = "WICKUSERMARKERONE"
		a1M   = "WICKASSISTANTMARKERONE"
		u2M   = "WICKUSERMARKERTWO"
		probe = "probing the template with"
	)
	sys := Message{Role: "system", Content: sysM}
	u1 := Message{Role: "user", Content: u1M}
	a1 := Message{Role: "assistant", Content: a1M}
	u2 := Message{Role: "user", Content: u2M}

	specials := specialTexts(tok)
	// The user suffix and the generation prompt, from one user message.
	userT, err := render(true, u1)
	if err != nil {
		return nil, nil, fmt.Errorf("chat template: %s one user message: %w", probe, err)
	}
	userF, err := render(false, u1)
	if err != nil {
		return nil, nil, fmt.Errorf("chat template: %s one user message: %w", probe, err)
	}
	tailT, okT := after(userT, u1M)
	tailF, okF := after(userF, u1M)
	if !okT || !okF {
		return nil, nil, errors.New("chat template: a user message's text does not appear once in the rendering")
	}
	userSuf := cutAtSpecial(commonPrefix(tailT, tailF), specials)
	genPrompt := tailT[len(userSuf):]
	if genPrompt == "" {
		return nil, nil, errors.New("chat template: add_generation_prompt adds nothing after a user message")
	}

	// The assistant suffix and the user prefix, from a reply and a second
	// user message.
	full, err := render(true, u1, a1, u2)
	if err != nil {
		return nil, nil, fmt.Errorf("chat template: %s user, assistant, user: %w", probe, err)
	}
	parts, ok := splitMarkers(full, u1M, a1M, u2M)
	if !ok {
		return nil, nil, errors.New("chat template: the messages of user, assistant, user do not appear in order")
	}
	if parts[1] != userSuf+genPrompt {
		return nil, nil, fmt.Errorf("chat template: a reply is introduced by %q, not by the generation prompt %q", parts[1], userSuf+genPrompt)
	}
	if parts[3] != userSuf+genPrompt {
		return nil, nil, fmt.Errorf("chat template: the last user message is followed by %q, the first by %q", parts[3], userSuf+genPrompt)
	}
	replyF, err := render(false, u1, a1)
	if err != nil {
		return nil, nil, fmt.Errorf("chat template: %s user, assistant: %w", probe, err)
	}
	replyTail, _ := after(replyF, a1M)
	asstSuf := cutAtSpecial(commonPrefix(replyTail, parts[2]), specials)
	userPre := parts[2][len(asstSuf):]
	if !strings.HasSuffix(parts[0], userPre) {
		return nil, nil, fmt.Errorf("chat template: the first user message is introduced by %q, which does not end with the user prefix %q", parts[0], userPre)
	}
	begin := parts[0][:len(parts[0])-len(userPre)] // bos and any default system turn

	ct := &manifestpb.ChatTemplate{
		BosId:     -1,
		User:      &manifestpb.RoleFormat{Prefix: userPre, Suffix: userSuf},
		Assistant: &manifestpb.RoleFormat{Prefix: genPrompt, Suffix: asstSuf},
		StopIds:   slices.Clone(stops),
	}
	// A template that prints bos_token: SmolLM2's bos_token is
	// <|im_start|>, which its template writes as part of each turn instead.
	const bosM = "WICKBOSMARKER"
	ob := o
	ob.BosToken, ob.AddGenerationPrompt = bosM, true
	withBos, err := t.Render([]Message{u1}, ob)
	if err != nil {
		return nil, nil, fmt.Errorf("chat template: %s a user message and a marked bos_token: %w", probe, err)
	}
	if o.BosToken != "" && strings.HasPrefix(withBos, bosM) && strings.HasPrefix(begin, o.BosToken) {
		id, ok := tok.ID(o.BosToken)
		if !ok {
			return nil, nil, fmt.Errorf("chat template: bos_token %q is not a token of %s", o.BosToken, tok.Name())
		}
		ct.BosId = id
	}
	bosText := ""
	if ct.BosId >= 0 {
		bosText = o.BosToken
	}

	// The system message: its own turn, or folded into the first user
	// message. A template that refuses system messages gets the fold.
	withSys, err := render(true, sys, u1, a1, u2)
	switch {
	case errors.Is(err, ErrRaised):
		ct.FoldSystemIntoFirstUser = true
	case err != nil:
		return nil, nil, fmt.Errorf("chat template: %s system, user, assistant, user: %w", probe, err)
	default:
		sp, ok := splitMarkers(withSys, sysM, u1M)
		if !ok {
			return nil, nil, errors.New("chat template: a system message's text does not appear before the user's")
		}
		pre, mid := sp[0], sp[1]
		if !strings.HasPrefix(pre, bosText) {
			return nil, nil, fmt.Errorf("chat template: with a system message the rendering starts %q, without one with bos %q", pre, bosText)
		}
		pre = pre[len(bosText):]
		if mid == "\n\n" && pre == userPre {
			ct.FoldSystemIntoFirstUser = true
		} else {
			if !strings.HasSuffix(mid, userPre) {
				return nil, nil, fmt.Errorf("chat template: the system message is followed by %q, which does not end with the user prefix %q", mid, userPre)
			}
			ct.System = &manifestpb.RoleFormat{Prefix: pre, Suffix: mid[:len(mid)-len(userPre)]}
		}
	}
	// A system turn the template writes when there is no system message
	// (Qwen 2.5's and SmolLM2's default prompt, Llama 3's dated turn).
	if turn, ok := strings.CutPrefix(begin, bosText); ok && turn != "" && ct.System != nil {
		pre, suf := ct.System.GetPrefix(), ct.System.GetSuffix()
		if len(turn) >= len(pre)+len(suf) && strings.HasPrefix(turn, pre) && strings.HasSuffix(turn, suf) {
			d := turn[len(pre) : len(turn)-len(suf)]
			ct.DefaultSystem = &d
		}
	}
	for _, s := range specials {
		if id, ok := tok.ID(s); ok && strings.Contains(bosText+userPre+userSuf+genPrompt+asstSuf+ct.GetSystem().GetPrefix()+ct.GetSystem().GetSuffix(), s) {
			ct.SpecialTokens = append(ct.SpecialTokens, &manifestpb.SpecialToken{Text: s, Id: id})
		}
	}

	notes, err := t.check(ct, bosText, o)
	if err != nil {
		return nil, nil, err
	}
	return ct, notes, nil
}

// Probes are the conversations Compile checks the compiled format on.
var Probes = []struct {
	Name     string
	Messages []Message
}{
	{"no system message", []Message{{Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Hello."}, {Role: "user", Content: "Bye."}}},
	{"system message", []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Hello."}, {Role: "user", Content: "Bye."}}},
	{"empty system message", []Message{{Role: "system", Content: ""}, {Role: "user", Content: "Hi."}}},
	{"padded message", []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "  Hi.  "}}},
	{"reasoning in an earlier reply", []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi."},
		{Role: "assistant", Content: "<think>\nA greeting.\n</think>\n\nHello."}, {Role: "user", Content: "Bye."}}},
}

// check renders the probes through the template and through ct and
// returns a note for each that differs.
func (t *Template) check(ct *manifestpb.ChatTemplate, bosText string, o Options) ([]string, error) {
	var notes []string
	for _, p := range Probes {
		o := o
		o.AddGenerationPrompt = true
		want, err := t.Render(p.Messages, o)
		if errors.Is(err, ErrRaised) {
			notes = append(notes, fmt.Sprintf("%s: the template refuses it (%v); wick renders it", p.Name, err))
			continue
		}
		if err != nil {
			return nil, err
		}
		got := RenderFormat(ct, bosText, p.Messages)
		if got != want {
			notes = append(notes, fmt.Sprintf("%s: the template renders %q, wick's append-only format %q", p.Name, want, got))
		}
	}
	return notes, nil
}

// RenderFormat renders msgs through a role format as text, the way
// engine/chat.Template encodes them into tokens (with the generation
// prompt), for comparisons with the template.
func RenderFormat(ct *manifestpb.ChatTemplate, bosText string, msgs []Message) string {
	var sb strings.Builder
	sb.WriteString(bosText)
	if ct.DefaultSystem != nil && (len(msgs) == 0 || msgs[0].Role != "system") {
		sb.WriteString(ct.GetSystem().GetPrefix() + ct.GetDefaultSystem() + ct.GetSystem().GetSuffix())
	}
	open := false // inside a user turn opened by a folded system prompt
	for _, m := range msgs {
		switch {
		case m.Role == "system" && ct.GetFoldSystemIntoFirstUser():
			if m.Content == "" {
				continue
			}
			sb.WriteString(ct.GetUser().GetPrefix() + m.Content)
			open = true
			continue
		case m.Role != "assistant" && m.Role != "system" && open:
			sb.WriteString("\n\n" + m.Content + ct.GetUser().GetSuffix())
			open = false
			continue
		case open:
			sb.WriteString(ct.GetUser().GetSuffix())
			open = false
		}
		f := ct.GetUser()
		switch m.Role {
		case "system":
			f = ct.GetSystem()
		case "assistant":
			f = ct.GetAssistant()
		}
		sb.WriteString(f.GetPrefix() + m.Content + f.GetSuffix())
	}
	if open {
		sb.WriteString(ct.GetUser().GetSuffix())
	}
	sb.WriteString(ct.GetAssistant().GetPrefix())
	return sb.String()
}

// specialTexts lists the texts of the tokenizer's control and
// user-defined tokens that look like markup (<...> or [...]).
func specialTexts(tok *tokenizer.Tokenizer) []string {
	var out []string
	for id := int32(0); int(id) < tok.Vocab(); id++ {
		if !tok.IsSpecial(id) {
			continue
		}
		p, _ := tok.Piece(id)
		if len(p) >= 3 && (p[0] == '<' && p[len(p)-1] == '>' || p[0] == '[' && p[len(p)-1] == ']') {
			out = append(out, p)
		}
	}
	return out
}

// after returns the text after the one occurrence of marker in s.
func after(s, marker string) (string, bool) {
	if strings.Count(s, marker) != 1 {
		return "", false
	}
	_, rest, _ := strings.Cut(s, marker)
	return rest, true
}

// splitMarkers cuts s at each marker, in order: len(markers)+1 parts.
func splitMarkers(s string, markers ...string) ([]string, bool) {
	var parts []string
	for _, m := range markers {
		if strings.Count(s, m) != 1 {
			return nil, false
		}
		before, rest, _ := strings.Cut(s, m)
		parts = append(parts, before)
		s = rest
	}
	return append(parts, s), true
}

func commonPrefix(a, b string) string {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return a[:n]
}

// cutAtSpecial shortens s, a common prefix of two texts, so that it does
// not end inside or at the start of a special token's text: "<|end|>\n<"
// (shared by "<|end|>\n<eos>" and "<|end|>\n<|assistant|>") becomes
// "<|end|>\n".
func cutAtSpecial(s string, specials []string) string {
	for i := len(s) - 1; i >= 0; i-- {
		for _, sp := range specials {
			// A special token starting at i that s cuts short.
			if n := min(len(sp), len(s)-i); strings.HasPrefix(sp, s[i:i+n]) && n < len(sp) {
				return cutAtSpecial(s[:i], specials)
			}
		}
		if len(s)-i > 64 {
			break // longer than any special token
		}
	}
	return s
}
