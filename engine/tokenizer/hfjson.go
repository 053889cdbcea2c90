package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// This file reads a Hugging Face tokenizer.json into an hfTokenizer: the
// model (BPE only), the added tokens, and the normalizer, pre-tokenizer and
// decoder of the kinds the supported families ship. Anything else is refused
// by name: a tokenizer that silently skipped a step would give other ids
// than the model was trained on.

// hfFile is the part of tokenizer.json that is read; the other fields
// (truncation, padding, post_processor) concern batching and the special
// tokens a template adds, which wick's chat template does itself.
type hfFile struct {
	AddedTokens  []hfAddedToken  `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        json.RawMessage `json:"model"`
}

type hfAddedToken struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfBPEModel struct {
	Type                    string            `json:"type"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	FuseUnk                 bool              `json:"fuse_unk"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Dropout                 *float64          `json:"dropout"`
	Vocab                   map[string]int64  `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
}

// hfComponent is one normalizer, pre-tokenizer or decoder: its type and
// fields, read on demand.
type hfComponent map[string]json.RawMessage

func (c hfComponent) typ() string {
	var s string
	_ = json.Unmarshal(c["type"], &s)
	return s
}

func (c hfComponent) str(key string) (string, error) {
	var s string
	if err := json.Unmarshal(c[key], &s); err != nil {
		return "", fmt.Errorf("%s %q: want a string: %w", c.typ(), key, err)
	}
	return s, nil
}

func (c hfComponent) boolOr(key string, def bool) (bool, error) {
	raw, ok := c[key]
	if !ok || string(raw) == "null" {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fmt.Errorf("%s %q: want true or false: %w", c.typ(), key, err)
	}
	return b, nil
}

func (c hfComponent) intOr(key string, def int) (int, error) {
	raw, ok := c[key]
	if !ok || string(raw) == "null" {
		return def, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("%s %q: want an integer: %w", c.typ(), key, err)
	}
	return n, nil
}

func (c hfComponent) list(key string) ([]hfComponent, error) {
	var l []hfComponent
	if err := json.Unmarshal(c[key], &l); err != nil {
		return nil, fmt.Errorf("%s %q: want a list of objects: %w", c.typ(), key, err)
	}
	return l, nil
}

// pattern reads a {"String": s} or {"Regex": r} pattern.
func (c hfComponent) pattern(key string) (text string, regex bool, err error) {
	var p struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := json.Unmarshal(c[key], &p); err != nil {
		return "", false, fmt.Errorf("%s %q: %w", c.typ(), key, err)
	}
	switch {
	case p.String != nil:
		return *p.String, false, nil
	case p.Regex != nil:
		return *p.Regex, true, nil
	}
	return "", false, fmt.Errorf("%s %q: want {\"String\": ...} or {\"Regex\": ...}", c.typ(), key)
}

func parseComponent(raw json.RawMessage) (hfComponent, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return c, nil
}

