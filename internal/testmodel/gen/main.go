// Command gen writes wick's tiny test models into a testdata directory:
//
//	cai-tiny    Character.AI-shaped (MQA, 5 local : 1 global, window 8, KV
//	            shared by neighbouring local layers and across global layers), int8
//	plain-tiny  plain (GQA, all global, no sharing, SwiGLU, untied head), float32
//
// Both use testdata/tokenizer/tokenizer.model and the Gemma-style chat
// template. The generator is seeded: `make testdata` rewrites the same bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/internal/testmodel"
)

func main() {
	out := flag.String("out", "testdata", "directory to write the models into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	tokPath := filepath.Join(out, "tokenizer", "tokenizer.model")
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		return err
	}
	tmpl, err := chat.GemmaChatTemplate(tok)
	if err != nil {
		return err
	}
	for _, m := range []struct {
		name string
		cfg  *model.Config
		seed uint64
	}{
		{"cai-tiny", testmodel.CAIShaped(tok.Vocab(), model.Int8), 1},
		{"plain-tiny", testmodel.Plain(tok.Vocab(), model.F32), 2},
	} {
		dir := filepath.Join(out, m.name)
		// Replace the old model whole: shards are content-addressed, so stale
		// ones would otherwise linger beside the new manifest.
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		w := testmodel.Random(m.cfg, m.seed)
		// A small shard cap so that even these tiny models exercise tensors
		// spanning several shards.
		if err := format.WriteModel(dir, m.name, m.cfg, w, tokPath, tmpl, 64<<10); err != nil {
			return err
		}
		fmt.Printf("wrote %s: %d parameters\n", dir, m.cfg.Params())
	}
	return nil
}
