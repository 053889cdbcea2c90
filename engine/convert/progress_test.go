package convert

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wick-run/wick/engine/model"
)

// TestProgress converts a safetensors folder and a GGUF file while counting
// progress: it only grows, ends at the totals, and an error from the
// callback (a cancelled import) ends the conversion with nothing written.
func TestProgress(t *testing.T) {
	for _, in := range []string{"llama", filepath.Join("qwen2", "model-q8_0.gguf")} {
		t.Run(in, func(t *testing.T) {
			var seen []Progress
			out := t.TempDir()
			_, err := Convert(filepath.Join(fixtureDir, in), out, Options{DType: model.Int8, Progress: func(p Progress) error {
				seen = append(seen, p)
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			last := seen[len(seen)-1]
			if last.Tensors != last.TotalTensors || last.Bytes != last.TotalBytes || last.TotalBytes == 0 {
				t.Fatalf("the last progress is %+v, want every tensor and byte done", last)
			}
			for i := 1; i < len(seen); i++ {
				if seen[i].Bytes < seen[i-1].Bytes || seen[i].Tensors < seen[i-1].Tensors {
					t.Fatalf("progress went back: %+v after %+v", seen[i], seen[i-1])
				}
			}
			var shards int64
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				if fi, err := e.Info(); err == nil && filepath.Ext(e.Name()) == ".bin" {
					shards += fi.Size()
				}
			}
			if shards < last.TotalBytes {
				t.Errorf("shards hold %d bytes, fewer than the %d progress counted", shards, last.TotalBytes)
			}

			stop := errors.New("stopped by the user")
			out = t.TempDir()
			calls := 0
			_, err = Convert(filepath.Join(fixtureDir, in), out, Options{DType: model.Int8, Progress: func(p Progress) error {
				if calls++; p.Tensors == p.TotalTensors/2 {
					return stop
				}
				return nil
			}})
			if !errors.Is(err, stop) {
				t.Fatalf("got %v, want the callback's error", err)
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("a cancelled conversion left %d files", len(left))
			}
		})
	}
}
