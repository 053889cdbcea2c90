package chat

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/tokenizer"
)

// The tiny tokenizer of testdata/tokenizer: pad 0, eos 1, bos 2, unk 3,
// <start_of_turn> 4, <end_of_turn> 5.
const (
	testModel = "../../testdata/tokenizer/tokenizer.model"
	eos       = 1
	bos       = 2
	sot       = 4
	eot       = 5
)

func loadTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(testModel)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func gemma(t *testing.T, tok *tokenizer.Tokenizer) *Template {
	t.Helper()
	tm, err := GemmaTemplate(tok)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func sys(s string) Message       { return Message{Role: System, Content: s} }
func user(s string) Message      { return Message{Role: User, Content: s} }
func assistant(s string) Message { return Message{Role: Assistant, Content: s} }

func TestGemmaEncode(t *testing.T) {
	tok := loadTokenizer(t)
	tm := gemma(t, tok)
	tests := []struct {
		name string
		msgs []Message
		gen  bool
		want string // Decode of everything after bos
	}{
		{"empty with prompt", nil, true, "<start_of_turn>model\n"},
		{"one user turn", []Message{user("Hi")}, true,
			"<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"},
		{"system folded into first user", []Message{sys("Be kind."), user("Hi")}, true,
			"<start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\n"},
		{"only the first user gets it", []Message{sys("S"), user("a"), assistant("b"), user("c")}, false,
			"<start_of_turn>user\nS\n\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>user\nc<end_of_turn>\n"},
		{"system before a greeting is its own turn", []Message{sys("S"), assistant("Hello!"), user("Hi")}, true,
			"<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"},
		{"trailing system left open", []Message{sys("S")}, false, "<start_of_turn>user\nS"},
		{"trailing system closed for the prompt", []Message{sys("S")}, true,
			"<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"},
		{"two system messages", []Message{sys("A"), sys("B"), user("Hi")}, false,
			"<start_of_turn>user\nA<end_of_turn>\n<start_of_turn>user\nB\n\nHi<end_of_turn>\n"},
		{"empty system skipped when joining", []Message{sys("A"), sys(""), user("Hi")}, false,
			"<start_of_turn>user\nA\n\nHi<end_of_turn>\n"},
		{"empty system left out", []Message{sys(""), user("Hi")}, false,
			"<start_of_turn>user\nHi<end_of_turn>\n"},
		{"unknown role is a user", []Message{{Role: Role(9), Content: "x"}}, false,
			"<start_of_turn>user\nx<end_of_turn>\n"},
		{"content kept verbatim", []Message{user("  two\n\nlines  ")}, false,
			"<start_of_turn>user\n  two\n\nlines  <end_of_turn>\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := tm.Encode(tt.msgs, tt.gen)
			if len(ids) == 0 || ids[0] != bos || slices.Contains(ids[1:], bos) {
				t.Fatalf("Encode = %v, want bos once, at the start", ids)
			}
			if got := tok.Decode(ids[1:]); got != tt.want {
				t.Errorf("Encode renders %q, want %q", got, tt.want)
			}
			// The markers must be single tokens, not text spelled in pieces.
			for _, m := range []struct {
				text string
				id   int32
			}{{"<start_of_turn>", sot}, {"<end_of_turn>", eot}} {
				if got, want := count(ids, m.id), strings.Count(tt.want, m.text); got != want {
					t.Errorf("%s appears as its id %d times, want %d", m.text, got, want)
				}
			}
		})
	}

	t.Run("parts encoded separately", func(t *testing.T) {
		var want []int32
		for _, part := range [][]int32{{bos, sot}, tok.Encode("user\n"), tok.Encode("Hi"), {eot}, tok.Encode("\n"), {sot}, tok.Encode("model\n")} {
			want = append(want, part...)
		}
		if got := tm.Encode([]Message{user("Hi")}, true); !slices.Equal(got, want) {
			t.Errorf("Encode = %v, want %v", got, want)
		}
	})
}

