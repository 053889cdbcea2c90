// Package modeltest opens, loads and copies model directories for wick's
// tests, failing the test where that goes wrong. It imports package
// testing, so only tests may import it: internal/testmodel, which package
// bench links into binaries, must not grow these helpers.
package modeltest

import (
	"os"
	"testing"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
)

// Open opens the model directory dir (its manifest, checked), or fails t.
// format's errors name the directory.
func Open(t testing.TB, dir string) *format.Model {
	t.Helper()
	f, err := format.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Load opens the model directory dir and reads its weights, or fails t.
// The config is f.Config().
func Load(t testing.TB, dir string) (f *format.Model, w *model.Weights) {
	t.Helper()
	f = Open(t, dir)
	w, err := f.LoadWeights()
	if err != nil {
		t.Fatal(err)
	}
	return f, w
}

// Copy copies the files of the model directory src into dst, creating it
// where needed, so a test can edit, break or add files without touching
// testdata/.
func Copy(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy model %s to %s: %v", src, dst, err)
	}
}
