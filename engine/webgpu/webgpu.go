// Package webgpu is wick's GPU backend: the forward pass of engine/cpu,
// step for step, as WGSL kernels (package shaders) recorded into one
// command list per step and run through the compute interface of
// engine/gpu. Weights are uploaded once; pipelines, bind groups and kernel
// parameters are made when a model or sequence is created, so a step only
// writes its Step block, token ids and RoPE table, then dispatches.
package webgpu

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// Options tune a Model; the zero value is the default.
type Options struct {
	// Chunk is the most tokens one step runs (default 512), fewer where
	// a step's buffers would not fit the device's storage binding size
	// (Sequence.C). Longer Forward calls are split into steps; the
	// arithmetic per token is the same. A session reading a prompt
	// reports progress (and takes a cancel) per step. Long steps keep a
	// large GPU busy: on the H200 512-token steps of the Gemma 3 1B shape
	// prefilled 13,028 tok/s where the page's 32-token steps (one per
	// prefix cache block) got 8,955: the tiled product of its down
	// projection takes 18 workgroups per 64 tokens.
	Chunk int
	// SplitBytes caps the bytes of one weight buffer below the device's
	// binding limit (tests use it to split small tensors by rows).
	SplitBytes int64
	// Fuse chooses which kernels of a decode step fold into others (the
	// zero value: DefaultFuse).
	Fuse Fuse
	// RowReread runs the one-workgroup row kernels (pre-norm, gated
	// activation) that reread their row from memory in every pass rather
	// than holding it in registers (shaders.Key.Regs: as many values an
	// invocation as the row needs, loops written out, the pre-norm's sums
	// bit for bit the rereading form's), the default since those measured
	// faster on the H200 (2026-12-02, 1B decode under Dawn 496 -> 518
	// tok/s, natively 270M 896 -> 942, the quad-holding form).
	RowReread bool
	// RowAttention plans prefill attention as a workgroup per (query
	// head, token) reading K/V rows from memory (attn.wgsl's attend)
	// rather than the flash kernel that shares each K/V tile among a block
	// of query rows (attend_flash): benchmarks compare the two with it.
	RowAttention bool
	// FlashFirst plans attend_flash's first variant rather than its
	// register one (shaders.Key.Regs: each tile's scores, softmax and P.V
	// spread over the invocations, sums in registers, the next tile's rows
	// loaded ahead), the default since it measured 2.6x faster on the
	// H200 (2026-12-02, Dawn, 1B 512-token step: 0.168 ms a dispatch
	// against 0.440; native pp512 8,617 -> 9,436 tok/s). Benchmarks
	// compare the two with it. Neither has a subgroup form: each gives
	// the same bits on every tier of one compiler and driver (and, on
	// lavapipe, under Tint and naga alike); the two differ from each
	// other in the last bits, as any two orders of float sums do.
	FlashFirst bool
	// FlashTile is the register variant's keys per tile (shaders.Key.Tile:
	// shaders.FlashTiles, the rows shrinking to fit beside them; the
	// shape's own where none fits); 0 for shaders.FlashShape's choice.
	FlashTile int
	// Gemv is the decode matrix-vector kernel's variant (default: 256
	// invocations, 8 per row, integer products: the fastest on the H100,
	// bench/RESULTS.md).
	Gemv Gemv
	// Attention is a decode step's attention path (plan.go's AttnPaths):
	// "" or "group-prep", a workgroup per (KV head, run of key tiles) for
	// all the head's query heads, with the query's QK-norm and RoPE and
	// the new K/V's quantisation folded in; "group", the same after
	// qkv_prep's own dispatch; "split", a workgroup per (query head,
	// tile). Models whose group of heads has no grouped variant run
	// "split". wick bench compares them (-attn).
	Attention string
	// AttnRoom caps the partial states per head that a grouped decode
	// step leaves for the merge (default 64): longer spans of keys run
	// several tiles per workgroup.
	AttnRoom int
	// AttnWhole is the longest span of keys (min(position+1, window) on
	// local layers, position+1 on global ones) whose decode step runs in
	// one workgroup per layer that also does the merge's quantisation
	// (attend_group's whole-step variant, shaders.Key.Out "quant"),
	// leaving out the merge's dispatch; longer spans run the pair. 0 is
	// the default (defaultAttnWhole: none, as measured), negative never.
	// Only int8 models of one KV head on the grouped path (Gemma 3 1B and
	// 270M).
	AttnWhole int
	// Tile is the prefill product's tile (shaders.Tiled): 0, the default,
	// 64 where the tier has subgroup matrices for it (Tier.MatrixTile) and
	// the first 64x64 tile elsewhere (faster on the H200 than the large
	// one so far); 64, the 64x64 tile with its loops written out (DOT4, or
	// MATRIX on subgroup matrices); shaders.TiledBig, the 128x128 one;
	// each where the tier has it. Benchmarks compare them with it.
	Tile int
	// Split, n > 0, lets a prefill product that would get too few
	// workgroups (few rows: a 1B model's down, output and Q|K|V products
	// at 512 tokens) run split along its columns (shaders.Key.Split): the
	// written-out 64x64 tile with Tile 64, the large tile else, in slices
	// of at least n passes of 32 columns, with its int32 sums added with
	// atomics into a scratch buffer and dequantised by a merge dispatch. 0
	// (the default until it is measured) splits nothing; wick bench's
	// +split is SplitPasses.
	Split int
	// Fallback runs the fallback tier of kernels even where the device
	// offers more (shaders.Tier): benchmarks and tests compare the tiers
	// on one device with it.
	Fallback bool
}

