package convert

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/wick-run/wick/engine/gguf"
)

// This file rebuilds, from a GGUF file's tokenizer.ggml.* metadata, the
// Hugging Face tokenizer.json its tokenizer was made from, so that
// engine/tokenizer reads GGUF tokenizers through the same pipeline as
// tokenizer.json files: byte-level BPE ("gpt2", with the pre-tokenizer
// that tokenizer.ggml.pre names) and SentencePiece BPE ("llama": Gemma's,
// Phi-3's and Llama 2's, with scores and token types).

// ggufPre maps tokenizer.ggml.pre names to the pre-tokenizer and
// normalizer of the tokenizer.json they stand for, and whether BPE's
// ignore_merges is on (Llama 3's tokenizer.json sets it).
var ggufPre = map[string]struct {
	pattern      string
	invert       bool // Split keeps the pattern's matches and removes the rest (o200k's form)
	nfc, ignore  bool
	digits, gpt2 bool // SmolLM2: single digits, then GPT-2's ByteLevel regex
}{
	"llama-bpe": {pattern: llama3Pattern, ignore: true},
	"llama3":    {pattern: llama3Pattern, ignore: true},
	"qwen2":     {pattern: qwen2Pattern, nfc: true},
	"smollm":    {digits: true, gpt2: true},
	"gpt-4o":    {pattern: o200kPattern, invert: true}, // Phi-4-mini
}

const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// o200kPattern is the Split pattern of the o200k tokenizer.json that
	// Phi-4-mini ships (llama.cpp's "gpt-4o" names it).
	o200kPattern = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type,
// which are SentencePiece's piece types).
const (
	ggufNormal      = 1
	ggufUnknown     = 2
	ggufControl     = 3
	ggufUserDefined = 4
	ggufUnused      = 5
	ggufByte        = 6
)

type ggufAdded struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

// ggufTokenizer rebuilds the tokenizer.json of f's tokenizer.
func ggufTokenizer(f *gguf.File) ([]byte, error) {
	tokens, _ := f.Metadata["tokenizer.ggml.tokens"].([]any)
	types, _ := f.Metadata["tokenizer.ggml.token_type"].([]any)
	if len(tokens) == 0 || len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.tokens (%d) and token_type (%d) are missing or differ in length", len(tokens), len(types))
	}
	texts := make([]string, len(tokens))
	kinds := make([]int64, len(tokens))
	for i, t := range tokens {
		s, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("tokenizer.ggml.tokens[%d] is not a string", i)
		}
		texts[i] = s
		kinds[i], _ = asInt(types[i])
	}
	switch m, _ := f.String("tokenizer.ggml.model"); m {
	case "gpt2":
		return ggufBPETokenizer(f, texts, kinds)
	case "llama":
		return ggufSPMTokenizer(f, texts, kinds)
	default:
		return nil, fmt.Errorf("tokenizer.ggml.model %q is not supported (wick rebuilds byte-level BPE, \"gpt2\", and SentencePiece BPE, \"llama\", tokenizers)", m)
	}
}