func count(ids []int32, x int32) int {
	n := 0
	for _, i := range ids {
		if i == x {
			n++
		}
	}
	return n
}

// TestPrefixes plays conversations turn by turn the way a session does, and
// checks that every sequence it would feed the model extends the one before:
// the KV of earlier turns is then always reusable.
func TestPrefixes(t *testing.T) {
	tok := loadTokenizer(t)
	byteSpelled := func(s string) []int32 {
		var ids []int32
		for _, b := range []byte(s) {
			id, ok := tok.ID(fmt.Sprintf("<0x%02X>", b))
			if !ok {
				t.Fatalf("no byte piece for %#x", b)
			}
			ids = append(ids, id)
		}
		return ids
	}
	chatML, err := New(&manifestpb.ChatTemplate{
		BosId:     -1,
		System:    &manifestpb.RoleFormat{Prefix: "System: ", Suffix: "\n"},
		User:      &manifestpb.RoleFormat{Prefix: "User: ", Suffix: "\n"},
		Assistant: &manifestpb.RoleFormat{Prefix: "Bot: ", Suffix: "<end_of_turn>\n"},
		StopIds:   []int32{eot},
	}, tok)
	if err != nil {
		t.Fatal(err)
	}
	card := Card{Name: "Maren", Persona: "A baker who climbs the lighthouse every evening.", Greeting: "You are late."}
	tests := []struct {
		name  string
		tm    *Template
		start []Message
		// spell is how the "model" spells its replies: canonically, or in
		// byte pieces that the tokenizer would never choose.
		spell func(string) []int32
		stop  int32
	}{
		{"gemma card with greeting", gemma(t, tok), card.Messages(), tok.Encode, eot},
		{"gemma card without greeting", gemma(t, tok), Card{Name: "Maren"}.Messages(), tok.Encode, eot},
		{"gemma no system", gemma(t, tok), nil, tok.Encode, eot},
		{"gemma odd spelling", gemma(t, tok), card.Messages(), byteSpelled, eot},
		{"system role, no bos", chatML, card.Messages(), tok.Encode, eot},
	}
	turns := []struct{ user, reply string }{
		{"Hello there.", "Good evening. The wind is up."},
		{"What did you bring?", "Rye bread, two apples, and 20 € of cheese."},
		{"Will you light it?", ""},
		{"Goodnight.", "Goodnight, and mind the stairs."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			history := slices.Clone(tt.start)
			cache := tt.tm.Encode(history, false)
			for i, turn := range turns {
				history = append(history, user(turn.user))
				prompt := tt.tm.Encode(history, true)
				if !hasPrefix(prompt, cache) {
					t.Fatalf("turn %d: prompt %v does not extend the cache %v", i, prompt, cache)
				}
				generated := append(tt.spell(turn.reply), tt.stop)
				cache = append(prompt, generated...)

				reply := tt.tm.Generated(generated)
				if reply.Content != turn.reply {
					t.Errorf("turn %d: Generated content %q, want %q", i, reply.Content, turn.reply)
				}
				history = append(history, reply)
				rendered := tt.tm.Encode(history, false)
				if !hasPrefix(rendered, cache) {
					t.Fatalf("turn %d: rendering with the reply\n%v\ndoes not extend the cache\n%v", i, rendered, cache)
				}
			}
			full := tt.tm.Encode(history, false)
			for k := range history {
				if part := tt.tm.Encode(history[:k], false); !hasPrefix(full, part) {
					t.Errorf("Encode of the first %d messages is not a prefix of the whole", k)
				}
			}
		})
	}
}