// Fuse chooses the folds of a decode step's plan (plan.go), each on its
// own, so that wick bench can measure every combination (-plans). On the
// H200 through Dawn (bench/BROWSER.md, 2026-12-02) every fold was slower
// on the Gemma-3-1B shape, where hundreds of workgroups repeat a prologue
// over rows of 1,152 or 2x6,912 values (434 tok/s unfolded, 398 with the
// gated fold, 348-363 with both), and norm+gated over 32 workgroups was
// 6% faster on the 270M shape (rows of 640 and 2x2,048). With the norm
// prologue on gate|up's epilogue too (norm+epi: 6 dispatches a layer)
// the 1B shape ran 415 tok/s against 527 with the epilogue alone, the 270M
// 827 against 900 (2026-12-03): gate|up's 432 workgroups each repeat the
// norm. DefaultFuse makes the gated epilogue alone, which repeats no work.
type Fuse struct {
	// None folds nothing, whatever DefaultFuse holds (the zero Fuse
	// stands for DefaultFuse).
	None bool
	// Norm makes each pre-norm (residual add, RMSNorm, quantisation) the
	// prologue of the product that follows (Q|K|V, gate|up).
	Norm bool
	// Gated makes the gated activation and its quantisation the down
	// product's prologue.
	Gated bool
	// Epilogue makes the gated activation the gate|up product's epilogue
	// (shaders.Key.Out): each workgroup computes its rows' gate and up and
	// writes act(gate)*up, and in int8 mode takes its max |h| into a word
	// per token, which the down product's prologue quantises by
	// (shaders.Key.In "quant"). It saves gated_quant's dispatch, a
	// workgroup per token over the whole FFN width, with no work repeated.
	// Gated, where also asked for, wins; with Norm an int8 gate|up
	// product with the epilogue takes its pre-norm as its prologue too
	// (6 dispatches a layer), except with Gemv.FMA (its pre-norm then
	// keeps its dispatch).
	// Only where gate|up is one buffer (not split by the binding limit)
	// and, in int8 mode, down's row fits its prologue.
	Epilogue bool
	// Attention has a decode step's attention prepare its own query and
	// K/V (QK-norm, RoPE, quantisation: attend_group). Options.Attention's
	// default does so already; this overrides its "group" and "split".
	Attention bool
	// Groups is the fewest workgroups a product with a prologue is spread
	// over (0: as many as the other products, gemvMinGroups): fewer, with
	// more rows each, repeat the prologue fewer times.
	Groups int
}

// DefaultFuse is the folds a Model makes where Options.Fuse is zero: the
// gated epilogue (the prologue folds measured slower, see Fuse).
var DefaultFuse = Fuse{Epilogue: true}

