package convert_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/gguf"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/internal/modeltest"
)

// TestGGUFParity converts the GGUF files gguf-py wrote from the family
// fixtures (scripts/make_gguf_fixtures.py, the way llama.cpp's converter
// writes each architecture) and checks the result against transformers'
// logits of the safetensors checkpoint, on the CPU backend: the F32 file
// converted to float32 within 1e-4 with the greedy tokens equal, the Q8_0
// file (F16 where rows are not a multiple of 32, as llama.cpp falls back)
// converted to float32 and to int8 within quantisation error. The tokenizer rebuilt from
// tokenizer.ggml.* must encode as the checkpoint's tokenizer.json, and the
// chat format must be the family's.
func TestGGUFParity(t *testing.T) {
	// ggufQ8Cosine is the least cosine of int8 logits converted from the
	// Q8_0 files: Q8_0's rounding, then wick's per-row int8 over it. Q8_0
	// alone (kept float32) measures 0.9988-0.9998 on every fixture; int8
	// over it 0.9975-0.9986, except gemma2 at 0.9807 (0.9919 from its
	// safetensors; its soft-caps make the logits flat, see int8Cosine).
	ggufQ8Cosine := map[string]float64{"qwen2": 0.997, "qwen3": 0.997, "gemma2": 0.98, "gemma3": 0.997, "phi35": 0.997, "phi4": 0.997}
	for _, tc := range []struct {
		fixture   string
		tokenizer string // the tokenizer.json the GGUF tokenizer must equal
		user      string // the chat format's user prefix
		check     func(c *model.Config) bool
	}{
		{"qwen2", "qwen2/tokenizer.json", "<|im_start|>user\n", func(c *model.Config) bool { return c.QKVBias && c.TiedEmbedding }},
		{"qwen3", "qwen3/tokenizer.json", "<|im_start|>user\n", func(c *model.Config) bool { return c.QKNorm && !c.QKVBias }},
		{"gemma2", "gemma2/tokenizer.json", "<start_of_turn>user\n", func(c *model.Config) bool {
			return c.AttnSoftcap == 5 && c.FinalSoftcap == 30 && c.Layers[0].Window == 8 && c.Layers[1].Window == 0
		}},
		// gemma3's checkpoint has tokenizer.model only; gemma2's
		// tokenizer.json was made from the same model, in Gemma's form.
		{"gemma3", "gemma2/tokenizer.json", "<start_of_turn>user\n", func(c *model.Config) bool {
			return c.QKNorm && c.RopeThetaLocal == 1e4 && c.RopeThetaGlobal == 1e6 && c.Layers[2].Window == 0 && c.Layers[3].Window == 8
		}},
		{"phi35", "phi35/tokenizer.json", "<|user|>\n", func(c *model.Config) bool { return c.LongRope.On() && !c.TiedEmbedding }},
		{"phi4", "phi4/tokenizer.json", "<|user|>", func(c *model.Config) bool { return c.RotaryDim == 12 }},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fx := loadFixture(t, tc.fixture)
			want, err := tokenizer.Load(filepath.Join(fx.Dir, "..", tc.tokenizer))
			if err != nil {
				t.Fatal(err)
			}
			for _, file := range []struct {
				name  string
				dtype model.DType
			}{{"model-f32.gguf", model.F32}, {"model-q8_0.gguf", model.F32}, {"model-q8_0.gguf", model.Int8}} {
				t.Run(file.name+"/"+file.dtype.String(), func(t *testing.T) {
					dir := filepath.Join(t.TempDir(), "m")
					res, err := convert.Convert(filepath.Join(fx.Dir, file.name), dir, convert.Options{DType: file.dtype})
					if err != nil {
						t.Fatal(err)
					}
					if !tc.check(res.Config) {
						t.Errorf("config %+v", res.Config)
					}
					r, err := fx.Compare(dir, engine.Options{Backend: "cpu"})
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("max relative error %.3g, min cosine %.6f, greedy %d/%d", r.MaxRelErr, r.MinCosine, r.GreedySame, len(fx.Greedy))
					switch bar := ggufQ8Cosine[tc.fixture]; {
					case file.name == "model-f32.gguf" && (r.MaxRelErr > 1e-4 || r.GreedySame != len(fx.Greedy)):
						t.Errorf("f32: max relative error %.3g, greedy %d/%d", r.MaxRelErr, r.GreedySame, len(fx.Greedy))
					case file.name != "model-f32.gguf" && file.dtype == model.F32 && r.MinCosine < 0.998:
						t.Errorf("Q8_0 kept float32: min cosine %.5f < 0.998", r.MinCosine)
					case file.dtype == model.Int8 && r.MinCosine < bar:
						t.Errorf("int8 from Q8_0: min cosine %.5f < %v", r.MinCosine, bar)
					}
					f := modeltest.Open(t, dir)
					data, err := f.ReadTokenizer()
					if err != nil {
						t.Fatal(err)
					}
					got, err := tokenizer.FromBytes("gguf", data)
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
						if d := got.Decode(got.Encode(s)); d != want.Decode(want.Encode(s)) {
							t.Errorf("%q: GGUF tokenizer decodes to %q, tokenizer.json to %q", s, d, want.Decode(want.Encode(s)))
						}
					}
					if ct := f.Manifest().GetChat(); ct.GetUser().GetPrefix() != tc.user || len(ct.GetStopIds()) == 0 {
						t.Errorf("chat template %v", ct)
					}
				})
			}
		})
	}
}