// ggufBPETokenizer rebuilds a byte-level BPE tokenizer.json: vocabulary
// and merges as stored, control and user-defined tokens as added tokens,
// and the pre-tokenizer that tokenizer.ggml.pre names.
func ggufBPETokenizer(f *gguf.File, texts []string, kinds []int64) ([]byte, error) {
	pre, _ := f.String("tokenizer.ggml.pre")
	p, ok := ggufPre[pre]
	if !ok {
		known := make([]string, 0, len(ggufPre))
		for k := range ggufPre {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("tokenizer.ggml.pre %q is not supported (wick knows %s)", pre, strings.Join(known, ", "))
	}
	merges, _ := f.Metadata["tokenizer.ggml.merges"].([]any)
	vocab := map[string]int{}
	var adds []ggufAdded
	for i, s := range texts {
		switch kinds[i] {
		case ggufNormal:
			vocab[s] = i
		case ggufControl, ggufUserDefined:
			adds = append(adds, ggufAdded{ID: i, Content: s, Special: kinds[i] == ggufControl})
		case ggufUnused: // padding rows
		default:
			return nil, fmt.Errorf("tokenizer.ggml.token_type[%d] is %d, not supported in a byte-level BPE tokenizer", i, kinds[i])
		}
	}
	ms := make([]string, len(merges))
	for i, m := range merges {
		s, ok := m.(string)
		if !ok {
			return nil, fmt.Errorf("tokenizer.ggml.merges[%d] is not a string", i)
		}
		ms[i] = s
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": p.gpt2}
	var pres []any
	if p.digits {
		pres = append(pres, map[string]any{"type": "Digits", "individual_digits": true})
	}
	if p.pattern != "" {
		behavior := "Isolated"
		if p.invert {
			behavior = "Removed"
		}
		pres = append(pres, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": p.pattern}, "behavior": behavior, "invert": p.invert})
	}
	pres = append(pres, byteLevel)
	var norm any
	if p.nfc {
		norm = map[string]any{"type": "NFC"}
	}
	return json.Marshal(map[string]any{
		"added_tokens":  adds,
		"normalizer":    norm,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": pres},
		"decoder":       byteLevel,
		"model": map[string]any{"type": "BPE", "ignore_merges": p.ignore, "byte_fallback": false,
			"vocab": vocab, "merges": ms},
	})
}

// ggufSPMTokenizer rebuilds the tokenizer.json that Hugging Face's
// converter makes from a SentencePiece BPE model, from the pieces, scores
// and types llama.cpp's converter copied out of it: BPE with byte_fallback
// over every piece, merges derived from the scores, unknown, control and
// user-defined pieces as added tokens, spaces as ▁ (with one prepended when
// tokenizer.ggml.add_space_prefix is on, llama.cpp's default).
//
// The merges are what SentencePiece's BPE does: it joins the neighbouring
// pair whose joined piece scores highest. Every split of a normal piece
// into two pieces becomes a merge, ranked by the joined piece's score
// (highest first), then by the ids of the joined piece and its parts, as
// Hugging Face's SentencePiece extractor orders them.
func ggufSPMTokenizer(f *gguf.File, texts []string, kinds []int64) ([]byte, error) {
	scoresAny, _ := f.Metadata["tokenizer.ggml.scores"].([]any)
	if len(scoresAny) != len(texts) {
		return nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(scoresAny), len(texts))
	}
	scores := make([]float64, len(texts))
	for i, v := range scoresAny {
		x, ok := v.(float32)
		if !ok || math.IsNaN(float64(x)) {
			return nil, fmt.Errorf("tokenizer.ggml.scores[%d] is not a float32 number", i)
		}
		scores[i] = float64(x)
	}
	vocab := map[string]int{}
	var adds []ggufAdded
	var unk any
	for i, s := range texts {
		k := kinds[i]
		switch k {
		case ggufUnused:
			continue
		case ggufNormal, ggufControl, ggufUserDefined:
		case ggufUnknown:
			if unk == nil {
				unk = s
			}
		case ggufByte:
			if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
				return nil, fmt.Errorf("tokenizer.ggml.tokens[%d] %q is typed BYTE but is not <0xAB>", i, s)
			}
		default:
			return nil, fmt.Errorf("tokenizer.ggml.token_type[%d] is %d, not supported", i, k)
		}
		if _, dup := vocab[s]; !dup {
			vocab[s] = i
		}
		if k == ggufUnknown || k == ggufControl || k == ggufUserDefined {
			adds = append(adds, ggufAdded{ID: i, Content: s, Special: k != ggufUserDefined})
		}
	}
	type merge struct {
		score     float64
		id, a, b  int
		left, rgt string
	}
	var ms []merge
	for i, s := range texts {
		if kinds[i] != ggufNormal || vocab[s] != i || utf8.RuneCountInString(s) < 2 {
			continue
		}
		for k := range s {
			if k == 0 {
				continue
			}
			a, okA := vocab[s[:k]]
			b, okB := vocab[s[k:]]
			if okA && okB {
				ms = append(ms, merge{scores[i], i, a, b, s[:k], s[k:]})
			}
		}
	}
	sort.Slice(ms, func(x, y int) bool {
		p, q := ms[x], ms[y]
		if p.score != q.score {
			return p.score > q.score
		}
		if p.id != q.id {
			return p.id < q.id
		}
		if p.a != q.a {
			return p.a < q.a
		}
		return p.b < q.b
	})
	merges := make([][2]string, len(ms))
	for i, m := range ms {
		merges[i] = [2]string{m.left, m.rgt}
	}
	prefix := true // llama.cpp's default for SentencePiece models
	if v, ok := f.Metadata["tokenizer.ggml.add_space_prefix"].(bool); ok {
		prefix = v
	}
	replace := map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}
	decoders := []any{
		map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
		map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"},
	}
	var norm any = replace
	if prefix {
		norm = map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"}, replace}}
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	return json.Marshal(map[string]any{
		"added_tokens":  adds,
		"normalizer":    norm,
		"pre_tokenizer": nil,
		"decoder":       map[string]any{"type": "Sequence", "decoders": decoders},
		"model": map[string]any{"type": "BPE", "unk_token": unk, "fuse_unk": true, "byte_fallback": true,
			"ignore_merges": false, "vocab": vocab, "merges": merges},
	})
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		return int64(x), true
	}
	return 0, false
}