// ParseFuse reads a combination of folds: "default" or "" (DefaultFuse),
// "none", or parts joined by "+": norm, gated, attn, epi (Epilogue), all
// (norm, gated, attn), gN (Groups N); e.g. "norm+gated+g64", "norm+epi".
// Every combination but "default" leaves out what it does not name:
// "none" and "norm" plan gated_quant's own dispatch.
func ParseFuse(s string) (Fuse, error) {
	var f Fuse
	s = strings.TrimSpace(s)
	switch s {
	case "", "default":
		return f, nil
	case "none":
		return Fuse{None: true}, nil
	}
	for _, part := range strings.Split(s, "+") {
		switch part {
		case "norm":
			f.Norm = true
		case "gated":
			f.Gated = true
		case "attn":
			f.Attention = true
		case "epi":
			f.Epilogue = true
		case "all":
			f.Norm, f.Gated, f.Attention = true, true, true
		default:
			n, err := strconv.Atoi(strings.TrimPrefix(part, "g"))
			if !strings.HasPrefix(part, "g") || err != nil || n <= 0 {
				return f, fmt.Errorf("fuse %q: part %q is none of norm, gated, attn, epi, all, gN (N > 0)", s, part)
			}
			f.Groups = n
		}
	}
	return f, nil
}

// String names f as ParseFuse reads it.
func (f Fuse) String() string {
	var parts []string
	for _, p := range []struct {
		on   bool
		name string
	}{{f.Norm, "norm"}, {f.Gated, "gated"}, {f.Attention, "attn"}, {f.Epilogue, "epi"}} {
		if p.on {
			parts = append(parts, p.name)
		}
	}
	if f.Groups > 0 {
		parts = append(parts, "g"+strconv.Itoa(f.Groups))
	}
	switch {
	case len(parts) > 0:
		return strings.Join(parts, "+")
	case f.None:
		return "none"
	}
	return "default"
}

// Gemv chooses a variant of the decode matrix-vector product (see
// shaders/gemv.wgsl); wick bench measures them.
type Gemv struct {
	WG  int  // invocations per workgroup: one of shaders.GemvWGs
	TPR int  // invocations per row: a power of two up to WG
	FMA bool // int8 products through exact float32 FMA
	// Groups is the fewest workgroups a product of few rows is spread
	// over, TPR doubling until it is reached (0: gemvMinGroups).
	Groups int
}

// Validate reports a variant that package shaders has no kernels for.
func (g Gemv) Validate() error {
	if g.Groups < 0 {
		return fmt.Errorf("gemv spread over at least %d workgroups: want 0 (the default) or more", g.Groups)
	}
	if !slices.Contains(shaders.GemvWGs, g.WG) || g.TPR <= 0 || g.TPR&(g.TPR-1) != 0 || g.TPR > g.WG {
		return fmt.Errorf("gemv with %d invocations per row in workgroups of %d: want workgroups of %v and a power of two up to the workgroup size per row",
			g.TPR, g.WG, shaders.GemvWGs)
	}
	return nil
}

// DefaultChunk is Options.Chunk's default: the tokens of one step.
const DefaultChunk = 512

// gemvMaxTokens is the most tokens a step runs through the matrix-vector
// kernels; longer steps use the tiled product, which reads W once for up
// to 64 tokens.
const gemvMaxTokens = 4

// SplitPasses is the fewest passes (of 32 columns) a slice of a split
// prefill product takes in wick bench's +split plan, so that staging and
// the atomic adds stay a small part of its work (Options.Split).
const SplitPasses = 8

// argmaxBlock is the logits each workgroup of the greedy pick's first pass
// takes: a 262k vocabulary spreads over 256 workgroups.
const argmaxBlock = 4 * shaders.RowWG

// Model is a model loaded onto a GPU device.
type Model struct {
	dev  gpu.Device
	cfg  *model.Config
	opt  Options
	tier shaders.Tier  // what the kernels may use of the device
	rope [2]model.Rope // RoPE by model.AttnKind
	// ropeRows keeps rope's table rows of the positions steps have used,
	// and ropeDev the same rows on the GPU.
	ropeRows *ropeRows
	ropeDev  ropeDevice

	kernels map[shaders.Key]gpu.Kernel
	owned   []gpu.Buffer // weight buffers, freed by Close
	scratch []byte       // stages weight parts while uploading

	embed, lmHead *matrix
	layers        []layerWeights
	norms         gpu.Buffer // every norm vector, each at a 256-byte aligned offset
	finalNorm     int64
}

