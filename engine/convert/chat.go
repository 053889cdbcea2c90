package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wick-run/wick/engine/chat/jinja"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/tokenizer"
)

// templateChat builds the chat template from the checkpoint's
// tokenizer_config.json: its Jinja chat_template, compiled into wick's
// append-only role format (see jinja.Template.Compile), with bos_token and
// eos_token from the same file. Generation stops at every eos id of
// generation_config.json and config.json, at eos_token, and at the special
// token that closes an assistant turn (Llama 3's <|eot_id|>, Qwen's
// <|im_end|>, Phi's <|end|>). It returns nil, nil when the checkpoint has no
// chat template; notes list what the compiled format renders differently
// from the template.
func templateChat(dir string, c *hfConfig, tok *tokenizer.Tokenizer, now time.Time) (*manifestpb.ChatTemplate, []string, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	tc, err := parseHFConfig(path, data)
	if err != nil {
		return nil, nil, err
	}
	src, err := chatTemplateSource(tc)
	if err != nil || src == "" {
		return nil, nil, err
	}
	bos, err := tokenText(tc, "bos_token")
	if err != nil {
		return nil, nil, err
	}
	eos, err := tokenText(tc, "eos_token")
	if err != nil {
		return nil, nil, err
	}
	var stops []int32
	addStop := func(id int32, what string) error {
		if !tok.IsSpecial(id) {
			p, _ := tok.Piece(id)
			return fmt.Errorf("%s: stop token %d (%q) is not a special token of %s", what, id, p, tok.Name())
		}
		if !slices.Contains(stops, id) {
			stops = append(stops, id)
		}
		return nil
	}
	if eos != "" {
		id, ok := tok.ID(eos)
		if !ok {
			return nil, nil, fmt.Errorf("%s: eos_token %q is not a token of %s", path, eos, tok.Name())
		}
		if err := addStop(id, path+": eos_token"); err != nil {
			return nil, nil, err
		}
	}
	for _, cfg := range []struct {
		c    *hfConfig
		path string
	}{{c, c.path}, {nil, filepath.Join(dir, "generation_config.json")}} {
		hc := cfg.c
		if hc == nil {
			if hc, err = readHFConfig(cfg.path); errors.Is(err, os.ErrNotExist) {
				continue
			} else if err != nil {
				return nil, nil, err
			}
		}
		ids, err := hc.ints("eos_token_id")
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			if id >= tok.Vocab() {
				return nil, nil, fmt.Errorf("%s: eos_token_id %d is outside the tokenizer's %d tokens", hc.path, id, tok.Vocab())
			}
			if err := addStop(int32(id), hc.path+": eos_token_id"); err != nil {
				return nil, nil, err
			}
		}
	}
	if len(stops) == 0 {
		return nil, nil, fmt.Errorf("%s: no eos_token, and no eos_token_id in config.json or generation_config.json: generation would never stop", path)
	}
	ct, notes, err := compileChat(src, bos, eos, stops, tok, now)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return ct, notes, nil
}

// compileChat compiles a Jinja chat template (see jinja.Template.Compile),
// and adds the special token that closes an assistant turn to the stops.
func compileChat(src, bos, eos string, stops []int32, tok *tokenizer.Tokenizer, now time.Time) (*manifestpb.ChatTemplate, []string, error) {
	tpl, err := jinja.Parse(src)
	if err != nil {
		return nil, nil, err
	}
	ct, notes, err := tpl.Compile(tok, jinja.Options{BosToken: bos, EosToken: eos, Now: now}, stops)
	if err != nil {
		return nil, nil, err
	}
	// The turn's closing special token is where a reply ends.
	for _, st := range ct.GetSpecialTokens() {
		if st.GetText() != "" && len(ct.GetAssistant().GetSuffix()) >= len(st.GetText()) &&
			ct.GetAssistant().GetSuffix()[:len(st.GetText())] == st.GetText() && !slices.Contains(ct.StopIds, st.GetId()) {
			ct.StopIds = append(ct.StopIds, st.GetId())
		}
	}
	return ct, notes, nil
}

// chatTemplateSource reads chat_template: a string, or a list of named
// templates of which "default" is the chat one.
func chatTemplateSource(tc *hfConfig) (string, error) {
	v, ok := tc.m["chat_template"]
	if !ok || v == nil {
		return "", nil
	}
	switch t := v.(type) {
	case string:
		return t, nil
	case []any:
		for _, e := range t {
			m, _ := e.(map[string]any)
			if m["name"] == "default" {
				if s, ok := m["template"].(string); ok {
					return s, nil
				}
			}
		}
		return "", tc.errf("chat_template", "a list without a \"default\" template")
	}
	return "", tc.errf("chat_template", "want a string or a list of named templates, got %s", jsonText(v))
}

// tokenText reads bos_token or eos_token: a string, an {"content": ...}
// object, or null ("").
func tokenText(tc *hfConfig, key string) (string, error) {
	v, ok := tc.m[key]
	if !ok || v == nil {
		return "", nil
	}
	switch t := v.(type) {
	case string:
		return t, nil
	case map[string]any:
		if s, ok := t["content"].(string); ok {
			return s, nil
		}
	}
	b, _ := json.Marshal(v)
	return "", tc.errf(key, "want a string or an object with \"content\", got %s", b)
}
