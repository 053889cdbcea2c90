package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/modeltest"
	"github.com/wick-run/wick/internal/testmodel"
)

const testTokenizer = "../../testdata/tokenizer/tokenizer.model"

// writeExport writes an export directory for cfg and w the way the trainer
// does (int8 values, ".scale" rows, norms as f32, one tensor file), with the
// config passed through edit as JSON first.
func writeExport(t *testing.T, cfg *model.Config, w *model.Weights, edit func(map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(format.ConfigToProto(cfg))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	var data []byte
	var entries []tensorEntry
	put := func(name, dtype string, b []byte, shape ...int) {
		entries = append(entries, tensorEntry{Name: name, DType: dtype, Shape: shape, File: "tensors-0.bin", Offset: int64(len(data))})
		data = append(data, b...)
	}
	f32 := func(v []float32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	for _, s := range cfg.TensorSpecs() {
		mat, norm := w.Find(s)
		if norm != nil {
			put(s.Name, "f32", f32(*norm), s.Cols)
			continue
		}
		b := make([]byte, len(mat.I8))
		for i, v := range mat.I8 {
			b[i] = byte(v)
		}
		put(s.Name, "int8", b, s.Rows, s.Cols)
		put(s.Name+".scale", "f32", f32(mat.Scale), s.Rows)
	}
	doc, err := json.Marshal(map[string]any{"name": "test", "config": c, "tensors": entries})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"export.json": doc, "tensors-0.bin": data} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestExportRoundTrip exports a random CAI-shaped model and checks that
// wick loads it with every weight unchanged.
func TestExportRoundTrip(t *testing.T) {
	cfg := testmodel.CAIShaped(384, model.Int8)
	w := testmodel.Random(cfg, 7)
	out := filepath.Join(t.TempDir(), "m")
	if err := export(writeExport(t, cfg, w, nil), testTokenizer, out, 0); err != nil {
		t.Fatal(err)
	}
	f, got := modeltest.Load(t, out)
	if _, err := cpu.New(f.Config(), got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Layers[3].WGate.I8, w.Layers[3].WGate.I8) || got.Embed.Scale[5] != w.Embed.Scale[5] {
		t.Errorf("weights changed on the way through the export")
	}
}

// TestExportRefusesConfig checks that configs wick cannot run are refused
// before anything is written.
func TestExportRefusesConfig(t *testing.T) {
	cfg := testmodel.CAIShaped(384, model.Int8)
	w := testmodel.Random(cfg, 7)
	layer := func(i int, k string, v any) func(map[string]any) {
		return func(c map[string]any) { c["layers"].([]any)[i].(map[string]any)[k] = v }
	}
	// consumer makes layer i read src's KV, saying so as version 2 requires.
	consumer := func(i, src int) func(map[string]any) {
		return func(c map[string]any) {
			layer(i, "kv_source", src)(c)
			layer(i, "kv_role", "KV_ROLE_CONSUMER")(c)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"kv source is a consumer", consumer(2, 1), "itself a consumer"},
		{"kv source is later", consumer(2, 4), "only read its own KV or an earlier"},
		{"producer naming another layer", layer(2, "kv_source", 1), "layers[2] is a KV_ROLE_PRODUCER"},
		{"kv role omitted", func(c map[string]any) { delete(c["layers"].([]any)[3].(map[string]any), "kv_role") }, "layers[3].kv_role is KV_ROLE_UNSPECIFIED"},
		{"local without window", layer(0, "window", 0), "window 0"},
		{"shared across kinds", consumer(5, 0), "of another kind"},
		{"heads not a multiple", func(c map[string]any) { c["kv_heads"] = 3 }, "not a multiple of kv_heads"},
		{"odd head_dim", func(c map[string]any) { c["head_dim"] = 15 }, "odd"},
		{"unknown activation", func(c map[string]any) { c["activation"] = "ACTIVATION_UNSPECIFIED" }, "activation"},
		{"unknown field", func(c map[string]any) { c["sliding"] = true }, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m")
			err := export(writeExport(t, cfg, w, tc.edit), testTokenizer, out, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("export = %v, want an error containing %q", err, tc.want)
			}
			if _, statErr := os.Stat(out); !os.IsNotExist(statErr) {
				t.Errorf("refused export left %s behind", out)
			}
		})
	}
}

// TestExportRefusesTensors checks shape, dtype and vocabulary mismatches.
func TestExportRefusesTensors(t *testing.T) {
	cfg := testmodel.CAIShaped(384, model.Int8)
	w := testmodel.Random(cfg, 7)
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"hidden changed", func(c map[string]any) { c["hidden"] = 68 }, "the config needs"},
		{"vocab differs from tokenizer", func(c map[string]any) { c["vocab"] = 380 }, "the config needs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := export(writeExport(t, cfg, w, tc.edit), testTokenizer, filepath.Join(t.TempDir(), "m"), 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("export = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
