package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/tokenizer"
)

func init() {
	commands["tokenize"] = command{"print the token ids of a text", runTokenize}
}

func runTokenize(args []string) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	dir := fs.String("model", "", "wick model directory, or a Hugging Face checkpoint (tokenizer.json or tokenizer.model)")
	pieces := fs.Bool("pieces", false, "print each id with its piece")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 1 {
		return errors.New("usage: wick tokenize -model DIR [-pieces] TEXT")
	}
	tok, err := loadTokenizer(*dir)
	if err != nil {
		return err
	}
	ids := tok.Encode(fs.Arg(0))
	var sb strings.Builder
	for i, id := range ids {
		if *pieces {
			p, _ := tok.Piece(id)
			fmt.Fprintf(&sb, "%d\t%q\n", id, p)
			continue
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprint(&sb, id)
	}
	if !*pieces {
		sb.WriteByte('\n')
	}
	_, err = os.Stdout.WriteString(sb.String())
	return err
}

// loadTokenizer reads the tokenizer of a wick model directory (checked
// against its manifest), or else a checkpoint's tokenizer.json or
// tokenizer.model.
func loadTokenizer(dir string) (*tokenizer.Tokenizer, error) {
	if _, err := os.Stat(filepath.Join(dir, format.ManifestFile)); err == nil {
		m, err := format.Open(dir)
		if err != nil {
			return nil, err
		}
		data, err := m.ReadTokenizer()
		if err != nil {
			return nil, err
		}
		return tokenizer.FromBytes(m.TokenizerPath(), data)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer.model"} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err == nil {
			return tokenizer.Load(path)
		}
	}
	return nil, fmt.Errorf("%s has no %s, tokenizer.json or tokenizer.model", dir, format.ManifestFile)
}
