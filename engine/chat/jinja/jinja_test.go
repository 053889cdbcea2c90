package jinja

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/tokenizer"
)

// The fixtures: testdata/templates holds chat templates of each family,
// the conversations they are rendered with, and transformers'
// apply_chat_template output (scripts/make_tokenizer_fixtures.py).
const templateDir = "../../../testdata/templates"

type conversation struct {
	Name     string         `json:"name"`
	Messages []Message      `json:"messages"`
	Kwargs   map[string]any `json:"kwargs"`
}

type templateMeta struct {
	Tokenizer string         `json:"tokenizer"`
	Bos       *string        `json:"bos_token"`
	Eos       string         `json:"eos_token"`
	Kwargs    map[string]any `json:"kwargs"`
}

type rendering struct {
	Conversation        string  `json:"conversation"`
	AddGenerationPrompt bool    `json:"add_generation_prompt"`
	Text                *string `json:"text"`
	IDs                 []int32 `json:"ids"`
	Error               string  `json:"error"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func options(meta templateMeta, c conversation, gen bool) Options {
	o := Options{AddGenerationPrompt: gen, EosToken: meta.Eos, Vars: map[string]any{},
		Now: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	if meta.Bos != nil {
		o.BosToken = *meta.Bos
	}
	for k, v := range meta.Kwargs {
		o.Vars[k] = v
	}
	for k, v := range c.Kwargs {
		o.Vars[k] = v
	}
	return o
}

// TestRenderMatchesTransformers renders every template for every
// conversation, with and without the generation prompt, and compares with
// transformers' output; conversations transformers refused must be refused.
func TestRenderMatchesTransformers(t *testing.T) {
	var convs []conversation
	readJSON(t, filepath.Join(templateDir, "conversations.json"), &convs)
	var ref struct {
		Templates map[string][]rendering `json:"templates"`
	}
	readJSON(t, filepath.Join(templateDir, "reference.json"), &ref)
	byName := map[string]conversation{}
	for _, c := range convs {
		byName[c.Name] = c
	}
	if len(ref.Templates) < 8 {
		t.Fatalf("reference covers %d templates", len(ref.Templates))
	}
	for file, rs := range ref.Templates {
		t.Run(file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(templateDir, file))
			if err != nil {
				t.Fatal(err)
			}
			var meta templateMeta
			readJSON(t, filepath.Join(templateDir, strings.TrimSuffix(file, ".jinja")+".json"), &meta)
			// Gemma 3's templates parse through rewriteConditionals.
			tpl, err := Parse(string(src))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				c := byName[r.Conversation]
				got, err := tpl.Render(c.Messages, options(meta, c, r.AddGenerationPrompt))
				switch {
				case r.Text == nil && err == nil:
					t.Errorf("%s (gen %v): rendered %q; transformers refused: %s", r.Conversation, r.AddGenerationPrompt, got, r.Error)
				case r.Text == nil && !errors.Is(err, ErrRaised):
					t.Errorf("%s: error %v is not the template's raise_exception (%s)", r.Conversation, err, r.Error)
				case r.Text != nil && err != nil:
					t.Errorf("%s (gen %v): %v", r.Conversation, r.AddGenerationPrompt, err)
				case r.Text != nil && got != *r.Text:
					t.Errorf("%s (gen %v):\n got %q\nwant %q", r.Conversation, r.AddGenerationPrompt, got, *r.Text)
				}
			}
		})
	}
}

// TestCompile compiles each template into wick's role format and checks
// that engine/chat, encoding the parts separately, gives the ids Hugging
// Face gives for the whole rendered text, for every reference conversation
// the compiled format renders exactly; the others must be among Compile's
// notes' kinds (trimming, rewritten reasoning). Templates that write a
// system turn when there is no system message (Qwen 2.5's and SmolLM2's
// default prompt, Llama 3's dated turn) render exactly.
func TestCompile(t *testing.T) {
	var convs []conversation
	readJSON(t, filepath.Join(templateDir, "conversations.json"), &convs)
	var ref struct {
		Templates map[string][]rendering `json:"templates"`
	}
	readJSON(t, filepath.Join(templateDir, "reference.json"), &ref)
	byName := map[string]conversation{}
	for _, c := range convs {
		byName[c.Name] = c
	}
	// Which reference conversations each template cannot render
	// append-only, and why.
	differs := map[string]map[string]string{
		"llama3.jinja":  {"spaces": "trims messages"},
		"llama32.jinja": {"spaces": "trims messages"},
		"qwen3.jinja": {"think": "drops earlier reasoning", "no-thinking": "enable_thinking=false adds an empty think block",
			"spaces": "wraps the last reply in an empty think block"},
		"phi3.jinja":   {"empty-system": "leaves out an empty system message"},
		"gemma2.jinja": {"spaces": "trims messages"},
		"gemma3.jinja": {"spaces": "trims messages",
			"empty-system": "an empty system message leaves a blank line in the first user message"},
		"gemma3-it.jinja": {"spaces": "trims messages",
			"empty-system": "an empty system message leaves a blank line in the first user message"},
	}
	for file, rs := range ref.Templates {
		t.Run(file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(templateDir, file))
			if err != nil {
				t.Fatal(err)
			}
			var meta templateMeta
			readJSON(t, filepath.Join(templateDir, strings.TrimSuffix(file, ".jinja")+".json"), &meta)
			tok, err := tokenizer.Load(filepath.Join("../../../testdata/tokenizers", meta.Tokenizer))
			if err != nil {
				t.Fatal(err)
			}
			tpl, err := Parse(string(src))
			if err != nil {
				t.Fatal(err)
			}
			eos, ok := tok.ID(meta.Eos)
			if !ok {
				t.Fatalf("no eos %q", meta.Eos)
			}
			ct, notes, err := tpl.Compile(tok, options(meta, conversation{}, true), []int32{eos})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("user %q %q, assistant %q %q, system %q %q, fold %v, bos %d", ct.User.Prefix, ct.User.Suffix,
				ct.Assistant.Prefix, ct.Assistant.Suffix, ct.GetSystem().GetPrefix(), ct.GetSystem().GetSuffix(), ct.FoldSystemIntoFirstUser, ct.BosId)
			for _, n := range notes {
				t.Logf("note: %s", n)
			}
			tm, err := chat.New(ct, tok)
			if err != nil {
				t.Fatal(err)
			}
			bosText := ""
			if ct.BosId >= 0 {
				bosText = *meta.Bos
			}
			exact := 0
			for _, r := range rs {
				if !r.AddGenerationPrompt || r.Text == nil {
					continue
				}
				c := byName[r.Conversation]
				if usesTools(c) {
					// The compiled format has no tool blocks: tool
					// conversations are TestRenderMatchesTransformers' only.
					continue
				}
				text := RenderFormat(ct, bosText, c.Messages)
				why, expected := differs[file][r.Conversation]
				if text != *r.Text {
					if !expected {
						t.Errorf("%s: compiled format renders\n%q\ntransformers\n%q", r.Conversation, text, *r.Text)
					}
					continue
				}
				if expected {
					t.Errorf("%s: renders exactly, though expected to differ (%s)", r.Conversation, why)
				}
				exact++
				var msgs []chat.Message
				for _, m := range c.Messages {
					role := map[string]chat.Role{"system": chat.System, "user": chat.User, "assistant": chat.Assistant}[m.Role]
					msgs = append(msgs, chat.Message{Role: role, Content: m.Content})
				}
				if got := tm.Encode(msgs, true); !slices.Equal(got, r.IDs) {
					t.Errorf("%s: engine/chat encodes\n%v\nHugging Face\n%v", r.Conversation, got, r.IDs)
				}
			}
			if exact < 3 {
				t.Errorf("only %d conversations render exactly", exact)
			}
		})
	}
}

// usesTools reports whether c offers tools or holds tool calls or results.
func usesTools(c conversation) bool {
	if c.Kwargs["tools"] != nil {
		return true
	}
	for _, m := range c.Messages {
		if m.Role == "tool" || m.ToolCalls != nil {
			return true
		}
	}
	return false
}

// TestTurnsExtend measures, for each template followed exactly, how much
// of turn N's tokens (its prompt and the reply) turn N+1 can reuse: a
// template that only appends reuses all of it; one that rewrites earlier
// turns (Qwen3 drops the reasoning of earlier replies) forces a re-prefill
// of everything after the first change. wick's compiled format always
// appends, so its sessions never re-prefill; the numbers say what exact
// template-following would cost.
func TestTurnsExtend(t *testing.T) {
	reply := "<think>\nThe user greets me.\n</think>\n\nHello, traveller."
	for _, tc := range []struct {
		file      string
		reprefill bool // whether turn N+1 must recompute part of turn N
	}{
		{"llama3.jinja", false}, {"qwen2.jinja", false}, {"qwen3.jinja", true}, {"smollm2.jinja", false},
		{"llama32.jinja", false}, {"qwen25.jinja", false}, {"gemma3-it.jinja", false},
		{"phi3.jinja", false}, {"phi4.jinja", false}, {"gemma2.jinja", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(templateDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var meta templateMeta
			readJSON(t, filepath.Join(templateDir, strings.TrimSuffix(tc.file, ".jinja")+".json"), &meta)
			tok, err := tokenizer.Load(filepath.Join("../../../testdata/tokenizers", meta.Tokenizer))
			if err != nil {
				t.Fatal(err)
			}
			tpl, err := Parse(string(src))
			if err != nil {
				t.Fatal(err)
			}
			msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi."}, {Role: "assistant", Content: reply}, {Role: "user", Content: "Bye."}}
			if tc.file == "gemma2.jinja" {
				msgs = msgs[1:]
			}
			o := options(meta, conversation{}, true)
			prompt, err := tpl.Render(msgs[:len(msgs)-2], o)
			if err != nil {
				t.Fatal(err)
			}
			next, err := tpl.Render(msgs, o)
			if err != nil {
				t.Fatal(err)
			}
			turn := tok.Encode(prompt + reply)
			after := tok.Encode(next)
			n := 0
			for n < len(turn) && n < len(after) && turn[n] == after[n] {
				n++
			}
			t.Logf("turn N: %d tokens, turn N+1 reuses %d, re-prefills %d", len(turn), n, len(turn)-n)
			if got := len(turn)-n > 0; got != tc.reprefill {
				t.Errorf("re-prefill of %d tokens; expected one: %v", len(turn)-n, tc.reprefill)
			}
		})
	}
}
