package gguf

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

// TestDequantizeMatchesGGUFPy decodes random blocks of every supported
// type and compares with gguf-py's quants.dequantize of the same bytes,
// bit for bit (testdata/gguf/quants.json, scripts/make_gguf_fixtures.py).
func TestDequantizeMatchesGGUFPy(t *testing.T) {
	data, err := os.ReadFile("../../testdata/gguf/quants.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Types []struct {
			Type   string   `json:"type"`
			Raw    string   `json:"raw"`
			Values []uint32 `json:"values"`
		} `json:"types"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	byName := map[string]Type{}
	for ty, l := range layout {
		byName[l.name] = ty
	}
	seen := 0
	for _, tc := range ref.Types {
		t.Run(tc.Type, func(t *testing.T) {
			ty, ok := byName[tc.Type]
			if !ok {
				t.Fatalf("type %s unknown", tc.Type)
			}
			raw, err := hex.DecodeString(tc.Raw)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(tc.Values))
			if err := ty.Dequantize(got, raw); err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i, want := range tc.Values {
				if math.Float32bits(got[i]) != want {
					if bad < 5 {
						t.Errorf("value %d: %v (%#08x), gguf-py %v (%#08x)", i, got[i], math.Float32bits(got[i]), math.Float32frombits(want), want)
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ", bad, len(got))
			}
			seen++
		})
	}
	if seen != 10 {
		t.Errorf("%d types checked, want 10", seen)
	}
}

func openFixture(t *testing.T, path string) (*File, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(data), int64(len(data)), path)
	if err != nil {
		t.Fatal(err)
	}
	return f, data
}

// TestReadFixture reads a GGUF file gguf-py wrote from the llama32
// fixture, as Q8_0 and as F32: metadata, the tensor directory, and rows of
// the Q8_0 tensors within quantisation error of the F32 ones.
func TestReadFixture(t *testing.T) {
	q8, _ := openFixture(t, "../../testdata/hf/llama32/model-q8_0.gguf")
	f32, _ := openFixture(t, "../../testdata/hf/llama32/model-f32.gguf")
	if a, _ := q8.String("general.architecture"); a != "llama" {
		t.Errorf("general.architecture %q", a)
	}
	if p, _ := q8.String("tokenizer.ggml.pre"); p != "llama-bpe" {
		t.Errorf("tokenizer.ggml.pre %q", p)
	}
	if toks, _ := q8.Metadata["tokenizer.ggml.tokens"].([]any); len(toks) != 2761 {
		t.Errorf("%d tokens, want 2761", len(toks))
	}
	if n, ok := q8.Int("llama.block_count"); !ok || n != 2 {
		t.Errorf("llama.block_count %d, %v", n, ok)
	}
	if tmpl, _ := q8.String("tokenizer.chat_template"); !strings.Contains(tmpl, "<|start_header_id|>") {
		t.Errorf("chat template %q", tmpl)
	}
	emb := q8.Tensor("token_embd.weight")
	if emb == nil || emb.Type != Q8_0 || emb.Dims[0] != 64 || emb.Rows() != 2761 {
		t.Fatalf("token_embd.weight: %+v", emb)
	}
	for _, name := range []string{"token_embd.weight", "blk.1.ffn_down.weight", "blk.0.attn_q.weight"} {
		a, b := q8.Tensor(name), f32.Tensor(name)
		if a == nil || b == nil || b.Type != F32 {
			t.Fatalf("%s: %+v %+v", name, a, b)
		}
		rows := min(a.Rows(), 50)
		qa := make([]float32, rows*int64(a.Dims[0]))
		fa := make([]float32, len(qa))
		if err := q8.ReadRows(a, 0, rows, qa); err != nil {
			t.Fatal(err)
		}
		if err := f32.ReadRows(b, 0, rows, fa); err != nil {
			t.Fatal(err)
		}
		for blk := 0; blk < len(fa); blk += 32 {
			m := float32(0)
			for _, v := range fa[blk : blk+32] {
				m = max(m, float32(math.Abs(float64(v))))
			}
			for i := blk; i < blk+32; i++ {
				// Q8_0: d = max/127 stored as float16, values rounded to d.
				if d := math.Abs(float64(qa[i] - fa[i])); d > float64(m)/127*0.51+1e-3*float64(m) {
					t.Fatalf("%s value %d: q8 %v, f32 %v", name, i, qa[i], fa[i])
				}
			}
		}
	}
}

// TestBadFiles checks that truncated and corrupt files are errors naming
// what is wrong, never panics.
func TestBadFiles(t *testing.T) {
	_, data := openFixture(t, "../../testdata/hf/qwen2/model-q8_0.gguf")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated tensor data", data[:len(data)-100], "past the end of the file"},
		{"truncated header", data[:200], "truncated?"},
		{"not gguf", []byte("PK\x03\x04 a zip file"), "not a GGUF file"},
		{"version", append([]byte("GGUF\x09\x00\x00\x00"), data[8:]...), "version 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.data), int64(len(tc.data)), "x.gguf")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "x.gguf") {
				t.Errorf("error %v, want one naming x.gguf and %q", err, tc.want)
			}
		})
	}
	// Every prefix of the header must be refused cleanly.
	for n := 0; n < 4096 && n < len(data); n += 7 {
		if _, err := Open(bytes.NewReader(data[:n]), int64(n), "x.gguf"); err == nil {
			t.Fatalf("a %d-byte prefix opened", n)
		}
	}
	if _, err := Type(20).rowBytes(32); err == nil || !strings.Contains(err.Error(), "type 20 is not supported") {
		t.Errorf("unsupported type: %v", err)
	}
}
