//go:build wasip1

package main

import (
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/engine/webgpu"
)

// loadOptions is wick_load's input (JSON).
type loadOptions struct {
	Dir     string `json:"dir"`     // the model directory as the module sees it (the host's mount)
	Backend string `json:"backend"` // "webgpu", "cpu", or "" for webgpu where the host has a GPU
	Context int    `json:"context"` // positions per session; 0: the model's, at most engine.DefaultContext
	Float32 bool   `json:"f32"`     // run an int8 model in the float32 mode (cpu backend only)
}

// gpuDev is the host's GPU as the module reaches it, once a load found one.
var gpuDev *gpu.Imported

// loaded is a model ready for sessions.
type loaded struct {
	f       *format.Model
	cfg     *model.Config
	tok     *tokenizer.Tokenizer
	tmpl    *chat.Template
	name    string // backend, for the host's notices
	context int
	lay     *kv.Layout
	newSeq  func(context int) (engine.Sequence, error)
	close   func()
}

// loadInfo is wick_load's output.
type loadInfo struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	Vocab   int    `json:"vocab"`
	Context int    `json:"context"`
}

// load opens the model at o.Dir: the manifest and tokenizer always, the
// weights only on the cpu backend. On webgpu the host streams them into the
// GPU buffers the module makes.
func load(o loadOptions) (*loaded, error) {
	if o.Dir == "" {
		return nil, errors.New("load: no model directory (field \"dir\")")
	}
	f, err := format.Open(o.Dir)
	if err != nil {
		return nil, err
	}
	tokData, err := f.ReadTokenizer()
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromBytes(f.Manifest().GetTokenizer().GetFile(), tokData)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
	}
	tmpl, err := chat.New(f.Manifest().GetChat(), tok)
	if err != nil {
		return nil, fmt.Errorf("load model %s: chat template: %w", o.Dir, err)
	}
	cfg := f.Config()
	ctx := o.Context
	if ctx == 0 {
		ctx = min(cfg.ContextLen, engine.DefaultContext)
	}
	if ctx < 1 || ctx > cfg.ContextLen {
		return nil, fmt.Errorf("load model %s: context %d outside 1..%d (the model's context_len)", o.Dir, ctx, cfg.ContextLen)
	}
	ld := &loaded{f: f, cfg: cfg, tok: tok, tmpl: tmpl, context: ctx}
	switch o.Backend {
	case "", "webgpu":
		if o.Float32 {
			if o.Backend == "webgpu" {
				return nil, errors.New("load: the float32 mode of an int8 model needs the cpu backend in the module")
			}
			break
		}
		dev, err := gpu.OpenImported(waitHost)
		if errors.Is(err, gpu.ErrNoAdapter) && o.Backend == "" {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
		}
		gpuDev = dev
		if err := ld.onGPU(dev); err != nil {
			return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
		}
	case "cpu":
	default:
		return nil, fmt.Errorf("load: unknown backend %q (want webgpu or cpu)", o.Backend)
	}
	if ld.newSeq == nil {
		if err := ld.onCPU(o.Float32); err != nil {
			return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
		}
	}
	if ld.lay, err = kv.NewLayout(ld.cfg, ctx); err != nil {
		ld.close()
		return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
	}
	return ld, nil
}

func (ld *loaded) onCPU(float32Mode bool) error {
	w, err := ld.f.LoadWeights()
	if err != nil {
		return err
	}
	if float32Mode {
		ld.cfg, w = model.ToF32(ld.cfg, w)
	}
	m, err := cpu.New(ld.cfg, w)
	if err != nil {
		return err
	}
	ld.name = m.Name()
	ld.newSeq = func(n int) (engine.Sequence, error) { return m.NewSequence(n) }
	ld.close = func() {}
	return nil
}

func (ld *loaded) onGPU(dev *gpu.Imported) error {
	sd := &streamDevice{Imported: dev, f: ld.f, cfg: ld.cfg, loading: true}
	w, err := sd.placeholders()
	if err != nil {
		return err
	}
	m, err := webgpu.New(sd, ld.cfg, w, webgpu.Options{})
	sd.loading = false
	if err != nil {
		return err
	}
	if err := sd.check(); err != nil {
		m.Close()
		return err
	}
	// The fills must land before the first step runs.
	if err := dev.Poll(true); err != nil {
		m.Close()
		return err
	}
	ld.name = m.Name()
	ld.newSeq = func(n int) (engine.Sequence, error) { return m.NewSequence(n) }
	ld.close = func() { m.Close(); dev.Close() }
	return nil
}
