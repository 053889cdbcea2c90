// Package badimport holds the checkpoints every converter must refuse (the
// native one, the converter module under wazero, the page's import), for
// their tests. It is a package of its own, not part of internal/testmodel,
// because the chat module links testmodel and must not grow.
package badimport

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Checkpoint is a checkpoint that a conversion must refuse without writing
// anything: Path is a folder or a .gguf file, Want what the converter's
// error must say, and Plain the word that the page's one-sentence message
// must name (the page's words are its own).
type Checkpoint struct {
	Name, Path, Want, Plain string
}

// Checkpoints returns the checkpoints every converter must refuse (the
// native one, the converter module under wazero and the page's import):
// a truncated GGUF, a folder of an unsupported family and one whose
// tokenizer.json is of a model type wick does not encode. hf is
// testdata/hf.
func Checkpoints(t testing.TB, hf string) []Checkpoint {
	t.Helper()
	gguf, err := os.ReadFile(filepath.Join(hf, "qwen2", "model-q8_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.gguf")
	if err := os.WriteFile(truncated, gguf[:len(gguf)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	folder := func(name string, edit func(dir string) error) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.CopyFS(dir, os.DirFS(filepath.Join(hf, "llama"))); err != nil {
			t.Fatal(err)
		}
		if err := edit(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	mistral := folder("mistral", func(dir string) error {
		cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "config.json"), bytes.Replace(cfg, []byte(`"LlamaForCausalLM"`), []byte(`"MistralForCausalLM"`), 1), 0o644)
	})
	unigram := folder("unigram", func(dir string) error {
		if err := os.Remove(filepath.Join(dir, "tokenizer.model")); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": {"type": "Unigram", "vocab": [["a", 0]]}}`), 0o644)
	})
	return []Checkpoint{
		{"truncated GGUF", truncated, "past the end of the file", "truncated"},
		{"unsupported family", mistral, `unsupported architecture "MistralForCausalLM"`, "MistralForCausalLM"},
		{"unsupported tokenizer", unigram, `tokenizer.json: model type "Unigram" is not supported`, "Unigram"},
	}
}
