package engine

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/prefix"
	"github.com/wick-run/wick/engine/tokenizer"
	"google.golang.org/protobuf/proto"
)

// Options choose how a model is run.
type Options struct {
	// Backend is "cpu", "webgpu", or "" for webgpu where an adapter exists,
	// else cpu (with a notice through Notice).
	Backend string
	// Float32 runs an int8 model in the float32 mode: weights dequantised,
	// no activation or KV quantisation.
	Float32 bool
	// Context is the most positions one session holds; 0 means the model's
	// context_len, capped at DefaultContext.
	Context int
	// Notice receives one-line notices (a backend fallback, say); nil drops them.
	Notice func(string)
	// CacheBytes is the budget of the model's prefix cache, which all its
	// sessions share; 0 means DefaultCacheBytes, a negative value turns the
	// cache off.
	CacheBytes int64
}

// DefaultCacheBytes is the prefix cache budget when Options.CacheBytes is 0:
// thanks to MQA, windows and sharing it holds thousands of positions even
// of a large model, and it stays small beside the weights.
const DefaultCacheBytes = 64 << 20

// DefaultContext caps a session's KV cache when Options.Context is 0, so a
// model with a long context_len does not allocate it all up front.
const DefaultContext = 4096

// BackendFactory builds a backend for a loaded model. Backends that need cgo
// or a GPU register themselves from their own package (see Register), so
// that this package builds everywhere the CPU backend does.
//
// explicit is false when the caller asked for no backend in particular: a
// factory may then decline (with ErrPreferCPU) where the CPU backend is the
// better choice, such as a software GPU adapter.
type BackendFactory func(cfg *model.Config, w *model.Weights, explicit bool) (Backend, error)

// ErrPreferCPU is what a BackendFactory returns, wrapped with its reason,
// when it declines a backend choice left to it.
var ErrPreferCPU = errors.New("the cpu backend is the better choice here")

var (
	registryMu sync.Mutex
	registry   = map[string]BackendFactory{}
)

// Register makes a backend available under name. It is called from the init
// of a backend's package; importing the package enables it.
func Register(name string, f BackendFactory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[name] = f
}

// Backends lists the names usable in Options.Backend.
func Backends() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := []string{"cpu"}
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	return names
}

// Model is a loaded model: its config, tokenizer, chat template and backend.
type Model struct {
	Dir       string
	Name      string
	Config    *model.Config
	Tokenizer *tokenizer.Tokenizer
	Template  *chat.Template
	Backend   Backend
	// Cache holds KV of token prefixes for all sessions of the model (nil
	// when Options.CacheBytes turned it off). It is safe for concurrent use.
	Cache    *prefix.Cache
	context  int
	layout   *kv.Layout  // the KV layout of one session, for rewinds
	rings    bool        // some layer keeps only a window of positions (see Session.restored)
	identity kv.Identity // what saved conversations must match
}

