package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/internal/modeltest"
)

const fixtureDir = "../../testdata/hf"

// copyFixture copies a fixture checkpoint (config, safetensors, tokenizer)
// into a temporary directory that a test may change.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json",
		"tokenizer_config.json", "generation_config.json"} {
		data, err := os.ReadFile(filepath.Join(fixtureDir, name, f))
		if errors.Is(err, os.ErrNotExist) && f != "config.json" && f != "model.safetensors" {
			continue // the checkpoint's tokenizer files are of one kind or the other
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// editConfig rewrites dir's config.json through edit.
func editConfig(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rawTensor is a tensor's safetensors entry and bytes.
type rawTensor struct {
	dtype string
	shape []int64
	data  []byte
}

// readTensors reads every tensor of the checkpoint in dir.
func readTensors(t *testing.T, dir string) map[string]rawTensor {
	t.Helper()
	ck, err := openCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := make(map[string]rawTensor)
	for name, st := range ck.tensors {
		b := make([]byte, st.size)
		if _, err := st.file.f.ReadAt(b, st.offset); err != nil {
			t.Fatal(err)
		}
		out[name] = rawTensor{st.dtype, st.shape, b}
	}
	return out
}

// writeSafetensors writes tensors as one safetensors file at path.
func writeSafetensors(t *testing.T, path string, tensors map[string]rawTensor) {
	t.Helper()
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data bytes.Buffer
	for _, n := range names {
		rt := tensors[n]
		header[n] = map[string]any{"dtype": rt.dtype, "shape": rt.shape, "data_offsets": []int{data.Len(), data.Len() + len(rt.data)}}
		data.Write(rt.data)
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(len(h)))
	out.Write(h)
	out.Write(data.Bytes())
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConvertErrors checks that bad checkpoints fail with an error naming
// what is wrong, and leave nothing in the output directory.
func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string
		change  func(t *testing.T, dir string)
		want    string
	}{
		{"unknown architecture", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["architectures"] = []string{"MistralForCausalLM"} })
		}, `unsupported architecture "MistralForCausalLM"`},
		{"vision gemma", "gemma3", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["architectures"] = []string{"Gemma3ForConditionalGeneration"} })
		}, `unsupported architecture "Gemma3ForConditionalGeneration"`},
		{"no config", "llama", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "config.json"))
		}, "config.json"},
		{"llama activation", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["hidden_act"] = "gelu" })
		}, `unsupported option "hidden_act" = "gelu"`},
		{"llama bias", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["attention_bias"] = true })
		}, `unsupported option "attention_bias" = true`},
		{"llama yarn", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) {
				m["rope_parameters"] = map[string]any{"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
			})
		}, `unsupported option rope_type "yarn"`},
		{"gemma attention softcap", "gemma3", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["attn_logit_softcapping"] = 50.0 })
		}, `unsupported option "attn_logit_softcapping" = 50`},
		{"gemma linear rope", "gemma3", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) {
				m["rope_parameters"].(map[string]any)["full_attention"] = map[string]any{"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
			})
		}, `unsupported option rope_type "linear"`},
		{"gemma layer type", "gemma3", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) {
				m["layer_types"] = []string{"sliding_attention", "chunked_attention", "full_attention", "sliding_attention"}
			})
		}, `layer 1 is "chunked_attention"`},
		{"bad number", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["hidden_size"] = "48" })
		}, `"hidden_size": want a number`},
		{"truncated safetensors", "llama", func(t *testing.T, dir string) {
			path := filepath.Join(dir, "model.safetensors")
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:len(data)-100], 0o644)
		}, "truncated"},
		{"truncated header", "llama", func(t *testing.T, dir string) {
			path := filepath.Join(dir, "model.safetensors")
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:50], 0o644)
		}, "truncated"},
		{"missing tensor", "llama", func(t *testing.T, dir string) {
			ts := readTensors(t, dir)
			delete(ts, "model.layers.1.mlp.up_proj.weight")
			writeSafetensors(t, filepath.Join(dir, "model.safetensors"), ts)
		}, `tensor "model.layers.1.mlp.up_proj.weight" is missing`},
		{"wrong shape", "llama", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["intermediate_size"] = 100 })
		}, `"model.layers.0.mlp.gate_proj.weight" has shape [96 48], the config needs [100 48]`},
		{"extra tensor", "llama", func(t *testing.T, dir string) {
			ts := readTensors(t, dir)
			ts["model.layers.0.self_attn.q_proj.bias"] = rawTensor{"F32", []int64{48}, make([]byte, 4*48)}
			writeSafetensors(t, filepath.Join(dir, "model.safetensors"), ts)
		}, "would drop: model.layers.0.self_attn.q_proj.bias"},
		{"integer tensor", "llama", func(t *testing.T, dir string) {
			ts := readTensors(t, dir)
			ts["model.norm.weight"] = rawTensor{"I32", []int64{48}, make([]byte, 4*48)}
			writeSafetensors(t, filepath.Join(dir, "model.safetensors"), ts)
		}, `"model.norm.weight" has dtype I32`},
		{"nan weight", "gemma3", func(t *testing.T, dir string) {
			ts := readTensors(t, dir)
			w := ts["model.layers.2.mlp.down_proj.weight"]
			binary.LittleEndian.PutUint32(w.data[4*50:], math.Float32bits(float32(math.NaN())))
			writeSafetensors(t, filepath.Join(dir, "model.safetensors"), ts)
		}, `"model.layers.2.mlp.down_proj.weight": value NaN at row 0, column 50`},
		{"tokenizer.json of an unsupported model type", "llama", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "tokenizer.model"))
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": {"type": "Unigram", "vocab": [["a", 0]]}}`), 0o644)
		}, `tokenizer.json: model type "Unigram" is not supported`},
		{"no tokenizer", "llama", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "tokenizer.model"))
		}, "no tokenizer.model or tokenizer.json"},
		{"chat template that does not parse", "llama32", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"eos_token": "<|eot_id|>", "chat_template": "{% for m in messages %}"}`), 0o644)
		}, "tokenizer_config.json: chat template"},
		{"rope type wick lacks", "phi35", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["rope_parameters"].(map[string]any)["rope_type"] = "yarn" })
		},
			`unsupported option rope_type "yarn"`},
		{"longrope factors for the wrong rotary width", "phi35", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) {
				rp := m["rope_parameters"].(map[string]any)
				rp["long_factor"] = append([]any{1.0}, rp["long_factor"].([]any)...)
			})
		}, "long_rope.long_factor has 9 entries, want one per rotated pair (8)"},
		{"stop token that is not special", "llama32", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"eos_token_id": 5}`), 0o644)
		}, "generation_config.json: eos_token_id: stop token 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := copyFixture(t, tc.fixture)
			tc.change(t, in)
			out := t.TempDir()
			_, err := Convert(in, out, Options{DType: model.Int8})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			t.Log(err)
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("a failed conversion left %d files in the output directory", len(left))
			}
		})
	}
}

