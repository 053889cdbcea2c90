package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The modules under test are the files the server ships, web/wick.wasm
// (the chat module) and web/convert.wasm (the converter), built by `make
// wasm`. When one is missing (a bare `go test`), the tests build it into a
// temporary directory with the same command; TestShippedModulesAreCurrent
// checks that present files are what the sources build to.
var (
	root     = func() string { _, f, _, _ := runtime.Caller(0); return filepath.Join(filepath.Dir(f), "..", "..") }()
	shipped  = filepath.Join(root, "web", "wick.wasm")
	chatWasm = &wasmFile{pkg: "./wasm/module", shipped: shipped}
	convWasm = &wasmFile{pkg: "./wasm/convert", shipped: filepath.Join(root, "web", "convert.wasm")}
	rtOnce   sync.Once
	sharedRT *Runtime
	rtErr    error
	cacheDir string
)

// A wasmFile is one of the modules the server ships: the package it is
// built from and where `make wasm` puts it.
type wasmFile struct {
	pkg, shipped string

	builtOnce, loadOnce sync.Once
	built, loaded       []byte
	builtErr, loadErr   error
}

// build builds the module into a temporary file with the Makefile's
// command and returns its bytes.
func (w *wasmFile) build() ([]byte, error) {
	w.builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wick-wasm-")
		if err != nil {
			w.builtErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, filepath.Base(w.shipped))
		cmd := exec.Command("go", "build", "-trimpath", "-buildmode=c-shared", "-o", out, w.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			w.builtErr = fmt.Errorf("build %s: %v\n%s", w.pkg, err, msg)
			return
		}
		w.built, w.builtErr = os.ReadFile(out)
	})
	return w.built, w.builtErr
}

// bytes returns the shipped file, or a fresh build where it is missing.
func (w *wasmFile) bytes(t testing.TB) []byte {
	t.Helper()
	w.loadOnce.Do(func() {
		w.loaded, w.loadErr = os.ReadFile(w.shipped)
		if os.IsNotExist(w.loadErr) {
			w.loaded, w.loadErr = w.build()
		}
	})
	if w.loadErr != nil {
		t.Fatal(w.loadErr)
	}
	return w.loaded
}

// buildModule builds the chat module as `make wasm` does.
func buildModule() ([]byte, error) { return chatWasm.build() }

func module(t testing.TB) []byte { t.Helper(); return chatWasm.bytes(t) }

// sharedRuntime compiles the module once per test binary.
func sharedRuntime(t testing.TB) *Runtime {
	t.Helper()
	wasm := module(t)
	rtOnce.Do(func() {
		sharedRT, rtErr = New(context.Background(), wasm, Config{CacheDir: cacheDir, MemoryLimitPages: 8192, Stderr: os.Stderr})
	})
	if rtErr != nil {
		t.Fatal(rtErr)
	}
	return sharedRT
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wick-wazero-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = dir
	code := m.Run()
	if sharedRT != nil {
		sharedRT.Close(context.Background())
	}
	if convRT != nil {
		convRT.Close(context.Background())
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestShippedModulesAreCurrent(t *testing.T) {
	for _, w := range []*wasmFile{chatWasm, convWasm} {
		t.Run(filepath.Base(w.shipped), func(t *testing.T) {
			have, err := os.ReadFile(w.shipped)
			if os.IsNotExist(err) {
				t.Skipf("%s is not built (make wasm builds it); the other tests use a fresh build", w.shipped)
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := w.build()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(have, want) {
				t.Fatalf("%s (sha256 %s) is not what the sources build to (sha256 %s): run make wasm", w.shipped, sum(have), sum(want))
			}
		})
	}
}
