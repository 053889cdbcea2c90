// Package host runs wick's engine module (wasm/module, the file browsers
// run) under wazero: with the WASI it needs, real clocks and randomness, the
// model directory mounted read-only, a compilation cache, and the module's
// GPU imports implemented on a native engine/gpu device (lavapipe in CI).
// Without a GPU the module runs its own CPU backend. It is how the module
// is tested without a browser, and what `wick gen -wasm` uses.
//
// It also runs the converter module (wasm/convert, web/convert.wasm), the
// page's import of a model from disk: Runtime.Convert, with the input
// mounted read-only and the output directory writable.
//
// wasm/ABI.md describes the exports and imports this package drives.
package host

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wick-run/wick/engine/gpu"
)

// Status codes of the module's driving exports (wasm/ABI.md).
const (
	statusDone  = 0
	statusToken = 1
	statusWait  = 2
	// statusProgress: a chunk of the prompt was read, for turns that ask
	// (Turn.OnProgress).
	statusProgress = 3
	statusError    = -1
)

// ModelMount is where the model directory appears inside the module.
const ModelMount = "/model"

// Config configures a Runtime.
type Config struct {
	// CacheDir keeps compiled code between runs ("" compiles every time).
	CacheDir string
	// MemoryLimitPages caps each instance's memory in 64 KiB pages
	// (default 16384, 1 GiB). Memory is reserved up to it when an instance
	// starts, so that growing never copies the whole memory.
	MemoryLimitPages uint32
	// Stderr receives what the module prints (the Go runtime's fatal
	// errors); nil discards it.
	Stderr io.Writer
}

// Runtime is a compiled engine module, ready to instantiate.
type Runtime struct {
	rt       wazero.Runtime
	cache    wazero.CompilationCache
	compiled wazero.CompiledModule
	stderr   io.Writer
}

// New compiles the module (or takes it from cfg.CacheDir).
func New(ctx context.Context, wasm []byte, cfg Config) (*Runtime, error) {
	rc := wazero.NewRuntimeConfig().
		// A context deadline or cancellation stops a stuck module instead
		// of hanging its caller.
		WithCloseOnContextDone(true).
		WithMemoryCapacityFromMax(true)
	pages := cfg.MemoryLimitPages
	if pages == 0 {
		pages = 16384
	}
	rc = rc.WithMemoryLimitPages(pages)
	r := &Runtime{stderr: cfg.Stderr}
	if r.stderr == nil {
		r.stderr = io.Discard
	}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm host: compilation cache %s: %w", cfg.CacheDir, err)
		}
		r.cache = c
		rc = rc.WithCompilationCache(c)
	}
	r.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r.rt); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm host: wasi: %w", err)
	}
	if err := instantiateGPU(ctx, r.rt); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm host: gpu imports: %w", err)
	}
	compiled, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm host: compile the engine module: %w", err)
	}
	r.compiled = compiled
	return r, nil
}

// Close frees the runtime and every instance.
func (r *Runtime) Close(ctx context.Context) error {
	err := r.rt.Close(ctx)
	if r.cache != nil {
		r.cache.Close(ctx)
	}
	return err
}

// LoadOptions choose the model and how the module runs it.
type LoadOptions struct {
	Dir     string // the model directory, mounted read-only at ModelMount
	Backend string // "webgpu", "cpu", or "" for webgpu where a GPU exists
	Context int    // positions per session; 0: the model's, at most 4096
	Float32 bool   // the float32 mode of an int8 model (cpu backend)
	// Device is the GPU the module's imports use; nil opens the native
	// adapter unless Backend is "cpu". The instance closes it.
	Device gpu.Device
}

// Instance is one instantiated module with a model loaded.
type Instance struct {
	mod  api.Module
	st   *state
	Info LoadInfo
	// onProgress gets the output of each statusProgress of the call in
	// flight (a turn's Turn.OnProgress, a conversion's progress) and
	// says whether to cancel the call.
	onProgress func(out []byte) (cancel bool, err error)
}

// LoadInfo is what the module reports about a loaded model.
type LoadInfo struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	Vocab   int    `json:"vocab"`
	Context int    `json:"context"`
}

// Error is an error the module returned through its boundary: the module
// is intact and takes the next call.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// moduleConfig is how every module instance is set up: a reactor
// (_initialize, no main), the host's clocks and randomness, stdout and
// stderr to the runtime's stderr, and the files of fsc.
func (r *Runtime) moduleConfig(fsc wazero.FSConfig) wazero.ModuleConfig {
	return wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize").
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStdout(r.stderr).WithStderr(r.stderr).
		WithFSConfig(fsc)
}

// Instantiate starts a module instance with dir mounted, without loading a
// model (Load does both).
func (r *Runtime) Instantiate(ctx context.Context, dir string, dev gpu.Device) (*Instance, error) {
	fsc := wazero.NewFSConfig()
	if dir != "" {
		fsc = fsc.WithReadOnlyDirMount(dir, ModelMount)
	}
	mc := r.moduleConfig(fsc)
	st := &state{dev: dev, dir: dir}
	mod, err := r.rt.InstantiateModule(withState(ctx, st), r.compiled, mc)
	if err != nil {
		return nil, fmt.Errorf("wasm host: instantiate: %w", err)
	}
	return &Instance{mod: mod, st: st}, nil
}

// Load instantiates the module and loads the model o.Dir into it.
func (r *Runtime) Load(ctx context.Context, o LoadOptions) (*Instance, error) {
	dev := o.Device
	if dev == nil && o.Backend != "cpu" {
		d, err := gpu.Open(gpu.Options{})
		switch {
		case err == nil:
			dev = d
		case !errors.Is(err, gpu.ErrNoAdapter) || o.Backend == "webgpu":
			return nil, fmt.Errorf("wasm host: %w", err)
		}
	}
	inst, err := r.Instantiate(ctx, o.Dir, dev)
	if err != nil {
		if dev != nil {
			dev.Close()
		}
		return nil, err
	}
	if err := inst.LoadModel(ctx, ModelMount, o); err != nil {
		inst.Close(ctx)
		return nil, err
	}
	return inst, nil
}

// LoadModel loads the model at dir, a path inside the module (ModelMount
// for the mounted directory).
func (i *Instance) LoadModel(ctx context.Context, dir string, o LoadOptions) error {
	in, _ := json.Marshal(map[string]any{"dir": dir, "backend": o.Backend, "context": o.Context, "f32": o.Float32})
	out, err := i.run(ctx, nil, "wick_load", in)
	if err != nil {
		return fmt.Errorf("wasm load: %w", err)
	}
	if err := json.Unmarshal(out, &i.Info); err != nil {
		return fmt.Errorf("wasm load: result: %w", err)
	}
	return nil
}

// Close ends the instance and closes its GPU device.
func (i *Instance) Close(ctx context.Context) error {
	err := i.mod.Close(ctx)
	if i.st.dev != nil {
		i.st.dev.Close()
		i.st.dev = nil
	}
	return err
}
