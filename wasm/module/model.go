//go:build wasip1

package main

import (
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/webgpu"
)

// loadOptions is wick_load's input (JSON).
type loadOptions struct {
	Dir     string `json:"dir"`     // the model directory as the module sees it (the host's mount)
	Backend string `json:"backend"` // "webgpu", "cpu", or "" for webgpu where the host has a GPU
	Context int    `json:"context"` // positions per session; 0: the model's, at most engine.DefaultContext
	Float32 bool   `json:"f32"`     // run an int8 model in the float32 mode (cpu backend only)
	// CacheBytes is the prefix cache's budget in the module's memory: 0
	// for engine.DefaultCacheBytes, negative for none (see engine.Options).
	CacheBytes int64 `json:"cache_bytes"`
	// Chunk is the most tokens one GPU step runs (webgpu.Options.Chunk):
	// 0 for webgpu.DefaultChunk; benchmarks compare step lengths with it.
	Chunk int `json:"chunk"`
	// FlashFirst plans prefill attention's first variant rather than its
	// register one, the default (webgpu.Options.FlashFirst), FlashTile the
	// register one's keys per tile (FlashTile; 0 its default): benchmarks
	// compare them with these.
	FlashFirst bool `json:"flash_first"`
	FlashTile  int  `json:"flash_tile"`
	// PrefillTile is the prefill product's tile (webgpu.Options.Tile: 0
	// its default) and PrefillSplit splits its products of few rows
	// (Options.Split = webgpu.SplitPasses): benchmarks profile the page's
	// prefill with each.
	PrefillTile  int  `json:"prefill_tile"`
	PrefillSplit bool `json:"prefill_split"`
}

// gpuDev is the host's GPU as the module reaches it, once a load found one.
var gpuDev *gpu.Imported

// loadInfo is wick_load's output.
type loadInfo struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	Vocab   int    `json:"vocab"`
	Context int    `json:"context"`
}

// load opens the model at o.Dir: the manifest and tokenizer always, the
// weights only on the cpu backend (engine.Load). On webgpu the host streams
// them into the GPU buffers the module makes, and engine.Assemble makes the
// model around that backend.
func load(o loadOptions) (*engine.Model, error) {
	if o.Dir == "" {
		return nil, errors.New("load: no model directory (field \"dir\")")
	}
	opts := engine.Options{Backend: "cpu", Context: o.Context, Float32: o.Float32, CacheBytes: o.CacheBytes}
	switch o.Backend {
	case "", "webgpu":
		if o.Float32 {
			if o.Backend == "webgpu" {
				return nil, errors.New("load: the float32 mode of an int8 model needs the cpu backend in the module")
			}
			break
		}
		f, err := format.Open(o.Dir)
		if err != nil {
			return nil, err
		}
		dev, err := gpu.OpenImported(waitHost)
		if errors.Is(err, gpu.ErrNoAdapter) && o.Backend == "" {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("load model %s: %w", o.Dir, err)
		}
		wo := webgpu.Options{Chunk: o.Chunk, FlashFirst: o.FlashFirst, FlashTile: o.FlashTile, Tile: o.PrefillTile}
		if o.PrefillSplit {
			wo.Split = webgpu.SplitPasses
		}
		return loadOnGPU(f, dev, opts, wo)
	case "cpu":
	default:
		return nil, fmt.Errorf("load: unknown backend %q (want webgpu or cpu)", o.Backend)
	}
	return engine.Load(o.Dir, opts)
}

// loadOnGPU makes the webgpu backend on the host's device, its weights
// streamed by the host (see streamDevice), planned with wo (steps of up to
// wo.Chunk tokens, 0: webgpu.DefaultChunk), and the model around it.
func loadOnGPU(f *format.Model, dev *gpu.Imported, opts engine.Options, wo webgpu.Options) (*engine.Model, error) {
	// The device must take deliveries (wick_mapped) while the load runs;
	// the model loaded before keeps its own until this one replaces it.
	prev := gpuDev
	gpuDev = dev
	b, err := gpuBackend(f, dev, wo)
	if err == nil {
		var m *engine.Model
		if m, err = engine.Assemble(f, f.Config(), b, opts); err == nil {
			return m, nil
		}
		b.Close()
	}
	dev.Close()
	gpuDev = prev
	return nil, fmt.Errorf("load model %s: %w", f.Dir(), err)
}

func gpuBackend(f *format.Model, dev *gpu.Imported, wo webgpu.Options) (engine.Backend, error) {
	sd := &streamDevice{Imported: dev, f: f, cfg: f.Config(), loading: true}
	w, err := sd.placeholders()
	if err != nil {
		return nil, err
	}
	m, err := webgpu.New(sd, sd.cfg, w, wo)
	sd.loading = false
	if err != nil {
		return nil, err
	}
	if err := sd.check(); err != nil {
		m.Close()
		return nil, err
	}
	// The fills must land before the first step runs.
	if err := dev.Poll(true); err != nil {
		m.Close()
		return nil, err
	}
	return gpuModel{m, dev}, nil
}

// gpuModel adapts *webgpu.Model to engine.Backend; its sequences are
// engine.GreedyDecoders, so greedy replies take the argmax on the GPU.
type gpuModel struct {
	*webgpu.Model
	dev *gpu.Imported
}

func (b gpuModel) NewSequence(n int) (engine.Sequence, error) { return b.Model.NewSequence(n) }

func (b gpuModel) Close() error {
	err := b.Model.Close()
	b.dev.Close()
	return err
}