// TestShardedCheckpoint splits a checkpoint over two files with an index,
// as large checkpoints come, and checks that it converts to the same
// tensors as the single file.
func TestShardedCheckpoint(t *testing.T) {
	single := copyFixture(t, "llama")
	sharded := copyFixture(t, "llama")
	os.Remove(filepath.Join(sharded, "model.safetensors"))
	ts := readTensors(t, single)
	parts := [2]map[string]rawTensor{{}, {}}
	weightMap := map[string]string{}
	files := [2]string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	for name, rt := range ts {
		i := 0
		if strings.Contains(name, "layers.2.") || strings.HasPrefix(name, "lm_head") {
			i = 1
		}
		parts[i][name] = rt
		weightMap[name] = files[i]
	}
	for i, f := range files {
		writeSafetensors(t, filepath.Join(sharded, f), parts[i])
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": weightMap})
	os.WriteFile(filepath.Join(sharded, "model.safetensors.index.json"), idx, 0o644)

	outs := [2]string{t.TempDir(), t.TempDir()}
	for i, in := range []string{single, sharded} {
		if _, err := Convert(in, outs[i], Options{DType: model.F32, Name: "llama"}); err != nil {
			t.Fatal(err)
		}
	}
	a := modeltest.Open(t, outs[0])
	b := modeltest.Open(t, outs[1])
	for _, spec := range a.Config().TensorSpecs() {
		x, err1 := a.ReadTensor(spec.Name)
		y, err2 := b.ReadTensor(spec.Name)
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Fatalf("tensor %s differs between the single-file and the sharded checkpoint (%v, %v)", spec.Name, err1, err2)
		}
	}
}