// TestIncremental renders conversations the way engine.Session does: Begin,
// then EncodeMessage for each new message, the generation prompt, the
// generated tokens without the stop token, and AssistantSuffix when the next
// message comes; an edit cuts the tokens back to where a message began.
func TestIncremental(t *testing.T) {
	tok := loadTokenizer(t)
	card := Card{Name: "Maren", Persona: "A baker.", Greeting: "You are late."}
	for _, tt := range []struct {
		name  string
		start []Message
	}{
		{"card with greeting", card.Messages()},
		{"system only", []Message{sys("Be brief.")}},
		{"nothing", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tm := gemma(t, tok)
			msgs := slices.Clone(tt.start)
			toks := tm.Begin()
			var starts []int
			for i := range msgs {
				starts = append(starts, len(toks))
				toks = append(toks, tm.EncodeMessage(msgs, i)...)
			}
			if want := tm.Encode(msgs, false); !slices.Equal(toks, want) {
				t.Fatalf("incremental %v, Encode %v", toks, want)
			}
			for turn, text := range []string{"Hello.", "Tell me about 1884.", "Thanks."} {
				if turn == 2 { // edit the last user message: cut back and resend
					i := len(msgs) - 2
					toks, starts, msgs = toks[:starts[i]], starts[:i], msgs[:i]
				}
				msgs = append(msgs, user(text))
				starts = append(starts, len(toks))
				toks = append(toks, tm.EncodeMessage(msgs, len(msgs)-1)...)
				toks = append(toks, tm.GenerationPrompt()...)
				if want := tm.Encode(msgs, true); !slices.Equal(toks, want) {
					t.Fatalf("turn %d: prompt %v, Encode %v", turn, toks, want)
				}
				reply := tok.Encode("Reply " + text)
				starts = append(starts, len(toks))
				toks = append(toks, reply...)
				msgs = append(msgs, tm.Generated(append(reply, eot)))
				toks = append(toks, tm.AssistantSuffix()...)
				if want := tm.Encode(msgs, false); !slices.Equal(toks, want) {
					t.Fatalf("turn %d: after the reply %v, Encode %v", turn, toks, want)
				}
			}
		})
	}
	t.Run("out of range", func(t *testing.T) {
		tm := gemma(t, tok)
		if tm.EncodeMessage([]Message{user("x")}, 1) != nil || tm.EncodeMessage(nil, -1) != nil {
			t.Error("EncodeMessage outside msgs gave tokens")
		}
	})
}

func hasPrefix(s, prefix []int32) bool {
	return len(s) >= len(prefix) && slices.Equal(s[:len(prefix)], prefix)
}

func TestGenerated(t *testing.T) {
	tok := loadTokenizer(t)
	tm := gemma(t, tok)
	hi := tok.Encode("hi")
	tests := []struct {
		name string
		ids  []int32
		want []int32
	}{
		{"stops at end_of_turn", append(slices.Clone(hi), eot), hi},
		{"stops at eos", append(slices.Clone(hi), eos), hi},
		{"cut off by a length limit", hi, hi},
		{"only one stop dropped", []int32{eot, eot}, []int32{eot}},
		{"empty reply", []int32{eot}, []int32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tm.Generated(tt.ids)
			if m.Role != Assistant || m.Tokens == nil || !slices.Equal(m.Tokens, tt.want) || m.Content != tok.Decode(tt.want) {
				t.Errorf("Generated(%v) = %+v, want assistant tokens %v", tt.ids, m, tt.want)
			}
		})
	}
	t.Run("tokens are copied", func(t *testing.T) {
		ids := []int32{hi[0], eot}
		m := tm.Generated(ids)
		ids[0] = 99
		if m.Tokens[0] != hi[0] {
			t.Error("Generated kept the caller's slice")
		}
	})
}