// TestGGUFLlamaRows converts the F32 GGUF of the llama32 fixture and checks
// that every matrix equals the safetensors conversion's: Q and K rows are
// put back in Hugging Face's order. (gguf-py wrote it without rope_freqs,
// so its logits are compared in TestGGUFRopeFreqs.)
func TestGGUFLlamaRows(t *testing.T) {
	fx := loadFixture(t, "llama32")
	gdir, sdir := filepath.Join(t.TempDir(), "g"), filepath.Join(t.TempDir(), "s")
	if _, err := convert.Convert(filepath.Join(fx.Dir, "model-f32.gguf"), gdir, convert.Options{DType: model.F32}); err != nil {
		t.Fatal(err)
	}
	if err := fx.Convert(sdir, model.F32); err != nil {
		t.Fatal(err)
	}
	g := modeltest.Open(t, gdir)
	s := modeltest.Open(t, sdir)
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
	read := func(name string) []byte {
		data, err := os.ReadFile("../../testdata/hf/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	data := read("qwen2/model-q8_0.gguf")
	gemma, phi35, phi4 := read("gemma3/model-q8_0.gguf"), read("phi35/model-f32.gguf"), read("phi4/model-f32.gguf")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", data[:len(data)/2], "past the end of the file"},
		{"truncated SentencePiece", phi35[:len(phi35)-100], "past the end of the file"},
		{"architecture", bytes.Replace(data, []byte("qwen2"), []byte("mamba"), 1), `general.architecture "mamba" is not supported`},
		{"tensor type", ggufPatch(t, gemma, ggufTensorType(t, gemma, "blk.0.ffn_down.weight"), 16),
			`tensor "blk.0.ffn_down.weight": tensor type 16 is not supported`},
		{"tokenizer model", bytes.Replace(gemma, []byte("\x05\x00\x00\x00\x00\x00\x00\x00llama"), []byte("\x05\x00\x00\x00\x00\x00\x00\x00bogus"), 1),
			`tokenizer.ggml.model "bogus" is not supported`},
		{"odd rotary", ggufPatch(t, phi4, ggufValue(t, phi4, "phi3.rope.dimension_count"), 13),
			"phi3.rope.dimension_count 13: want an even number"},
		// attn_qkv's rows (its second dimension, just before its type) cut
		// to q's alone.
		{"fused rows", ggufPatch(t, phi4, ggufTensorType(t, phi4, "blk.0.attn_qkv.weight")-8, 64),
			`tensor "blk.0.attn_qkv.weight" has shape [64 64], wick's layers.0.wq needs 64 x 64 (rows 0-64 of 128)`},
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

// ggufValue returns the offset of metadata key's value in a GGUF file's
// data (after the key and its type).
func ggufValue(t *testing.T, data []byte, key string) int {
	t.Helper()
	enc := binary.LittleEndian.AppendUint64(nil, uint64(len(key)))
	i := bytes.Index(data, append(enc, key...))
	if i < 0 {
		t.Fatalf("no metadata key %q", key)
	}
	return i + len(enc) + len(key) + 4
}

// ggufTensorType returns the offset of a tensor's type in the tensor
// directory.
func ggufTensorType(t *testing.T, data []byte, name string) int {
	t.Helper()
	enc := binary.LittleEndian.AppendUint64(nil, uint64(len(name)))
	i := bytes.Index(data, append(enc, name...))
	if i < 0 {
		t.Fatalf("no tensor %q", name)
	}
	i += len(enc) + len(name)
	dims := int(binary.LittleEndian.Uint32(data[i:]))
	return i + 4 + 8*dims
}

// ggufPatch returns a copy of data with the uint32 at off set to v.
func ggufPatch(t *testing.T, data []byte, off int, v uint32) []byte {
	t.Helper()
	out := slices.Clone(data)
	binary.LittleEndian.PutUint32(out[off:], v)
	return out
}

// llama3RopeFreqs is what llama.cpp's convert_hf_to_gguf.py writes as
// rope_freqs.weight for Llama 3's rope_scaling: for each rotated pair's
// frequency f = theta^(-2i/dim), with wavelength w = 2*pi/f, the divisor 1
// when w < original/high, factor when w > original/low, and else
// 1/((1-s)/factor + s) with s = (original/w - low)/(high - low); stored as
// float32. Written from that script's formula, not from wick's.
func llama3RopeFreqs(theta float64, dim int, factor, low, high, original float64) []float32 {
	out := make([]float32, dim/2)
	for i := range out {
		f := float64(float32(1 / math.Pow(theta, float64(2*i)/float64(dim))))
		w := 2 * math.Pi / f
		switch {
		case w < original/high:
			out[i] = 1
		case w > original/low:
			out[i] = float32(factor)
		default:
			s := (original/w - low) / (high - low)
			out[i] = float32(1 / ((1-s)/factor + s))
		}
	}
	return out
}

// withGGUFTensor returns the GGUF file data with one more F32 tensor,
// appended to the tensor directory and the data. It finds where the
// directory starts from the tensors engine/gguf read: the directory's
// length is known, it ends within one alignment before the data, and it
// starts with the first tensor's name.
func withGGUFTensor(t *testing.T, data []byte, name string, vals []float32) []byte {
	t.Helper()
	f, err := gguf.Open(bytes.NewReader(data), int64(len(data)), "fixture")
	if err != nil {
		t.Fatal(err)
	}
	const align = 32
	if _, ok := f.Metadata["general.alignment"]; ok {
		t.Fatal("fixture sets general.alignment; this helper assumes 32")
	}
	dataStart := int64(len(data))
	var dirLen int64
	for _, tt := range f.Tensors {
		dataStart = min(dataStart, tt.Offset)
		dirLen += 8 + int64(len(tt.Name)) + 4 + 8*int64(len(tt.Dims)) + 4 + 8
	}
	first := binary.LittleEndian.AppendUint64(nil, uint64(len(f.Tensors[0].Name)))
	first = append(first, f.Tensors[0].Name...)
	dirStart := int64(-1)
	for end := dataStart; end > dataStart-align && end-dirLen >= 24; end-- {
		if bytes.HasPrefix(data[end-dirLen:], first) {
			dirStart = end - dirLen
			break
		}
	}
	if dirStart < 0 {
		t.Fatal("tensor directory not found")
	}
	pad := func(b []byte) []byte {
		for len(b)%align != 0 {
			b = append(b, 0)
		}
		return b
	}
	tensorData := pad(slices.Clone(data[dataStart:]))
	out := slices.Clone(data[:dirStart+dirLen])
	binary.LittleEndian.PutUint64(out[8:], uint64(len(f.Tensors)+1))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(name)))
	out = append(out, name...)
	out = binary.LittleEndian.AppendUint32(out, 1)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(vals)))
	out = binary.LittleEndian.AppendUint32(out, uint32(gguf.F32))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(tensorData)))
	out = pad(out)
	out = append(out, tensorData...)
	for _, v := range vals {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
	}
	return out
}

