package format

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// tinyConfig is a 3-layer model with every kind of layer: a global producer,
// a local producer (window 4) and a local consumer of it.
func tinyConfig(dtype model.DType, tied bool) *model.Config {
	return &model.Config{
		Vocab: 50, Hidden: 16, Heads: 2, KVHeads: 1, HeadDim: 8, FFNHidden: 32, ContextLen: 64,
		Layers: []model.Layer{
			{Kind: model.Global, KVSource: 0},
			{Kind: model.Local, Window: 4, KVSource: 1},
			{Kind: model.Local, Window: 4, KVSource: 1},
		},
		RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4, NormEps: 1e-6,
		NormOnePlus: true, QKNorm: true, PostAttnNorm: true, PostFFNNorm: true,
		Activation: model.GeGLUTanh, TiedEmbedding: tied, EmbedScale: 4,
		DType: dtype,
	}
}

// randomWeights fills every tensor of cfg with values from a fixed seed.
func randomWeights(cfg *model.Config, seed uint64) *model.Weights {
	r := rand.New(rand.NewPCG(seed, 7))
	f32 := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	w := model.NewWeights(cfg)
	for _, spec := range cfg.TensorSpecs() {
		mat, norm := w.Find(spec)
		if norm != nil {
			*norm = f32(spec.Cols)
			continue
		}
		mat.Rows, mat.Cols = spec.Rows, spec.Cols
		if cfg.DType == model.F32 {
			mat.F32 = f32(spec.Rows * spec.Cols)
			continue
		}
		mat.I8 = make([]int8, spec.Rows*spec.Cols)
		for i := range mat.I8 {
			mat.I8[i] = int8(r.IntN(255) - 127)
		}
		mat.Scale = f32(spec.Rows)
	}
	w.Tie(cfg)
	return w
}

var tinyChat = &manifestpb.ChatTemplate{
	BosId:     1,
	User:      &manifestpb.RoleFormat{Prefix: "<user>", Suffix: "</user>"},
	Assistant: &manifestpb.RoleFormat{Prefix: "<bot>", Suffix: "</bot>"},
	StopIds:   []int32{2},
}

const tinyTokenizer = `{"model": {"type": "BPE", "vocab": {}}}`

// writeTokenizer puts a stand-in tokenizer.json in its own directory, so
// tests see it copied rather than found in place.
func writeTokenizer(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "source-tokenizer.json")
	if err := os.WriteFile(path, []byte(tinyTokenizer), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeTiny writes the tiny model into dir and returns its config and weights.
func writeTiny(t testing.TB, dir string, dtype model.DType, tied bool, shardSize int64) (*model.Config, *model.Weights) {
	t.Helper()
	cfg := tinyConfig(dtype, tied)
	w := randomWeights(cfg, 1)
	if err := WriteModel(dir, "tiny", cfg, w, writeTokenizer(t), tinyChat, shardSize); err != nil {
		t.Fatal(err)
	}
	return cfg, w
}

// checkNoTemps fails if the writer left temporary files in dir.
func checkNoTemps(t *testing.T, dir string) {
	t.Helper()
	temps, err := filepath.Glob(filepath.Join(dir, tempPattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(temps) > 0 {
		t.Errorf("temporary files left in %s: %v", dir, temps)
	}
}

// checkErr fails unless err is non-nil and contains every one of wants.
func checkErr(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", wants)
	}
	t.Logf("error: %v", err) // shows the messages users see, with -v
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// dirFiles lists the names in dir.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
