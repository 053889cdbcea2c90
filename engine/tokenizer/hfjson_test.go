package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// hfDir holds the tokenizer.json fixtures and the ids Hugging Face
// tokenizers gives for testdata/tokenizers/strings.json (made by
// scripts/make_tokenizer_fixtures.py).
const hfDir = "../../testdata/tokenizers"

type hfReference struct {
	Tokenizers string `json:"tokenizers"`
	Files      map[string][]struct {
		Text    string  `json:"text"`
		IDs     []int32 `json:"ids"`
		Decoded string  `json:"decoded"`
	} `json:"files"`
}

func loadHFReference(t *testing.T) *hfReference {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(hfDir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref hfReference
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Files) < 7 {
		t.Fatalf("reference.json covers %d tokenizer files, want 7", len(ref.Files))
	}
	return &ref
}

// TestHFReferenceIDs encodes tricky text (Unicode, decomposed characters,
// digits, whitespace runs, contractions, special tokens in text, long
// repeats) with each fixture and compares with Hugging Face tokenizers' ids,
// then decodes the ids back, both whole and streamed one token at a time.
func TestHFReferenceIDs(t *testing.T) {
	ref := loadHFReference(t)
	for file, cases := range ref.Files {
		t.Run(file, func(t *testing.T) {
			tok, err := Load(filepath.Join(hfDir, file))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cases {
				got := tok.Encode(c.Text)
				if !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
					t.Errorf("Encode(%q)\n got %v\nwant %v", c.Text, got, c.IDs)
					continue
				}
				// Hugging Face's reference decodes special tokens to their
				// text; wick's Decode leaves them out, as for SentencePiece.
				special := false
				for _, id := range c.IDs {
					special = special || tok.pieces[id].kind == pieceControl
				}
				dec := tok.Decode(c.IDs)
				if !special && dec != c.Decoded {
					t.Errorf("Decode(Encode(%q)) = %q, tokenizers says %q", c.Text, dec, c.Decoded)
				}
				var sb strings.Builder
				d := tok.NewStreamDecoder()
				for _, id := range c.IDs {
					s := d.Push(id)
					if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) && !strings.ContainsRune(c.Text, utf8.RuneError) {
						t.Errorf("%q: streamed piece %q is not whole characters", c.Text, s)
					}
					sb.WriteString(s)
				}
				sb.WriteString(d.Flush())
				if sb.String() != dec {
					t.Errorf("%q: streamed decoding %q, whole %q", c.Text, sb.String(), dec)
				}
			}
		})
	}
}

// TestHFRefusals checks that tokenizer.json files wick cannot run
// faithfully are refused with an error naming what is unsupported.
func TestHFRefusals(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(hfDir, "qwen2.json"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(base, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"unigram", edit(func(m map[string]any) { model(m)["type"] = "Unigram" }), `model type "Unigram" is not supported`},
		{"wordpiece", edit(func(m map[string]any) { model(m)["type"] = "WordPiece" }), `model type "WordPiece"`},
		{"pre-tokenizer", edit(func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "BertPreTokenizer"} }), `pre-tokenizer "BertPreTokenizer" is not supported`},
		{"normalizer", edit(func(m map[string]any) { m["normalizer"] = map[string]any{"type": "BertNormalizer"} }), `normalizer "BertNormalizer" is not supported`},
		{"decoder", edit(func(m map[string]any) { m["decoder"] = map[string]any{"type": "WordPiece"} }), `decoder "WordPiece" is not supported`},
		{"dropout", edit(func(m map[string]any) { model(m)["dropout"] = 0.1 }), "dropout"},
		{"bad merge", edit(func(m map[string]any) { model(m)["merges"] = []any{[]any{"no-such", "token"}} }), "merges[0]"},
		{"bad regex", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "(unclosed"}, "behavior": "Isolated"}
		}), `pattern "(unclosed"`},
		{"lookbehind", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `(?<=a)b|\s+`}, "behavior": "Isolated"}
		}), "lookaround (?<=... is not supported"},
		{"lookahead elsewhere", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\s+(?!\S)|\p{L}+`}, "behavior": "Isolated"}
		}), "lookaround (?!... is not supported"},
		{"behavior", edit(func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"String": " "}, "behavior": "Sideways"}
		}), `behavior "Sideways"`},
		{"truncated", base[:len(base)/2], "tokenizer.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromBytes("x/tokenizer.json", tt.data)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "x/tokenizer.json") {
				t.Errorf("error %q does not name %q and the file", err, tt.want)
			}
		})
	}
}

// TestHFPieces checks the vocabulary view of a tokenizer.json: added tokens
// by their text, special ones decoding to nothing, non-special ones to
// their text, and ids outside the vocabulary to U+FFFD.
func TestHFPieces(t *testing.T) {
	tok, err := Load(filepath.Join(hfDir, "qwen2.json"))
	if err != nil {
		t.Fatal(err)
	}
	end, ok := tok.ID("<|im_end|>")
	if !ok || int(end) != tok.Vocab()-3 {
		t.Fatalf("ID(<|im_end|>) = %d, %v; want %d", end, ok, tok.Vocab()-3)
	}
	think, _ := tok.ID("<think>")
	hello := tok.Encode("hello")
	if got := tok.Decode(append(append([]int32{end}, hello...), think, int32(tok.Vocab()))); got != "hello<think>\uFFFD" {
		t.Errorf("Decode = %q", got)
	}
	if p, ok := tok.Piece(hello[0]); !ok || !strings.HasPrefix("hello", p) {
		t.Errorf("Piece(%d) = %q, %v", hello[0], p, ok)
	}
}
