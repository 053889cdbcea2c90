package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/tokenizer"
)

// Checked is a model directory that passed Check: its opened manifest, its
// tokenizer and its chat template.
type Checked struct {
	Format    *format.Model
	Tokenizer *tokenizer.Tokenizer
	Template  *chat.Template
}

// Check opens the model directory dir and checks everything a session
// needs short of hashing the shards (format.Model.Verify does that, and
// loading checks each shard it reads): the manifest as a whole
// (format.Open), every shard present at its listed size, the tokenizer's
// size, sha256, parse and vocabulary, and the chat template (stop ids,
// special tokens). It is the one validation that wick inspect, wick serve
// and Load share, so a model one accepts is not refused by another.
func Check(dir string) (*Checked, error) {
	f, err := format.Open(dir)
	if err != nil {
		return nil, err
	}
	for _, s := range f.Manifest().GetShards() {
		st, err := os.Stat(filepath.Join(dir, s.GetFile()))
		if err != nil {
			return nil, fmt.Errorf("load model %s: shard %s: %w", dir, s.GetFile(), errors.Unwrap(err))
		}
		if !st.Mode().IsRegular() || uint64(st.Size()) != s.GetSize() {
			return nil, fmt.Errorf("load model %s: shard %s: %v of %d bytes, the manifest lists a file of %d", dir, s.GetFile(), st.Mode().Type(), st.Size(), s.GetSize())
		}
	}
	tok, tmpl, err := checkTokenizer(f)
	if err != nil {
		return nil, err
	}
	return &Checked{Format: f, Tokenizer: tok, Template: tmpl}, nil
}

// checkTokenizer reads the tokenizer of f (checking its sha256) and builds
// the chat template on it.
func checkTokenizer(f *format.Model) (*tokenizer.Tokenizer, *chat.Template, error) {
	dir := f.Dir()
	data, err := f.ReadTokenizer()
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizer.FromBytes(f.TokenizerPath(), data)
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	// A tokenizer may have fewer pieces than the embedding has rows (Gemma
	// pads its embedding), never more: its ids must index the embedding.
	if vocab := f.Config().Vocab; tok.Vocab() > vocab {
		return nil, nil, fmt.Errorf("load model %s: tokenizer %s has %d pieces, more than the model's vocab of %d", dir, f.Manifest().GetTokenizer().GetFile(), tok.Vocab(), vocab)
	}
	tmpl, err := chat.New(f.Manifest().GetChat(), tok)
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	return tok, tmpl, nil
}