// Load opens the model directory dir, verifies its files, and prepares the
// backend opts ask for: Check, LoadWeights, the backend, then Assemble.
func Load(dir string, opts Options) (*Model, error) {
	c, err := Check(dir)
	if err != nil {
		return nil, err
	}
	f := c.Format
	w, err := f.LoadWeights()
	if err != nil {
		return nil, err
	}
	cfg := f.Config()
	if opts.Float32 {
		cfg, w = model.ToF32(cfg, w)
	}
	b, err := newBackend(cfg, w, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	m, err := assemble(f, c.Tokenizer, c.Template, cfg, b, opts)
	if err != nil {
		b.Close()
		return nil, err
	}
	return m, nil
}

// Assemble makes a Model of the opened model f from a backend b that
// already holds its weights: what Load does once the weights are on the
// backend, and what a host uses that puts them there some other way (the
// wasm module has the browser stream them from its cache straight into GPU
// buffers). cfg is the config as b runs it: f.Config(), or its float32 form
// (model.ToF32) for the float32 mode of an int8 model; saved conversations
// are tied to it. Assemble reads the tokenizer through f (which checks its
// sha256) and builds the chat template, the sessions' KV layout, the
// identity saved conversations must match and the prefix cache; of opts it
// uses Context and CacheBytes. It closes nothing: on error the caller still
// owns b, and on success the Model does (Model.Close closes it).
func Assemble(f *format.Model, cfg *model.Config, b Backend, opts Options) (*Model, error) {
	if f == nil || cfg == nil || b == nil {
		return nil, errors.New("assemble model: an opened model, a config and a backend are required")
	}
	tok, tmpl, err := checkTokenizer(f)
	if err != nil {
		return nil, err
	}
	return assemble(f, tok, tmpl, cfg, b, opts)
}

// assemble is Assemble with the tokenizer and chat template already read
// and checked (Load has them from Check: reading the tokenizer again would
// hash and parse it twice).
func assemble(f *format.Model, tok *tokenizer.Tokenizer, tmpl *chat.Template, cfg *model.Config, b Backend, opts Options) (*Model, error) {
	dir := f.Dir()
	if base := f.Config(); cfg.Vocab != base.Vocab || cfg.ContextLen != base.ContextLen {
		return nil, fmt.Errorf("assemble model %s: the config as run (vocab %d, context_len %d) is not the manifest's (vocab %d, context_len %d)", dir, cfg.Vocab, cfg.ContextLen, base.Vocab, base.ContextLen)
	}
	var err error
	ctx := opts.Context
	if ctx == 0 {
		ctx = min(cfg.ContextLen, DefaultContext)
	}
	if ctx < 1 || ctx > cfg.ContextLen {
		return nil, fmt.Errorf("load model %s: context %d outside 1..%d (the model's context_len)", dir, ctx, cfg.ContextLen)
	}
	lay, err := kv.NewLayout(cfg, ctx)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	m := &Model{Dir: dir, Name: f.Manifest().GetName(), Config: cfg, Tokenizer: tok, Template: tmpl, Backend: b, context: ctx, layout: lay}
	for _, r := range lay.Regions {
		m.rings = m.rings || r.Ring
	}
	if m.identity, err = identify(f, cfg); err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	if opts.CacheBytes >= 0 {
		budget := opts.CacheBytes
		if budget == 0 {
			budget = DefaultCacheBytes
		}
		if m.Cache, err = prefix.New(prefix.Options{Budget: budget}); err != nil {
			return nil, fmt.Errorf("load model %s: %w", dir, err)
		}
	}
	return m, nil
}

// identify hashes what a saved conversation's KV depends on: the manifest
// (which names every shard by its sha256, so the weights) and the config as
// run (the int8 or float32 mode included).
func identify(f *format.Model, cfg *model.Config) (kv.Identity, error) {
	var id kv.Identity
	det := proto.MarshalOptions{Deterministic: true}
	man, err := det.Marshal(f.Manifest())
	if err != nil {
		return id, fmt.Errorf("hash manifest: %w", err)
	}
	c, err := det.Marshal(format.ConfigToProto(cfg))
	if err != nil {
		return id, fmt.Errorf("hash config: %w", err)
	}
	id.Model, id.Config = sha256.Sum256(man), sha256.Sum256(c)
	return id, nil
}

func newBackend(cfg *model.Config, w *model.Weights, opts Options) (Backend, error) {
	name := opts.Backend
	if name == "cpu" {
		return newCPU(cfg, w)
	}
	registryMu.Lock()
	gpu, ok := registry["webgpu"]
	if name != "" {
		gpu, ok = registry[name]
	}
	registryMu.Unlock()
	if !ok {
		if name != "" {
			return nil, fmt.Errorf("unknown backend %q (have %s)", name, strings.Join(Backends(), ", "))
		}
		return newCPU(cfg, w)
	}
	b, err := gpu(cfg, w, name != "")
	if err != nil && name == "" {
		if opts.Notice != nil && errors.Is(err, ErrPreferCPU) {
			opts.Notice(fmt.Sprintf("%v; using it (-backend webgpu uses the adapter anyway)", err))
		} else if opts.Notice != nil {
			opts.Notice(fmt.Sprintf("webgpu unavailable (%v); using the cpu backend", err))
		}
		return newCPU(cfg, w)
	}
	return b, err
}

// cpuBackend adapts engine/cpu to the Backend interface.
type cpuBackend struct{ *cpu.Model }

func newCPU(cfg *model.Config, w *model.Weights) (Backend, error) {
	m, err := cpu.New(cfg, w)
	if err != nil {
		return nil, err
	}
	return cpuBackend{m}, nil
}

func (b cpuBackend) NewSequence(context int) (Sequence, error) { return b.Model.NewSequence(context) }

// Close releases the backend.
func (m *Model) Close() error { return m.Backend.Close() }

// Context is the number of positions a session of m holds.
func (m *Model) Context() int { return m.context }
