// Package modeltest opens and loads model directories for wick's
// tests, failing the test where that goes wrong. It imports package
// testing, so only tests may import it: internal/testmodel, which package
// bench links into binaries, must not grow these helpers.
package modeltest

import (
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
