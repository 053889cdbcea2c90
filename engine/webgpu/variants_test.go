package webgpu_test

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/bench"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/engine/webgpu"
	"github.com/wick-run/wick/internal/gpurecord"
	"github.com/wick-run/wick/internal/modeltest"
	"github.com/wick-run/wick/internal/testmodel"
	"github.com/wick-run/wick/shaders"
)

// deviceProfiles are the limits a model meets on the devices wick runs on.
var deviceProfiles = []struct {
	name string
	lim  gpu.Limits
	tier bool // offers packed dot products and subgroups (Dawn, Chrome): the dot4+subgroups kernels
}{
	// WebGPU's defaults: what wgpu-native and wick serve ask for, and all
	// SwiftShader (Chromium's CPU adapter) gives.
	{"defaults/swiftshader", gpu.Limits{MaxStorageBufferBindingSize: 128 << 20, MaxBufferSize: 256 << 20}, false},
	// Mesa 25 lavapipe under Dawn, where the page asks for the adapter's
	// maxima.
	{"lavapipe", gpu.Limits{MaxStorageBufferBindingSize: 128 << 20, MaxBufferSize: 1<<32 - 4}, false},
	// The H200: what wick bench asks for, and 2 GiB bindings.
	{"h200-1g", gpu.Limits{MaxStorageBufferBindingSize: 1 << 30, MaxBufferSize: 1 << 30}, false},
	{"h200-2g", gpu.Limits{MaxStorageBufferBindingSize: 2 << 30, MaxBufferSize: 4 << 30}, false},
	// Dawn with the kernels' features, on lavapipe and on the H200.
	{"lavapipe/dawn-tier", gpu.Limits{MaxStorageBufferBindingSize: 128 << 20, MaxBufferSize: 1<<32 - 4}, true},
	{"h200-2g/dawn-tier", gpu.Limits{MaxStorageBufferBindingSize: 2 << 30, MaxBufferSize: 4 << 30}, true},
}

// plannedModel is a model whose kernels are planned: a directory or a
// config with zero weights.
type plannedModel struct {
	name  string
	bench bool // wick bench runs it, with any of its GEMV variants
	load  func(t *testing.T) (*model.Config, *model.Weights)
}

func plannedModels() []plannedModel {
	var ms []plannedModel
	for _, dir := range []string{"../../testdata/cai-tiny", "../../testdata/plain-tiny", "../../models/wick-cai-21m"} {
		ms = append(ms, plannedModel{dir, !strings.Contains(dir, "plain"), func(t *testing.T) (*model.Config, *model.Weights) {
			f, w := modeltest.Load(t, dir)
			return f.Config(), w
		}})
	}
	config := func(name string, bench bool, c *model.Config) plannedModel {
		return plannedModel{name, bench, func(t *testing.T) (*model.Config, *model.Weights) {
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			return c, zeroWeights(c)
		}}
	}
	for _, dt := range []model.DType{model.Int8, model.F32} {
		ms = append(ms, config("testmodel cai-"+dt.String(), false, testmodel.CAIShaped(300, dt)),
			config("testmodel plain-"+dt.String(), false, testmodel.Plain(300, dt)))
	}
	for _, s := range bench.Shapes {
		c, err := bench.Shape(s)
		if err != nil {
			panic(err)
		}
		ms = append(ms, config("gemma-3-"+s+" shape", true, c))
	}
	for _, v := range bench.ArchVariants {
		c, err := bench.ArchConfig(v)
		if err != nil {
			panic(err)
		}
		ms = append(ms, config("architecture table "+v, true, c))
	}
	return ms
}

// zeroWeights are weights of c's shapes, all zero. The matrices share one
// zero array, so even a 1B shape costs only its largest matrix in memory.
func zeroWeights(c *model.Config) *model.Weights {
	largest := 0
	for _, s := range c.TensorSpecs() {
		largest = max(largest, s.Rows*s.Cols)
	}
	var i8 []int8
	var f32 []float32
	if c.DType == model.Int8 {
		i8 = make([]int8, largest)
	} else {
		f32 = make([]float32, largest)
	}
	w := model.NewWeights(c)
	for _, s := range c.TensorSpecs() {
		mat, norm := w.Find(s)
		if norm != nil {
			*norm = make([]float32, s.Cols)
			continue
		}
		*mat = model.Mat{Rows: s.Rows, Cols: s.Cols}
		if c.DType == model.Int8 {
			mat.I8, mat.Scale = i8[:s.Rows*s.Cols], make([]float32, s.Rows)
		} else {
			mat.F32 = f32[:s.Rows*s.Cols]
		}
	}
	w.Tie(c)
	return w
}

// runModel makes m's kernels the way a session does: a prompt, greedy and
// sampled decoding, a KV snapshot and its restore.
func runModel(dev gpu.Device, c *model.Config, w *model.Weights, opt webgpu.Options) error {
	m, err := webgpu.New(dev, c, w, opt)
	if err != nil {
		return err
	}
	defer m.Close()
	s, err := m.NewSequence(min(c.ContextLen, 64))
	if err != nil {
		return err
	}
	defer s.Close()
	logits := make([]float32, 2*c.Vocab)
	if err := s.Forward([]int32{1, 2}, 0, logits); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	if _, err := s.Greedy(2, 2, 2); err != nil {
		return fmt.Errorf("greedy: %w", err)
	}
	if _, err := s.Sample(2, 4, 2, sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.9, RepetitionPenalty: 1.1, Seed: 1}, 0, []int32{1}); err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	snap, err := s.Snapshot(0, 6)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return s.Restore([]*kv.Snapshot{snap})
}

