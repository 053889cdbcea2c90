package convert_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// TestGGUFParity converts the GGUF files gguf-py wrote from the qwen2
// fixture (scripts/make_gguf_fixtures.py) and checks the result against
// transformers' logits of the safetensors checkpoint, on the CPU backend:
// the F32 file converted to float32 within 1e-4 with the greedy tokens
// equal, the Q8_0 file converted to int8 within quantisation error.
func TestGGUFParity(t *testing.T) {
	fx := loadFixture(t, "qwen2")
	for _, tc := range []struct {
		file  string
		dtype model.DType
	}{{"model-f32.gguf", model.F32}, {"model-q8_0.gguf", model.Int8}} {
		t.Run(tc.file, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			res, err := convert.Convert(filepath.Join(fx.Dir, tc.file), dir, convert.Options{DType: tc.dtype})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Config.QKVBias || !res.Config.TiedEmbedding {
				t.Errorf("config %+v", res.Config)
			}
			r, err := fx.Compare(dir, engine.Options{Backend: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("max relative error %.3g, min cosine %.6f, greedy %d/%d", r.MaxRelErr, r.MinCosine, r.GreedySame, len(fx.Greedy))
			if tc.dtype == model.F32 && (r.MaxRelErr > 1e-4 || r.GreedySame != len(fx.Greedy)) {
				t.Errorf("f32: max relative error %.3g, greedy %d/%d", r.MaxRelErr, r.GreedySame, len(fx.Greedy))
			}
			if tc.dtype == model.Int8 && r.MinCosine < 0.99 {
				t.Errorf("int8 from Q8_0: min cosine %.5f < 0.99", r.MinCosine)
			}
			// The tokenizer rebuilt from tokenizer.ggml.* encodes as the
			// tokenizer.json it came from.
			f, err := format.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			data, err := f.ReadTokenizer()
			if err != nil {
				t.Fatal(err)
			}
			got, err := tokenizer.FromBytes("gguf", data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := tokenizer.Load(filepath.Join(fx.Dir, "tokenizer.json"))
			if err != nil {
				t.Fatal(err)
			}
			var strs []string
			raw, _ := os.ReadFile("../../testdata/tokenizers/strings.json")
			if err := json.Unmarshal(raw, &strs); err != nil {
				t.Fatal(err)
			}
			for _, s := range strs {
				if a, b := got.Encode(s), want.Encode(s); !slices.Equal(a, b) {
					t.Errorf("%q: GGUF tokenizer %v, tokenizer.json %v", s, a, b)
				}
			}
			if ct := f.Manifest().GetChat(); ct.GetUser().GetPrefix() != "<|im_start|>user\n" || len(ct.GetStopIds()) == 0 {
				t.Errorf("chat template %v", ct)
			}
		})
	}
}

// TestGGUFLlamaRows converts the F32 GGUF of the llama32 fixture and checks
// that every matrix equals the safetensors conversion's: Q and K rows are
// put back in Hugging Face's order. (Its Llama 3 rope scaling is not in the
// file, so its logits are not compared.)
func TestGGUFLlamaRows(t *testing.T) {
	fx := loadFixture(t, "llama32")
	gdir, sdir := filepath.Join(t.TempDir(), "g"), filepath.Join(t.TempDir(), "s")
	if _, err := convert.Convert(filepath.Join(fx.Dir, "model-f32.gguf"), gdir, convert.Options{DType: model.F32}); err != nil {
		t.Fatal(err)
	}
	if err := fx.Convert(sdir, model.F32); err != nil {
		t.Fatal(err)
	}
	g, err := format.Open(gdir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := format.Open(sdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range g.Config().TensorSpecs() {
		a, err := g.ReadTensor(spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.ReadTensor(spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs", spec.Name)
		}
	}
}

// TestGGUFRefusals checks that unsupported and truncated GGUF files are
// refused by name and nothing is written.
func TestGGUFRefusals(t *testing.T) {
	data, err := os.ReadFile("../../testdata/hf/qwen2/model-q8_0.gguf")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", data[:len(data)/2], "past the end of the file"},
		{"architecture", bytes.Replace(data, []byte("qwen2"), []byte("mamba"), 1), `general.architecture "mamba" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "x.gguf")
			if err := os.WriteFile(in, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "m")
			_, err := convert.Convert(in, out, convert.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(out); len(entries) > 0 {
				t.Errorf("%d files left in %s", len(entries), out)
			}
		})
	}
}