func TestStops(t *testing.T) {
	tm := gemma(t, loadTokenizer(t))
	for _, tt := range []struct {
		id   int32
		want bool
	}{{eot, true}, {eos, true}, {sot, false}, {bos, false}, {0, false}, {-1, false}, {1000, false}} {
		if got := tm.IsStop(tt.id); got != tt.want {
			t.Errorf("IsStop(%d) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if got := tm.StopIDs(); !slices.Equal(got, []int32{eot, eos}) {
		t.Errorf("StopIDs() = %v, want [%d %d]", got, eot, eos)
	}
}

// TestSpecialTokensInFormats checks that a template's special tokens become
// their ids even where the tokenizer would not match them: control pieces
// such as <eos> are never matched in text.
func TestSpecialTokensInFormats(t *testing.T) {
	tok := loadTokenizer(t)
	tm, err := New(&manifestpb.ChatTemplate{
		BosId:         -1,
		User:          &manifestpb.RoleFormat{Prefix: "<bos>Q: ", Suffix: "<eos>"},
		StopIds:       []int32{eos},
		SpecialTokens: []*manifestpb.SpecialToken{{Text: "<bos>", Id: bos}, {Text: "<eos>", Id: eos}},
	}, tok)
	if err != nil {
		t.Fatal(err)
	}
	got := tm.Encode([]Message{user("<eos>")}, false)
	want := slices.Concat([]int32{bos}, tok.Encode("Q: "), tok.Encode("<eos>"), []int32{eos})
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v (template <eos> as its id, the user's as text)", got, want)
	}
}

func TestNewErrors(t *testing.T) {
	tok := loadTokenizer(t)
	good := func(edit func(*manifestpb.ChatTemplate)) *manifestpb.ChatTemplate {
		ct, err := GemmaChatTemplate(tok)
		if err != nil {
			t.Fatal(err)
		}
		edit(ct)
		return ct
	}
	tests := []struct {
		name string
		t    *manifestpb.ChatTemplate
		tok  *tokenizer.Tokenizer
		want string
	}{
		{"no template", nil, tok, "missing"},
		{"no tokenizer", good(func(*manifestpb.ChatTemplate) {}), nil, "no tokenizer"},
		{"bos past the vocabulary", good(func(c *manifestpb.ChatTemplate) { c.BosId = 384 }), tok, "bos_id 384"},
		{"bos negative", good(func(c *manifestpb.ChatTemplate) { c.BosId = -2 }), tok, "bos_id -2"},
		{"no stop ids", good(func(c *manifestpb.ChatTemplate) { c.StopIds = nil }), tok, "no stop_ids"},
		{"stop past the vocabulary", good(func(c *manifestpb.ChatTemplate) { c.StopIds = []int32{5, 400} }), tok, "stop id 400"},
		{"stop negative", good(func(c *manifestpb.ChatTemplate) { c.StopIds = []int32{-1} }), tok, "stop id -1"},
		{"special without text", good(func(c *manifestpb.ChatTemplate) {
			c.SpecialTokens = append(c.SpecialTokens, &manifestpb.SpecialToken{Id: 4})
		}), tok, "has no text"},
		{"special id wrong", good(func(c *manifestpb.ChatTemplate) {
			c.SpecialTokens = append(c.SpecialTokens, &manifestpb.SpecialToken{Text: "<start_of_turn>", Id: 5})
		}), tok, `"<start_of_turn>" has id 5, the tokenizer says 4`},
		{"special id past the vocabulary", good(func(c *manifestpb.ChatTemplate) {
			c.SpecialTokens = append(c.SpecialTokens, &manifestpb.SpecialToken{Text: "<end_of_turn>", Id: 1000})
		}), tok, "id 1000 is outside"},
		{"special not a piece", good(func(c *manifestpb.ChatTemplate) {
			c.SpecialTokens = append(c.SpecialTokens, &manifestpb.SpecialToken{Text: "<image>", Id: 7})
		}), tok, `"<image>" (id 7) is not a piece`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.t, tt.tok)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() error = %v, want one saying %q", err, tt.want)
			}
			if err != nil && tt.t != nil && tt.tok != nil && !strings.Contains(err.Error(), "tokenizer.model") {
				t.Errorf("error %q does not name the tokenizer file", err)
			}
		})
	}
}

