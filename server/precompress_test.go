package server

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestPrecompress checks that Precompress writes siblings the server then
// serves instead of compressing, leaves good ones alone and replaces stale
// ones.
func TestPrecompress(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.wasm")
	data := bytes.Repeat([]byte("wick wasm module "), 4096)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		wrote, err := Precompress(path)
		if err != nil || wrote != want {
			t.Fatalf("call %d: wrote %v, %v; want %v", i+1, wrote, err, want)
		}
	}
	for _, c := range codings {
		packed, err := os.ReadFile(path + c.ext)
		if err != nil || !decompressesTo(packed, data, c.decompress) {
			t.Fatalf("%s%s does not decompress to the file: %v", path, c.ext, err)
		}
	}
	// A changed file makes the siblings stale: they are written again.
	data = append(data, "v2"...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := Precompress(path); err != nil || !wrote {
		t.Fatalf("after a change: wrote %v, %v; want the siblings written again", wrote, err)
	}
	if packed, _ := os.ReadFile(path + ".br"); !decompressesTo(packed, data, codings[0].decompress) {
		t.Fatal("the brotli sibling is stale")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
