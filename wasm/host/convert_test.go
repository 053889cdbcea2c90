package host

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/badimport"
)

var (
	convRTOnce sync.Once
	convRT     *Runtime
	convRTErr  error
)

// converterRuntime compiles the converter module once per test binary.
func converterRuntime(t testing.TB) *Runtime {
	t.Helper()
	wasm := convWasm.bytes(t)
	convRTOnce.Do(func() {
		convRT, convRTErr = New(context.Background(), wasm, Config{CacheDir: cacheDir, MemoryLimitPages: 4096, Stderr: os.Stderr})
	})
	if convRTErr != nil {
		t.Fatal(convRTErr)
	}
	return convRT
}

// hfDir holds the checkpoints of every family wick converts.
var hfDir = filepath.Join(root, "testdata", "hf")

// TestConvertModuleMatchesNative converts every family's fixture folder
// and Q8_0 GGUF file with the converter module, as the page's import does,
// and with the native converter (`wick convert`): the model directories
// must be the same bytes (manifest, shards, tokenizer), and progress must
// reach every tensor.
func TestConvertModuleMatchesNative(t *testing.T) {
	r := converterRuntime(t)
	ents, err := os.ReadDir(hfDir)
	if err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(hfDir, e.Name(), "config.json")); err == nil {
			inputs = append(inputs, e.Name())
		}
	}
	ggufs, _ := filepath.Glob(filepath.Join(hfDir, "*", "model-q8_0.gguf"))
	for _, g := range ggufs {
		rel, _ := filepath.Rel(hfDir, g)
		inputs = append(inputs, rel)
	}
	now := time.Date(2026, 7, 4, 12, 0, 0, 0, time.UTC)
	for _, in := range inputs {
		t.Run(in, func(t *testing.T) {
			path := filepath.Join(hfDir, in)
			want := t.TempDir()
			if _, err := convert.Convert(path, want, convert.Options{DType: model.Int8, Name: "m", Now: now, ShardSize: 256 << 10}); err != nil {
				t.Fatal(err)
			}
			got := filepath.Join(t.TempDir(), "m")
			var last convert.Progress
			res, err := r.Convert(testCtx(t), ConvertOptions{In: path, Out: got, Name: "m", Now: now, ShardSize: 256 << 10,
				OnProgress: func(p convert.Progress) bool { last = p; return true }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Name != "m" || res.Arch == "" {
				t.Errorf("result %+v, want name m and the architecture", res)
			}
			if last.Tensors != last.TotalTensors || last.Bytes != last.TotalBytes || last.TotalTensors == 0 {
				t.Errorf("last progress %+v, want every tensor and byte", last)
			}
			sameDirs(t, want, got)
		})
	}
}

// sameDirs fails unless directories a and b hold the same files, byte for byte.
func sameDirs(t *testing.T, a, b string) {
	t.Helper()
	read := func(dir string) map[string][]byte {
		files := map[string][]byte{}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = data
		}
		return files
	}
	fa, fb := read(a), read(b)
	if len(fa) != len(fb) {
		t.Errorf("native wrote %d files, the module %d", len(fa), len(fb))
	}
	for name, da := range fa {
		db, ok := fb[name]
		switch {
		case !ok:
			t.Errorf("the module did not write %s", name)
		case !bytes.Equal(da, db):
			t.Errorf("%s differs: native sha256 %s, module %s", name, sum(da), sum(db))
		}
	}
}

// TestConvertModuleRefuses checks that the module names what is wrong
// with a bad checkpoint and leaves nothing in the output directory, and
// that a cancelled conversion leaves nothing either.
func TestConvertModuleRefuses(t *testing.T) {
	r := converterRuntime(t)
	for _, tc := range badimport.Checkpoints(t, hfDir) {
		t.Run(tc.Name, func(t *testing.T) {
			out := t.TempDir()
			_, err := r.Convert(testCtx(t), ConvertOptions{In: tc.Path, Out: out})
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.Want)) {
				t.Fatalf("error %v, want one containing %q", err, tc.Want)
			}
			t.Log(err)
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("a refused conversion left %d files", len(left))
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		out := t.TempDir()
		reports := 0
		_, err := r.Convert(testCtx(t), ConvertOptions{In: filepath.Join(hfDir, "qwen2"), Out: out,
			OnProgress: func(convert.Progress) bool { reports++; return reports < 3 }})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("cancelled")) {
			t.Fatalf("error %v, want cancelled", err)
		}
		if left, _ := os.ReadDir(out); len(left) != 0 {
			t.Errorf("a cancelled conversion left %d files", len(left))
		}
	})
}