// layerWeights are one block's tensors on the GPU. Norms are byte offsets
// into Model.norms; -1 where the config has none.
type layerWeights struct {
	wq, wo, gateUp, down                      *matrix // wq: Q's rows, then K's and V's on KV producers; gateUp: gate's, then up's
	attnNorm, qNorm, kNorm, postAttn, ffnNorm int64
	postFFN                                   int64
	bias                                      int64 // Q's bias, then K's and V's on KV producers, like wq's rows
}

// matrix is a weight matrix split by rows into parts that each fit one
// storage binding. A part holds its rows' values (int8 packed four to a
// word, or float32) and then, in int8 mode, their scales at scaleWord.
type matrix struct {
	rows, cols int
	parts      []part
}

type part struct {
	buf       gpu.Buffer
	rowLo     int
	rows      int
	scaleWord int
}

// New uploads w to dev and makes the kernels cfg needs.
func New(dev gpu.Device, cfg *model.Config, w *model.Weights, opt Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webgpu model: %w", err)
	}
	if opt.Chunk <= 0 {
		opt.Chunk = DefaultChunk
	}
	if opt.Fuse == (Fuse{}) {
		opt.Fuse = DefaultFuse
	}
	if opt.Tile != 0 && opt.Tile != 64 && opt.Tile != shaders.TiledBig {
		return nil, fmt.Errorf("webgpu model: prefill tile %d is none of 0 (the default), 64, %d", opt.Tile, shaders.TiledBig)
	}
	if opt.Split < 0 {
		return nil, fmt.Errorf("webgpu model: split slices of %d passes", opt.Split)
	}
	if opt.Gemv.WG <= 0 {
		opt.Gemv.WG = 256
	}
	if opt.Gemv.TPR <= 0 {
		opt.Gemv.TPR = 8
	}
	if err := opt.Gemv.Validate(); err != nil {
		return nil, fmt.Errorf("webgpu model: %w", err)
	}
	if opt.Attention != "" && !slices.Contains(AttnPaths, opt.Attention) {
		return nil, fmt.Errorf("webgpu model: attention path %q: want one of %v", opt.Attention, AttnPaths)
	}
	if !shaders.HasHeadDim(cfg.HeadDim) {
		return nil, fmt.Errorf("webgpu model: no attention kernels for heads of width %d (shaders.HeadDims: %v)", cfg.HeadDim, shaders.HeadDims)
	}
	m := &Model{dev: dev, cfg: cfg, opt: opt, kernels: map[shaders.Key]gpu.Kernel{}}
	if !opt.Fallback {
		m.tier = shaders.TierOf(dev.Info())
	}
	if opt.Tile == 0 && m.tier.MatrixTile {
		// The written-out 64x64 MATRIX tile: on the H200 through Dawn
		// (2026-12-03, bench/BROWSER.md) 1B pp512 ran 32,937 tok/s with
		// it against 21,102 with the first 64x64 tile, in one run.
		m.opt.Tile = 64
	}
	m.rope[model.Global] = cfg.Rope(model.Global)
	m.rope[model.Local] = cfg.Rope(model.Local)
	m.ropeRows = newRopeRows(&m.rope, cfg.HeadDim)
	err := m.upload(w)
	m.scratch = nil
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("webgpu model: %w", err)
	}
	return m, nil
}

// Name says which backend, adapter and tier of kernels this is.
func (m *Model) Name() string {
	return "webgpu (" + m.dev.Info().Adapter + ", " + m.tier.String() + " kernels)"
}

// Tier is the tier of kernels the model runs (see shaders.Tier).
func (m *Model) Tier() shaders.Tier { return m.tier }

// Close frees the weights. Sequences must be closed first.
func (m *Model) Close() error {
	m.freeRope()
	for _, b := range m.owned {
		m.dev.FreeBuffer(b)
	}
	for _, k := range m.kernels {
		m.dev.FreeKernel(k)
	}
	m.owned, m.kernels = nil, nil
	return nil
}

func (m *Model) newBuffer(size int64, usage gpu.Usage, label string) (gpu.Buffer, error) {
	// Whole 16-byte vectors: the vector kernels read them.
	size = (size + 15) &^ 15
	if size == 0 {
		size = 16
	}
	lim := m.dev.Info()
	if usage&gpu.Storage != 0 && size > lim.Limits.MaxStorageBufferBindingSize {
		return 0, fmt.Errorf("buffer %s: %w", label, &gpu.LimitError{Adapter: lim.Adapter, Limit: "maxStorageBufferBindingSize",
			Have: lim.Limits.MaxStorageBufferBindingSize, Need: size})
	}
	return m.dev.NewBuffer(size, usage, label)
}