func TestCard(t *testing.T) {
	tests := []struct {
		name string
		card Card
		want string
	}{
		{"full", Card{Name: "Maren", Persona: "A baker who climbs the lighthouse."},
			"You are Maren. A baker who climbs the lighthouse.\nStay in character as Maren: reply only as Maren would, and never write the user's lines."},
		{"trimmed", Card{Name: " Maren\n", Persona: "\tShy. "},
			"You are Maren. Shy.\nStay in character as Maren: reply only as Maren would, and never write the user's lines."},
		{"no persona", Card{Name: "Maren"},
			"You are Maren.\nStay in character as Maren: reply only as Maren would, and never write the user's lines."},
		{"no name", Card{Persona: "Old."},
			"You are the character. Old.\nStay in character as the character: reply only as the character would, and never write the user's lines."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.card.SystemPrompt(); got != tt.want {
				t.Errorf("SystemPrompt() = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("messages", func(t *testing.T) {
		c := Card{Name: "Maren", Greeting: "You are late."}
		got := c.Messages()
		want := []Message{sys(c.SystemPrompt()), assistant("You are late.")}
		if len(got) != 2 || got[0].Role != want[0].Role || got[0].Content != want[0].Content ||
			got[1].Role != want[1].Role || got[1].Content != want[1].Content {
			t.Errorf("Messages() = %+v, want %+v", got, want)
		}
		if got := (Card{Name: "Maren"}).Messages(); len(got) != 1 || got[0].Role != System {
			t.Errorf("Messages() without a greeting = %+v, want the system prompt alone", got)
		}
	})
}

func TestRoleString(t *testing.T) {
	for r, want := range map[Role]string{System: "system", User: "user", Assistant: "assistant", 7: "Role(7)"} {
		if got := r.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", uint8(r), got, want)
		}
	}
}

// TestDefaultSystem checks the default system message of a compiled
// template: written before a conversation that does not start with a
// system message, as part of the first message's tokens, and not when one
// is given; refused with a folded system prompt, which has no system turn
// to write it in.
func TestDefaultSystem(t *testing.T) {
	tok := loadTokenizer(t)
	def := "You are helpful."
	ct := &manifestpb.ChatTemplate{
		BosId:         -1,
		System:        &manifestpb.RoleFormat{Prefix: "S:", Suffix: "\n"},
		User:          &manifestpb.RoleFormat{Prefix: "U:", Suffix: "\n"},
		Assistant:     &manifestpb.RoleFormat{Prefix: "A:", Suffix: "\n"},
		StopIds:       []int32{1},
		DefaultSystem: &def,
	}
	tm, err := New(ct, tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		msgs []Message
		want string
	}{
		{[]Message{{Role: User, Content: "Hi."}}, "S:You are helpful.\nU:Hi.\nA:"},
		{[]Message{{Role: Assistant, Content: "Ahoy."}, {Role: User, Content: "Hi."}}, "S:You are helpful.\nA:Ahoy.\nU:Hi.\nA:"},
		{[]Message{{Role: System, Content: "Be brief."}, {Role: User, Content: "Hi."}}, "S:Be brief.\nU:Hi.\nA:"},
		{[]Message{{Role: System, Content: ""}, {Role: User, Content: "Hi."}}, "S:\nU:Hi.\nA:"},
	} {
		got := tm.Encode(tc.msgs, true)
		if want := tok.Encode(tc.want); !slices.Equal(got, want) {
			t.Errorf("%v: %q, want %q", tc.msgs, tok.Decode(got), tc.want)
		}
		if first := tm.EncodeMessage(tc.msgs, 0); !slices.Equal(first, got[:len(first)]) {
			t.Errorf("%v: the first message's tokens do not start the conversation", tc.msgs)
		}
	}
	ct.FoldSystemIntoFirstUser = true
	if _, err := New(ct, tok); err == nil || !strings.Contains(err.Error(), "default system message") {
		t.Errorf("folded system prompt with a default system message: %v", err)
	}
}