// TestShardSize checks that the shard size option reaches the writer.
func TestShardSize(t *testing.T) {
	out := t.TempDir()
	if _, err := Convert(copyFixture(t, "gemma3"), out, Options{DType: model.Int8, ShardSize: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	f := modeltest.Open(t, out)
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	shards := f.Manifest().GetShards()
	for _, s := range shards {
		if s.GetSize() > 16<<10 {
			t.Errorf("shard %s has %d bytes, above 16 KiB", s.GetFile(), s.GetSize())
		}
	}
	if len(shards) < 5 {
		t.Errorf("%d shards for a 150 KB model in 16 KiB shards", len(shards))
	}
}

func TestHalfFloats(t *testing.T) {
	for _, tc := range []struct {
		dtype string
		bits  uint16
		want  float32
	}{
		{"F16", 0x3c00, 1},
		{"F16", 0xc000, -2},
		{"F16", 0x3800, 0.5},
		{"F16", 0x7bff, 65504},
		{"F16", 0x0001, 1.0 / (1 << 24)},
		{"F16", 0x8200, -1.0 / (1 << 15)},
		{"F16", 0x7c00, float32(math.Inf(1))},
		{"F16", 0x8000, float32(math.Copysign(0, -1))},
		{"BF16", 0x3f80, 1},
		{"BF16", 0xc040, -3},
		{"BF16", 0x7f80, float32(math.Inf(1))},
	} {
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], tc.bits)
		var got [1]float32
		decode(got[:], b[:], tc.dtype)
		if math.Float32bits(got[0]) != math.Float32bits(tc.want) {
			t.Errorf("%s %#04x = %v, want %v", tc.dtype, tc.bits, got[0], tc.want)
		}
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], 0x7e00)
	var got [1]float32
	decode(got[:], b[:], "F16")
	if !math.IsNaN(float64(got[0])) {
		t.Errorf("F16 0x7e00 = %v, want NaN", got[0])
	}
}

// TestTemplateChat converts checkpoints with a tokenizer.json and a Jinja
// chat template, loads the result, and checks the compiled chat format end
// to end: bos, the stops from generation_config.json and the turn's closing
// token, the date frozen at conversion, and the rendering of a
// conversation against the ids Hugging Face gives for the template's text
// (testdata/templates/reference.json's "multi" conversation).
func TestTemplateChat(t *testing.T) {
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		fixture, template string
		stops             []string
		wantInSystem      string
	}{
		{"llama32", "llama3.jinja", []string{"<|end_of_text|>", "<|eot_id|>"}, "Today Date: 02 Dec 2026"},
		{"smollm2", "smollm2.jinja", []string{"<|im_end|>"}, ""},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m")
			res, err := Convert(filepath.Join(fixtureDir, tc.fixture), out, Options{DType: model.F32, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range res.ChatNotes {
				t.Logf("note: %s", n)
			}
			f := modeltest.Open(t, out)
			data, err := f.ReadTokenizer()
			if err != nil {
				t.Fatal(err)
			}
			tok, err := tokenizer.FromBytes("tokenizer.json", data)
			if err != nil {
				t.Fatal(err)
			}
			ct := f.Manifest().GetChat()
			var want []int32
			for _, s := range tc.stops {
				id, _ := tok.ID(s)
				want = append(want, id)
			}
			if got := ct.GetStopIds(); !sameSet(got, want) {
				t.Errorf("stop ids %v, want %v (%v)", got, want, tc.stops)
			}
			if !strings.Contains(ct.GetSystem().GetPrefix(), tc.wantInSystem) {
				t.Errorf("system prefix %q lacks %q", ct.GetSystem().GetPrefix(), tc.wantInSystem)
			}
			tm, err := chat.New(ct, tok)
			if err != nil {
				t.Fatal(err)
			}
			var ref struct {
				Templates map[string][]struct {
					Conversation        string  `json:"conversation"`
					AddGenerationPrompt bool    `json:"add_generation_prompt"`
					IDs                 []int32 `json:"ids"`
				} `json:"templates"`
			}
			raw, err := os.ReadFile("../../testdata/templates/reference.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &ref); err != nil {
				t.Fatal(err)
			}
			msgs := []chat.Message{
				{Role: chat.System, Content: "You are Captain Wren, a pirate who speaks in riddles."},
				{Role: chat.User, Content: "Where is the treasure?"},
				{Role: chat.Assistant, Content: "Under the old oak, where the crows sleep."},
				{Role: chat.User, Content: "And the map? Show me 3 steps."},
			}
			for _, r := range ref.Templates[tc.template] {
				if r.Conversation == "multi" && r.AddGenerationPrompt {
					if got := tm.Encode(msgs, true); !slices.Equal(got, r.IDs) {
						t.Errorf("Encode:\n got %v\nwant %v", got, r.IDs)
					}
					return
				}
			}
			t.Fatal("no reference rendering")
		})
	}
}