// isHFJSON reports whether data looks like a tokenizer.json rather than a
// serialised SentencePiece ModelProto, which never starts with '{' (its first
// byte is a field tag, 0x0a for ModelProto.pieces).
func isHFJSON(data []byte) bool {
	for _, b := range data {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// parseHF builds a tokenizer from tokenizer.json bytes.
func parseHF(data []byte) (*hfTokenizer, []piece, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	var m hfBPEModel
	if err := json.Unmarshal(f.Model, &struct {
		Type *string `json:"type"`
	}{&m.Type}); err != nil {
		return nil, nil, fmt.Errorf("model: %w", err)
	}
	if m.Type == "BPE" {
		if err := json.Unmarshal(f.Model, &m); err != nil {
			return nil, nil, fmt.Errorf("model: %w", err)
		}
	}
	if m.Type != "BPE" {
		if m.Type == "" {
			return nil, nil, errors.New(`model has no "type"`)
		}
		return nil, nil, fmt.Errorf("model type %q is not supported (wick reads BPE tokenizers: Llama 3, Qwen, SmolLM2, Phi, Gemma)", m.Type)
	}
	switch {
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, nil, fmt.Errorf("BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, nil, fmt.Errorf("BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, nil, fmt.Errorf("BPE dropout %v is not supported (it makes encoding random)", *m.Dropout)
	}

	// The vocabulary: the model's tokens and the added tokens, by id.
	size := int64(0)
	for tok, id := range m.Vocab {
		if id < 0 || id >= math.MaxInt32 {
			return nil, nil, fmt.Errorf("vocab: token %q has id %d, outside 0..%d", tok, id, math.MaxInt32-1)
		}
		size = max(size, id+1)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= math.MaxInt32 {
			return nil, nil, fmt.Errorf("added token %q has id %d, outside 0..%d", a.Content, a.ID, math.MaxInt32-1)
		}
		if a.Content == "" {
			return nil, nil, fmt.Errorf("added token %d has no content", a.ID)
		}
		size = max(size, a.ID+1)
	}
	if size == 0 {
		return nil, nil, errors.New("model has an empty vocab")
	}
	if size > 1<<24 {
		return nil, nil, fmt.Errorf("vocab: ids up to %d, implausibly many", size-1)
	}
	pieces := make([]piece, size)
	filled := make([]bool, size)
	for tok, id := range m.Vocab {
		if filled[id] {
			return nil, nil, fmt.Errorf("vocab: id %d is given to both %q and %q", id, pieces[id].text, tok)
		}
		pieces[id] = piece{text: tok, kind: pieceNormal}
		filled[id] = true
	}
	for id := range pieces {
		if !filled[id] {
			// A hole in the ids (some files skip ids): a piece no text
			// encodes to, which decodes to nothing.
			pieces[id] = piece{kind: pieceUnused}
		}
	}

	h := &hfTokenizer{}
	for _, a := range f.AddedTokens {
		kind := pieceUserDefined
		if a.Special {
			kind = pieceControl
		}
		if filled[a.ID] && pieces[a.ID].text != a.Content {
			return nil, nil, fmt.Errorf("added token %q has id %d, which the vocab gives to %q", a.Content, a.ID, pieces[a.ID].text)
		}
		pieces[a.ID] = piece{text: a.Content, kind: kind}
		h.added = append(h.added, addedToken{text: a.Content, id: int32(a.ID), lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord})
	}
	// Longest first, so that where two added tokens start at the same
	// place the longer one wins, as in tokenizers' leftmost-longest match.
	sort.SliceStable(h.added, func(i, j int) bool { return len(h.added[i].text) > len(h.added[j].text) })

	var err error
	if h.bpe, err = newBPE(&m, pieces); err != nil {
		return nil, nil, err
	}
	norm, err := parseComponent(f.Normalizer)
	if err != nil {
		return nil, nil, fmt.Errorf("normalizer: %w", err)
	}
	if h.normalizers, err = parseNormalizer(norm); err != nil {
		return nil, nil, fmt.Errorf("normalizer: %w", err)
	}
	pre, err := parseComponent(f.PreTokenizer)
	if err != nil {
		return nil, nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if h.pre, err = parsePreTokenizer(pre); err != nil {
		return nil, nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	dec, err := parseComponent(f.Decoder)
	if err != nil {
		return nil, nil, fmt.Errorf("decoder: %w", err)
	}
	if err := h.parseDecoder(dec); err != nil {
		return nil, nil, fmt.Errorf("decoder: %w", err)
	}
	if h.byteFallback {
		for i := range pieces {
			if b, ok := byteToken(pieces[i].text); ok && pieces[i].kind == pieceNormal {
				pieces[i].kind, pieces[i].b = pieceByte, b
			}
		}
	}
	return h, pieces, nil
}

// byteToken reads a byte-fallback token, <0xAB>.
func byteToken(s string) (byte, bool) {
	hex, ok := strings.CutPrefix(s, "<0x")
	hex, ok2 := strings.CutSuffix(hex, ">")
	if !ok || !ok2 || len(hex) != 2 {
		return 0, false
	}
	b, err := strconv.ParseUint(hex, 16, 8)
	return byte(b), err == nil
}

// parseMerge reads one merge, "a b" (older files) or ["a", "b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok {
			return "", "", fmt.Errorf("merge %q is not two tokens separated by a space", s)
		}
		return a, b, nil
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return "", "", fmt.Errorf("merge %s: want \"a b\" or [\"a\", \"b\"]", raw)
	}
	return pair[0], pair[1], nil
}
