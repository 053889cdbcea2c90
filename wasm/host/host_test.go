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

// The module under test is the file the server ships, web/wick.wasm, built
// by `make wasm`. When it is missing (a bare `go test`), the tests build it
// into a temporary directory with the same command; TestShippedModuleIsCurrent
// checks that a present web/wick.wasm is what the sources build to.
var (
	root       = func() string { _, f, _, _ := runtime.Caller(0); return filepath.Join(filepath.Dir(f), "..", "..") }()
	shipped    = filepath.Join(root, "web", "wick.wasm")
	moduleOnce sync.Once
	moduleWasm []byte
	moduleErr  error
	builtOnce  sync.Once
	builtWasm  []byte
	builtErr   error
	rtOnce     sync.Once
	sharedRT   *Runtime
	rtErr      error
	cacheDir   string
)

// buildModule builds wasm/module into a temporary file with the Makefile's
// command and returns its bytes.
func buildModule() ([]byte, error) {
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wick-wasm-")
		if err != nil {
			builtErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "wick.wasm")
		cmd := exec.Command("go", "build", "-trimpath", "-buildmode=c-shared", "-o", out, "./wasm/module")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			builtErr = fmt.Errorf("build the module: %v\n%s", err, msg)
			return
		}
		builtWasm, builtErr = os.ReadFile(out)
	})
	return builtWasm, builtErr
}

func module(t testing.TB) []byte {
	t.Helper()
	moduleOnce.Do(func() {
		moduleWasm, moduleErr = os.ReadFile(shipped)
		if os.IsNotExist(moduleErr) {
			moduleWasm, moduleErr = buildModule()
		}
	})
	if moduleErr != nil {
		t.Fatal(moduleErr)
	}
	return moduleWasm
}

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
	os.RemoveAll(dir)
	os.Exit(code)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestShippedModuleIsCurrent(t *testing.T) {
	have, err := os.ReadFile(shipped)
	if os.IsNotExist(err) {
		t.Skipf("%s is not built (make wasm builds it); the other tests use a fresh build", shipped)
	}
	if err != nil {
		t.Fatal(err)
	}
	want, err := buildModule()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s (sha256 %s) is not what the sources build to (sha256 %s): run make wasm", shipped, sum(have), sum(want))
	}
}