// newRecorder is a recording device of the given limits that, with tier,
// offers what the dot4+subgroups kernels need.
func newRecorder(name string, lim gpu.Limits, tier bool) *gpurecord.Device {
	d := gpurecord.New(name, lim)
	if tier {
		d.Offer([]string{shaders.FeatureSubgroups}, []string{shaders.WGSLPackedDot, shaders.WGSLSubgroupID})
	}
	return d
}

// TestPlannedKernelsAreEnumerated plans the test models, the bundled
// model, the Gemma-3 shapes and the architecture table's configs on each
// device profile, with the default GEMV, every GEMV wick bench may choose,
// its decode plans and the engine tests' split options, runs wick bench's own kernels, and
// records every kernel made: each must be a variant of
// shaders.Variants, which the shaders package compiles through Tint, naga
// and wgpu-native.
func TestPlannedKernelsAreEnumerated(t *testing.T) {
	enumerated := map[string]bool{}
	for _, k := range shaders.Variants() {
		enumerated[k.Label()] = true
	}
	// Every model runs with the default options (wick serve, the page) and
	// the tiny ones with the engine tests' splits; wick bench's models with
	// each GEMV it may pick.
	opts := []webgpu.Options{{}, {Chunk: 5, SplitBytes: 1000}, {Chunk: 3, SplitBytes: 3000}, {Chunk: 9, SplitBytes: 1000, Split: 1}}
	for _, a := range webgpu.AttnPaths {
		opts = append(opts, webgpu.Options{Attention: a})
	}
	var benchOpts []webgpu.Options
	for _, v := range strings.Split(bench.Defaults.Gemv, ",") {
		g, err := bench.ParseGemv(v)
		if err != nil {
			t.Fatal(err)
		}
		benchOpts = append(benchOpts, webgpu.Options{Gemv: g})
	}
	// and the decode plans it compares (Options.Fuse, RowReread), and
	// prefill attention's first variant and the register one's 32-key
	// tiles (FlashFirst, FlashTile).
	benchOpts = append(benchOpts, webgpu.Options{Fuse: webgpu.Fuse{Norm: true, Gated: true, Attention: true}},
		webgpu.Options{Fuse: webgpu.Fuse{Norm: true, Gated: true, Groups: 64}}, webgpu.Options{RowReread: true},
		webgpu.Options{Tile: 64}, webgpu.Options{Tile: shaders.TiledBig}, webgpu.Options{Split: webgpu.SplitPasses},
		webgpu.Options{Tile: 64, Split: webgpu.SplitPasses}, webgpu.Options{Fuse: webgpu.Fuse{None: true}}, webgpu.Options{Fuse: webgpu.Fuse{Norm: true, Epilogue: true, Groups: 32}},
		webgpu.Options{FlashFirst: true}, webgpu.Options{FlashTile: shaders.FlashTiles})
	type loaded struct {
		name  string
		bench bool
		c     *model.Config
		w     *model.Weights
	}
	var models []loaded
	for _, pm := range plannedModels() {
		c, w := pm.load(t)
		models = append(models, loaded{pm.name, pm.bench, c, w})
	}
	for _, p := range deviceProfiles {
		t.Run(p.name, func(t *testing.T) {
			planned := map[string]bool{}
			record := func(dev *gpurecord.Device) {
				for label, src := range dev.Kernels() {
					if !planned[label] && !enumerated[label] {
						t.Errorf("kernel %s (entry %s) is not in shaders.Variants", label, src.Entry)
					}
					planned[label] = true
				}
			}
			for _, pm := range models {
				c, w := pm.c, pm.w
				mo := opts[:1]
				if c.Params() < 1<<20 {
					mo = opts
				}
				if pm.bench {
					mo = append(mo[:len(mo):len(mo)], benchOpts...)
				}
				for _, o := range mo {
					dev := newRecorder(p.name, p.lim, p.tier)
					if err := runModel(dev, c, w, o); err != nil {
						t.Errorf("%s with %+v: %v", pm.name, o, err)
					}
					record(dev)
				}
			}
			// wick bench's bandwidth and GEMV kernels (its models are above).
			dev := newRecorder(p.name, p.lim, p.tier)
			if err := bench.Run(dev, bench.Options{MiB: 1, Gemv: bench.Defaults.Gemv}, io.Discard); err != nil {
				t.Errorf("bench: %v", err)
			}
			record(dev)
			labels := make([]string, 0, len(planned))
			for l := range planned {
				labels = append(labels, l)
			}
			slices.Sort(labels)
			t.Logf("%d kernel variants planned", len(labels))
			if testing.Verbose() {
				t.Logf("%s", strings.Join(labels, "\n"))
			}
		})
	}
}