func sameSet(a, b []int32) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(x int32) bool { return !slices.Contains(b, x) })
}

// TestTokenizerFallback converts a checkpoint whose tokenizer.model wick
// cannot read (as Phi-3's Llama 2 style one) beside a tokenizer.json it
// can: the tokenizer.json is used.
func TestTokenizerFallback(t *testing.T) {
	in := copyFixture(t, "phi4")
	if err := os.WriteFile(filepath.Join(in, "tokenizer.model"), []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Convert(in, filepath.Join(t.TempDir(), "m"), Options{DType: model.F32})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.Tokenizer) != "tokenizer.json" {
		t.Errorf("tokenizer %s, want the tokenizer.json", res.Tokenizer)
	}
}

// TestLongRopeForms converts the phi35 fixture's LongRoPE from the forms
// configs state it in: transformers 5's rope_parameters, transformers 4's
// rope_scaling with type "longrope" or the older "su" and
// original_max_position_embeddings at the top level, and with an explicit
// attention_factor, which replaces sqrt(1 + ln(512/64)/ln(64)).
func TestLongRopeForms(t *testing.T) {
	legacy := func(typ string) func(m map[string]any) {
		return func(m map[string]any) {
			rp := m["rope_parameters"].(map[string]any)
			delete(m, "rope_parameters")
			m["rope_theta"] = rp["rope_theta"]
			m["rope_scaling"] = map[string]any{"type": typ, "short_factor": rp["short_factor"], "long_factor": rp["long_factor"]}
		}
	}
	want := model.LongRope{
		ShortFactor:     []float64{1, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35},
		LongFactor:      []float64{1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5},
		OriginalContext: 64, AttnFactor: math.Sqrt(1.5),
	}
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
		attn float64
	}{
		{"rope_parameters", func(m map[string]any) {}, want.AttnFactor},
		{"rope_scaling longrope", legacy("longrope"), want.AttnFactor},
		{"rope_scaling su", legacy("su"), want.AttnFactor},
		{"attention_factor", func(m map[string]any) { m["rope_parameters"].(map[string]any)["attention_factor"] = 2.0 }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := copyFixture(t, "phi35")
			editConfig(t, in, tc.edit)
			out := t.TempDir()
			if _, err := Convert(in, out, Options{DType: model.F32}); err != nil {
				t.Fatal(err)
			}
			f := modeltest.Open(t, out)
			w := want
			w.AttnFactor = tc.attn
			got := f.Config().LongRope
			if math.Abs(got.AttnFactor-w.AttnFactor) > 1e-15 {
				t.Errorf("attention factor %v, want %v", got.AttnFactor, w.AttnFactor)
			}
			got.AttnFactor = w.AttnFactor
			if !reflect.DeepEqual(got, w) {
				t.Errorf("long rope %+v, want %+v", got, w)
			}
			if f.Manifest().FormatVersion != 3 {
				t.Errorf("format_version %d, want 3", f.Manifest().FormatVersion)
			}
		})
	}
}