// kernel returns the compiled variant k as the model's tier runs it,
// compiling it on first use.
func (m *Model) kernel(k shaders.Key) (gpu.Kernel, error) {
	k = m.tier.Apply(k)
	if kern, ok := m.kernels[k]; ok {
		return kern, nil
	}
	kern, err := shaders.Compile(m.dev, k)
	if err != nil {
		return 0, err
	}
	m.kernels[k] = kern
	return kern, nil
}

func (m *Model) key(family, entry string) shaders.Key {
	k := shaders.Key{Family: family, Entry: entry, Int8: m.cfg.DType == model.Int8, WG: shaders.WG}
	switch family {
	case "prenorm", "quant", "sample":
		// One workgroup per row (per step, for the argmax): a wide one
		// keeps these latency-bound kernels short.
		k.WG = shaders.RowWG
	case "act":
		k.SiLU = m.cfg.Activation == model.SwiGLU
		k.WG = shaders.RowWG
	case "attn":
		k.HD = m.cfg.HeadDim
	}
	return k
}

func (m *Model) upload(w *model.Weights) error {
	c := m.cfg
	if len(w.Layers) != len(c.Layers) {
		return fmt.Errorf("weights have %d layers, config %d", len(w.Layers), len(c.Layers))
	}
	for _, s := range c.TensorSpecs() {
		mat, norm := w.Find(s)
		switch {
		case norm != nil && len(*norm) != s.Cols:
			return fmt.Errorf("tensor %q has %d values, want %d", s.Name, len(*norm), s.Cols)
		case mat != nil && (mat.Rows != s.Rows || mat.Cols != s.Cols):
			return fmt.Errorf("tensor %q is %dx%d, want %dx%d", s.Name, mat.Rows, mat.Cols, s.Rows, s.Cols)
		case mat != nil && c.DType == model.Int8 && (len(mat.I8) != s.Rows*s.Cols || len(mat.Scale) != s.Rows):
			return fmt.Errorf("int8 tensor %q has %d values and %d scales, want %d and %d", s.Name, len(mat.I8), len(mat.Scale), s.Rows*s.Cols, s.Rows)
		case mat != nil && c.DType == model.F32 && len(mat.F32) != s.Rows*s.Cols:
			return fmt.Errorf("f32 tensor %q has %d values, want %d", s.Name, len(mat.F32), s.Rows*s.Cols)
		}
	}
	// Norm vectors: one buffer, each vector at an aligned offset so that it
	// can be bound on its own.
	var normData []byte
	addNorm := func(v []float32) int64 {
		if v == nil {
			return -1
		}
		for len(normData)%256 != 0 {
			normData = append(normData, 0)
		}
		at := int64(len(normData))
		normData = append(normData, f32bytes(v)...)
		return at
	}
	var err error
	mat := func(name string, mm ...*model.Mat) *matrix {
		if err != nil || mm[0].Rows == 0 {
			return nil
		}
		var g *matrix
		g, err = m.uploadMatrix(name, mm...)
		return g
	}
	m.embed = mat("embed", &w.Embed)
	if c.TiedEmbedding {
		m.lmHead = m.embed
	} else {
		m.lmHead = mat("lm_head", &w.LMHead)
	}
	m.layers = make([]layerWeights, len(c.Layers))
	for i := range c.Layers {
		lw, gw := &w.Layers[i], &m.layers[i]
		name := func(s string) string { return model.LayerTensor(i, s) }
		if c.Producer(i) {
			gw.wq = mat(name(model.NameWQ)+"+k+v", &lw.WQ, &lw.WK, &lw.WV)
		} else {
			gw.wq = mat(name(model.NameWQ), &lw.WQ)
		}
		gw.wo = mat(name(model.NameWO), &lw.WO)
		gw.gateUp = mat(name(model.NameWGate)+"+up", &lw.WGate, &lw.WUp)
		gw.down = mat(name(model.NameWDown), &lw.WDown)
		gw.attnNorm = addNorm(lw.AttnNorm)
		gw.qNorm, gw.kNorm = addNorm(lw.QNorm), addNorm(lw.KNorm)
		gw.bias = -1
		if c.QKVBias {
			gw.bias = addNorm(slices.Concat(lw.BQ, lw.BK, lw.BV))
		}
		gw.postAttn = addNorm(lw.PostAttnNorm)
		gw.ffnNorm = addNorm(lw.FFNNorm)
		gw.postFFN = addNorm(lw.PostFFNNorm)
	}
	if err != nil {
		return err
	}
	m.finalNorm = addNorm(w.FinalNorm)
	if m.norms, err = m.newBuffer(int64(len(normData)), gpu.Storage, "norms"); err != nil {
		return err
	}
	m.owned = append(m.owned, m.norms)
	return m.dev.Write(m.norms, 0, normData)
}