// TestGGUFRopeFreqs adds to the llama32 fixture's F32 GGUF the
// rope_freqs.weight that llama.cpp writes for its Llama 3 scaling (factor
// 32, low 1, high 4, original context 64, theta 500000, as its
// config.json says) and checks the conversion against transformers: f32
// logits within 1e-4 and the greedy tokens equal. Without the tensor the
// logits differ, so it is what carries the scaling. Bad rope_freqs are
// refused by name.
func TestGGUFRopeFreqs(t *testing.T) {
	fx := loadFixture(t, "llama32")
	data, err := os.ReadFile(filepath.Join(fx.Dir, "model-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	freqs := llama3RopeFreqs(500000, 16, 32, 1, 4, 64)
	for _, tc := range []struct {
		name string
		data []byte
		want string // "" means it matches transformers
	}{
		{"with rope_freqs", withGGUFTensor(t, data, "rope_freqs.weight", freqs), ""},
		{"without", data, "differs"},
		{"wrong length", withGGUFTensor(t, data, "rope_freqs.weight", freqs[:3]), "rope_freqs.weight is F32 [3], want F32 [8]"},
		{"zero factor", withGGUFTensor(t, data, "rope_freqs.weight", append([]float32{0}, freqs[1:]...)), "factor 0 is 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "m.gguf")
			if err := os.WriteFile(in, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "m")
			_, err := convert.Convert(in, dir, convert.Options{DType: model.F32})
			if tc.want != "differs" && tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, err := fx.Compare(dir, engine.Options{Backend: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("max relative error %.3g, greedy %d/%d", r.MaxRelErr, r.GreedySame, len(fx.Greedy))
			match := r.MaxRelErr <= 1e-4 && r.GreedySame == len(fx.Greedy)
			if match != (tc.want == "") {
				t.Errorf("max relative error %.3g, greedy %d/%d", r.MaxRelErr, r.GreedySame, len(fx.Greedy))
			}
		})
	}
}

// TestGGUFGemmaDefaults converts the gemma3 fixture's GGUF with keys
// llama.cpp's converter may leave out, and checks the values llama.cpp
// assumes instead: the local RoPE base 10000 (earlier Gemma 3 files), five
// sliding layers per global one, and 1/sqrt(head_dim) as the attention
// scale.
func TestGGUFGemmaDefaults(t *testing.T) {
	data, err := os.ReadFile("../../testdata/hf/gemma3/model-f32.gguf")
	if err != nil {
		t.Fatal(err)
	}
	// drop renames a metadata key to one of the same length that no
	// reader knows.
	drop := func(data []byte, key string) []byte {
		return bytes.Replace(data, []byte(key), []byte(key[:len(key)-3]+"zzz"), 1)
	}
	for _, tc := range []struct {
		name  string
		data  []byte
		check func(c *model.Config) bool
	}{
		{"freq_base_swa", drop(data, "gemma3.rope.freq_base_swa"), func(c *model.Config) bool { return c.RopeThetaLocal == 10000 }},
		{"sliding_window_pattern", drop(data, "gemma3.attention.sliding_window_pattern"), func(c *model.Config) bool {
			for i, l := range c.Layers {
				if (l.Kind == model.Local) != (i%6 < 5) {
					return false
				}
			}
			return true
		}},
		{"attention.scale", drop(data, "gemma3.attention.scale"), func(c *model.Config) bool { return c.Scale() == float32(1/math.Sqrt(16)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "m.gguf")
			if err := os.WriteFile(in, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := convert.Convert(in, filepath.Join(t.TempDir(), "m"), convert.Options{DType: model.F32})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(res.Config) {
				t.Errorf("config %+v", res.Config)
			}
		})
	}
}
