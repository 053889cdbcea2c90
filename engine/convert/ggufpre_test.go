package convert

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/gguf"
	"github.com/wick-run/wick/engine/tokenizer"
)

const tokenizerDir = "../../testdata/tokenizers"

// ggufTokenizerMetadata is the tokenizer.ggml.* metadata llama.cpp's
// converter writes for a byte-level BPE tokenizer.json: every token by id,
// typed NORMAL (1), CONTROL (3, special added tokens) or USER_DEFINED (4),
// the merges as "a b", and pre as the tokenizer.ggml.pre name.
func ggufTokenizerMetadata(t *testing.T, file, pre string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tokenizerDir, file))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Model struct {
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
		Added []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(data, &tj); err != nil {
		t.Fatal(err)
	}
	n := len(tj.Model.Vocab)
	for _, a := range tj.Added {
		n = max(n, a.ID+1)
	}
	tokens, types := make([]any, n), make([]any, n)
	for i := range tokens {
		tokens[i], types[i] = "", int32(5) // UNUSED, unless named below
	}
	for s, id := range tj.Model.Vocab {
		tokens[id], types[id] = s, int32(1)
	}
	for _, a := range tj.Added {
		tokens[a.ID], types[a.ID] = a.Content, int32(4)
		if a.Special {
			types[a.ID] = int32(3)
		}
	}
	merges := make([]any, len(tj.Model.Merges))
	for i, raw := range tj.Model.Merges {
		var pair []string
		if err := json.Unmarshal(raw, &pair); err != nil {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("%s: merge %d: %s", file, i, raw)
			}
			pair = strings.SplitN(s, " ", 2)
		}
		merges[i] = strings.Join(pair, " ")
	}
	return map[string]any{
		"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
		"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
	}
}

// TestGGUFPreTokenizers rebuilds tokenizers from GGUF-style metadata of
// the byte-level fixtures, each under the tokenizer.ggml.pre name
// llama.cpp gives its family, and checks that the result encodes the
// tricky strings to Hugging Face tokenizers' ids (testdata/tokenizers/
// reference.json). Under another family's name each encodes some string
// differently, so the mapping is what is checked.
func TestGGUFPreTokenizers(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(tokenizerDir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Files map[string][]struct {
			Text string  `json:"text"`
			IDs  []int32 `json:"ids"`
		} `json:"files"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, pre, wrong string }{
		{"smollm2.json", "smollm", "qwen2"},
		{"qwen2.json", "qwen2", "smollm"},
		{"llama3.json", "llama-bpe", "qwen2"},
		{"llama3.json", "llama3", "smollm"},
	} {
		t.Run(tc.pre, func(t *testing.T) {
			cases := ref.Files[tc.file]
			if len(cases) == 0 {
				t.Fatalf("reference.json has no strings for %s", tc.file)
			}
			for _, pre := range []string{tc.pre, tc.wrong} {
				js, err := ggufTokenizer(&gguf.File{Metadata: ggufTokenizerMetadata(t, tc.file, pre)})
				if err != nil {
					t.Fatal(err)
				}
				tok, err := tokenizer.FromBytes(tc.file+" as "+pre, js)
				if err != nil {
					t.Fatal(err)
				}
				differ := 0
				for _, c := range cases {
					got := tok.Encode(c.Text)
					if slices.Equal(got, c.IDs) || len(got) == 0 && len(c.IDs) == 0 {
						continue
					}
					differ++
					if pre == tc.pre {
						t.Errorf("%q: rebuilt %v, Hugging Face %v", c.Text, got, c.IDs)
					}
				}
				if pre == tc.wrong {
					t.Logf("as %q: %d of %d strings encode differently", pre, differ, len(cases))
					if differ == 0 {
						t.Errorf("%s rebuilt as %q encodes every string as %q does: the test does not pin the mapping", tc.file, pre, tc.pre)
					}
				}
			}
		})
	}
}