// uploadMatrix stacks the rows of mats (one matrix, or several of the same
// width computed by one product), splits them by rows into parts no larger
// than the binding limit (or Options.SplitBytes) and uploads them.
func (m *Model) uploadMatrix(name string, mats ...*model.Mat) (*matrix, error) {
	int8Mode := m.cfg.DType == model.Int8
	cols, rows := mats[0].Cols, 0
	for _, mm := range mats {
		if mm.Cols != cols {
			return nil, fmt.Errorf("tensor %s: stacked matrices of %d and %d columns", name, cols, mm.Cols)
		}
		rows += mm.Rows
	}
	rowBytes := int64(cols) * 4
	if int8Mode {
		rowBytes = int64(cols) + 4 // values and the scale
	}
	limit := m.dev.Info().Limits.MaxStorageBufferBindingSize - 64 // room for padding to whole vectors
	if m.opt.SplitBytes > 0 {
		limit = min(limit, m.opt.SplitBytes)
	}
	perPart := int(limit / rowBytes)
	if perPart < 1 {
		lim := m.dev.Info()
		return nil, fmt.Errorf("tensor %s: one row is %d bytes: %w", name, rowBytes,
			&gpu.LimitError{Adapter: lim.Adapter, Limit: "maxStorageBufferBindingSize", Have: limit, Need: rowBytes})
	}
	// rowsOf appends the values (or scales) of stacked rows lo..hi.
	rowsOf := func(data []byte, lo, hi int, scales bool) []byte {
		base := 0
		for _, mm := range mats {
			a, b := max(lo-base, 0), min(hi-base, mm.Rows)
			if a < b {
				switch {
				case scales:
					data = append(data, f32bytes(mm.Scale[a:b])...)
				case int8Mode:
					data = append(data, i8bytes(mm.I8[a*cols:b*cols])...)
				default:
					data = append(data, f32bytes(mm.F32[a*cols:b*cols])...)
				}
			}
			base += mm.Rows
		}
		return data
	}
	g := &matrix{rows: rows, cols: cols}
	// One buffer stages every part of every matrix: the parts are as large
	// as a binding, and fresh ones would be garbage the size of the model
	// (which a wasm module's memory never gives back).
	if need := int64(min(perPart, rows))*rowBytes + 32; int64(cap(m.scratch)) < need {
		m.scratch = make([]byte, 0, need)
	}
	data := m.scratch[:0]
	defer func() { m.scratch = data[:0] }()
	for lo := 0; lo < rows; lo += perPart {
		hi := min(lo+perPart, rows)
		p := part{rowLo: lo, rows: hi - lo}
		data = rowsOf(data[:0], lo, hi, false)
		if int8Mode {
			for len(data)%16 != 0 {
				data = append(data, 0)
			}
			p.scaleWord = len(data) / 4
			data = rowsOf(data, lo, hi, true)
		}
		for len(data)%16 != 0 {
			data = append(data, 0)
		}
		b, err := m.newBuffer(int64(len(data)), gpu.Storage, fmt.Sprintf("%s[%d:%d]", name, lo, hi))
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		m.owned = append(m.owned, b)
		if err := m.dev.Write(b, 0, data); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		p.buf = b
		g.parts = append(g.parts, p)
	}
	return g, nil
}

// f32bytes and i8bytes view values as their little-endian bytes (every
// target wick builds for is little-endian) without a copy.
func f32bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

func i8bytes(v []int8) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v))
}
