// Package bench measures wick on one GPU device: the bandwidth of a buffer
// copy and of a streaming-read kernel (the ceilings), the int8 GEMV variants
// against them, then decode and prefill speed of a model directory and of
// Gemma-3-270M- and 1B-shaped models with random int8 weights. It runs on
// any gpu.Device, so `wick bench` (wgpu-native) and the engine's wasm
// module under the Node host (Dawn, Chrome's WebGPU) measure the same
// things the same way. Times are wall-clock over many dispatches or steps,
// after a warm-up (GPU clocks ramp under load); each figure is the median
// of runs. The per-kernel profile (Options.Profile) takes the GPU's
// timestamp queries where the device offers them (gpu.TimerOf: Dawn), and
// wall clock elsewhere (wgpu-native: cogentcore/webgpu v0.23.0 has no
// compute-pass timestampWrites). The results are in this folder's RESULTS.md and BROWSER.md.
package bench

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/engine/webgpu"
	"github.com/wick-run/wick/internal/testmodel"
	"github.com/wick-run/wick/shaders"
)

// Options says what Run measures (Defaults has `wick bench`'s values).
type Options struct {
	Model   string `json:"model"`   // a model directory measured beside the shapes ("": none)
	Shapes  string `json:"shapes"`  // comma-separated Gemma 3 shapes (Shapes), "" none
	MiB     int    `json:"mib"`     // MiB read by the bandwidth and GEMV measurements (capped by the device's limits)
	Decode  int    `json:"decode"`  // decode steps timed (tg)
	Prompt  int    `json:"prompt"`  // prefill tokens timed (pp)
	Long    int    `json:"long"`    // also time decode from this position (0: no)
	Gemv    string `json:"gemv"`    // GEMV variants WGxTPR, f for float32 FMA products; the fastest runs the models
	Configs string `json:"configs"` // the architecture table's variants (ArchVariants) with random weights, or "all"
	Profile bool   `json:"profile"` // also time each dispatch of a decode step: GPU timestamps where the device is a gpu.Timer, else wall clock
	// RowAttention plans prefill attention per (query head, token)
	// instead of flash (webgpu.Options.RowAttention).
	RowAttention bool `json:"rowAttention"`
	// Plans are the decode plans each model runs with, side by side,
	// comma-separated: webgpu.ParseFuse's combinations ("none", "epi",
	// "norm", "norm+gated+attn", "all+g64", ...), each optionally with "+reread"
	// (webgpu.Options.RowReread; "+regs", the default, is accepted), "+attn-group-prep", "+attn-group" or
	// "+attn-split" (webgpu.Options.Attention) and "+roomN"
	// (webgpu.Options.AttnRoom), "+wholeN" (webgpu.Options.AttnWhole: decode
	// attention over spans of up to N keys in one workgroup with no merge;
	// "+whole0" never), "+tile64" or "+tile128" (webgpu.Options.Tile:
	// the 64x64 tile written out, DOT4 or on the matrix tier MATRIX, or the
	// 128x128 one, rather than the first 64x64 one), "+split"
	// (webgpu.Options.Split: products of few rows split along their
	// columns, on the written-out 64x64 tile with +tile64, the large one
	// else), "+flash-first" (webgpu.Options.FlashFirst: prefill
	// attention's first variant rather than its register one, the
	// default; "+flash-regs", which earlier plans named, is accepted) or
	// "+flash32" (the register one with tiles of 32 keys,
	// webgpu.Options.FlashTile). "" is the default plan alone.
	Plans string `json:"plans"`
	// Warm is how many seconds each timed figure first repeats its work,
	// untimed (0: once). A GPU's clock ramps under load and falls when it
	// idles: an H200 idles at 345 MHz and needs about 1.5 s of load to
	// reach 1,980, so a figure timed within a second of idling (after a
	// model's weights were uploaded, say) was measured at a fraction of
	// the clock the next one had.
	Warm float64 `json:"warm"`
}

// Defaults are the options `wick bench` runs with.
var Defaults = Options{
	Model: "testdata/cai-tiny", Shapes: "270m,1b", MiB: 512, Decode: 128, Prompt: 512, Long: 4096, Warm: 2,
	Gemv: "256x8,256x16,256x32,128x16,256x16f,256x32f,128x16f,64x8f",
}

// Run measures on dev and writes markdown tables to w as it goes.
func Run(dev gpu.Device, o Options, w io.Writer) error {
	info := dev.Info()
	fmt.Fprintf(w, "adapter: %s; maxStorageBufferBindingSize %d MiB, maxBufferSize %d MiB; %s\n\n",
		info.Adapter, info.Limits.MaxStorageBufferBindingSize>>20, info.Limits.MaxBufferSize>>20, time.Now().UTC().Format("2006-01-02"))
	plans, err := ParsePlans(o.Plans)
	if err != nil {
		return err
	}
	if !(o.Warm >= 0) {
		return fmt.Errorf("warm %v: seconds, at least 0", o.Warm)
	}
	b := &bencher{dev: dev, rowAttention: o.RowAttention, warm: time.Duration(o.Warm * float64(time.Second))}
	size := min(int64(o.MiB)<<20, info.Limits.MaxStorageBufferBindingSize&^(1<<20-1), info.Limits.MaxBufferSize&^(1<<20-1))
	copyBW, err := b.copyBandwidth(size)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	fmt.Fprintf(w, "| bandwidth (%d MiB) | GB/s | of copy |\n| --- | --- | --- |\n", size>>20)
	fmt.Fprintf(w, "| buffer copy (read+write bytes) | %.0f | 100%% |\n", copyBW/1e9)
	var readBW float64
	for _, unroll := range shaders.StreamUnrolls {
		bw, err := b.streamBandwidth(size, unroll)
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		readBW = max(readBW, bw)
		fmt.Fprintf(w, "| streaming read, WGSL, 16-byte loads, %d in flight | %.0f | %.0f%% |\n", unroll, bw/1e9, 100*bw/copyBW)
	}

	// The device's tier of kernels and, where it has more than the
	// fallback, the fallback too: the tiers side by side in one run.
	tiers := []shaders.Tier{shaders.TierOf(info)}
	if tiers[0] != (shaders.Tier{}) {
		tiers = append(tiers, shaders.Tier{})
	}
	fmt.Fprintf(w, "\n| int8 GEMV (%d MiB of weights) | kernels | cols | GB/s | of streaming read | of copy |\n| --- | --- | --- | --- | --- | --- |\n", size>>20)
	// The variants the device's own tier runs as distinct kernels: the
	// models' candidates (see pickGemv).
	var candidates []webgpu.Gemv
	for i, tier := range tiers {
		seen := map[shaders.Key]bool{}
		for _, v := range strings.Split(o.Gemv, ",") {
			g, err := ParseGemv(v)
			if err != nil {
				return err
			}
			k := tier.Apply(gemvKey(g))
			if seen[k] {
				continue // the tier runs this variant as another (packed dot products replace FMA)
			}
			seen[k] = true
			var worst float64
			for _, cols := range []int{1152, 6912} {
				bw, err := b.gemvBandwidth(size, cols, k)
				if err != nil {
					return fmt.Errorf("gemv %s: %w", v, err)
				}
				if worst == 0 || bw < worst {
					worst = bw
				}
				fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f%% | %.0f%% |\n", gemvName(g, k), tier, cols, bw/1e9, 100*bw/readBW, 100*bw/copyBW)
			}
			if i == 0 {
				candidates = append(candidates, g)
			}
		}
	}
	// The roofline takes the larger of the two measured bandwidths: where
	// a kernel reads faster than the copy engine copies, reading is the
	// bound a decode step meets.
	roofBW := max(copyBW, readBW)
	fmt.Fprintf(w, "\nmodels run with the GEMV variant that decodes them fastest (the picks follow the table); roofline = (weight bytes + KV bytes read per token) / %.0f GB/s (the larger of copy and streaming read); "+
		"tok/s are medians of %d timed runs after %gs of warm-up (-warm), ± half their spread (max - min) relative to the median\n\n",
		roofBW/1e9, timedRuns, o.Warm)
	fmt.Fprintf(w, "| model | kernels | plan | weights | dispatches/token | decode tg%d tok/s | of roofline | sampled tg%d tok/s (temperature %g, top-p %g) | decode from %d tok/s | of roofline | prefill pp%d tok/s | the same on a new sequence |\n",
		o.Decode, o.Decode, sample.DefaultTemperature, sample.DefaultTopP, o.Long, o.Prompt)
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	var runs []namedModel
	if o.Model != "" {
		runs = append(runs, namedModel{name: o.Model, load: func() (*model.Config, *model.Weights, error) {
			f, err := format.Open(o.Model)
			if err != nil {
				return nil, nil, err
			}
			w, err := f.LoadWeights()
			return f.Config(), w, err
		}})
	}
	for _, s := range strings.Split(o.Shapes, ",") {
		if s == "" {
			continue
		}
		c, err := Shape(s)
		if err != nil {
			return err
		}
		runs = append(runs, namedModel{name: "gemma-3-" + s + " shape, random int8", load: func() (*model.Config, *model.Weights, error) {
			return c, RandomInt8(c, 1), nil
		}})
	}
	if o.Configs == "all" {
		o.Configs = strings.Join(ArchVariants, ",")
	}
	for _, v := range strings.Split(o.Configs, ",") {
		if v == "" {
			continue
		}
		c, err := ArchConfig(v)
		if err != nil {
			return err
		}
		runs = append(runs, namedModel{name: "architecture table: " + v, load: func() (*model.Config, *model.Weights, error) {
			return c, testmodel.Random(c, 1), nil
		}})
	}
	var profiles []string
	var picks strings.Builder
	for _, r := range runs {
		// One load serves every tier and plan (random 1B weights take a
		// while to make in the wasm module).
		c, wts, err := r.load()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		best, table, err := b.pickGemv(c, wts, candidates, tiers[0], plans[0])
		if err != nil {
			return fmt.Errorf("%s: GEMV pick: %w", r.name, err)
		}
		fmt.Fprintf(&picks, "\nGEMV pick for %s (%s kernels, plan %s): greedy decode of %d steps from position 0, the fastest of %d runs each\n\n%s",
			r.name, tiers[0], plans[0], pickSteps, pickRuns, table)
		for i, tier := range tiers {
			for _, pl := range plans {
				base := pl
				base.Tile, base.Split = 0, false
				if i > 0 && base != pl && slices.Contains(plans, base) {
					// The fallback tier has no other prefill tile nor split
					// (Tier.Apply): its row would repeat base's.
					continue
				}
				row, prof, err := b.model(r.name, c, wts, best, tier, i > 0, pl, o.Decode, o.Prompt, o.Long, roofBW, o.Profile)
				if err != nil {
					return fmt.Errorf("%s (%s kernels, plan %s): %w", r.name, tier, pl, err)
				}
				fmt.Fprintln(w, row)
				profiles = append(profiles, prof)
			}
		}
	}
	fmt.Fprint(w, picks.String())
	if o.Profile {
		for _, p := range profiles {
			fmt.Fprint(w, p)
		}
	}
	return nil
}

// Plan is a decode plan a model runs with: its folds and which row
// kernels it uses (webgpu.Options.Fuse, RowReread).
type Plan struct {
	Fuse       webgpu.Fuse
	Reread     bool
	Attn       string // the decode attention path (webgpu.Options.Attention; "" the default)
	AttnRoom   int    // its room for partial states (webgpu.Options.AttnRoom; 0 the default)
	AttnWhole  int    // its longest span in one workgroup (webgpu.Options.AttnWhole; 0 the default, none; negative never)
	Tile       int    // the prefill product's tile (webgpu.Options.Tile; 0 the default)
	Split      bool   // split prefill products of few rows (webgpu.Options.Split = webgpu.SplitPasses)
	FlashFirst bool   // prefill attention's first variant (webgpu.Options.FlashFirst)
	FlashK     int    // the register one's keys per tile (webgpu.Options.FlashTile; 0 its default)
}

// String names p as ParsePlans reads it.
func (p Plan) String() string {
	s := p.Fuse.String()
	if p.Reread {
		s += "+reread"
	}
	if p.Attn != "" {
		s += "+attn-" + p.Attn
	}
	if p.AttnRoom != 0 {
		s += fmt.Sprintf("+room%d", p.AttnRoom)
	}
	if p.AttnWhole != 0 {
		s += fmt.Sprintf("+whole%d", max(p.AttnWhole, 0))
	}
	if p.Tile != 0 {
		s += fmt.Sprintf("+tile%d", p.Tile)
	}
	if p.Split {
		s += "+split"
	}
	if p.FlashFirst {
		s += "+flash-first"
	}
	if p.FlashK != 0 {
		s += fmt.Sprintf("+flash%d", p.FlashK)
	}
	return s
}

// ParsePlans reads Options.Plans.
func ParsePlans(s string) ([]Plan, error) {
	if strings.TrimSpace(s) == "" {
		return []Plan{{}}, nil
	}
	var ps []Plan
	for _, v := range strings.Split(s, ",") {
		var p Plan
		// The parts that are not folds: the row kernels, the attention path
		// and its room; what is left goes to webgpu.ParseFuse.
		var folds []string
		for _, part := range strings.Split(strings.TrimSpace(v), "+") {
			room, isRoom := strings.CutPrefix(part, "room")
			whole, isWhole := strings.CutPrefix(part, "whole")
			tile, isTile := strings.CutPrefix(part, "tile")
			attn, isAttn := strings.CutPrefix(part, "attn-")
			switch {
			case part == "reread":
				p.Reread = true
			case part == "split":
				p.Split = true
			case part == "regs": // the default row kernels, named by earlier plans
			case part == "flash-regs": // the default prefill attention, named by earlier plans
			case part == "flash-first":
				p.FlashFirst = true
			case strings.HasPrefix(part, "flash"):
				if p.FlashK, _ = strconv.Atoi(strings.TrimPrefix(part, "flash")); p.FlashK != shaders.FlashTiles {
					return nil, fmt.Errorf("-plans %q: %q is neither flash-first nor flash%d (prefill attention's tiles of keys)", v, part, shaders.FlashTiles)
				}
			case isAttn:
				if !slices.Contains(webgpu.AttnPaths, attn) {
					return nil, fmt.Errorf("-plans %q: attention path %q is none of %v", v, attn, webgpu.AttnPaths)
				}
				p.Attn = attn
			case isTile:
				n, err := strconv.Atoi(tile)
				if err != nil || n != 64 && n != shaders.TiledBig {
					return nil, fmt.Errorf("-plans %q: %q names no prefill tile (tile64, tile%d)", v, part, shaders.TiledBig)
				}
				p.Tile = n
			case isRoom:
				n, err := strconv.Atoi(room)
				if err != nil || n <= 0 {
					return nil, fmt.Errorf("-plans %q: %q wants a positive count of partial states after room", v, part)
				}
				p.AttnRoom = n
			case isWhole:
				n, err := strconv.Atoi(whole)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("-plans %q: %q wants a count of keys after whole (whole0: never)", v, part)
				}
				if p.AttnWhole = n; n == 0 {
					p.AttnWhole = -1
				}
			default:
				folds = append(folds, part)
			}
		}
		f, err := webgpu.ParseFuse(strings.Join(folds, "+"))
		if err != nil {
			return nil, fmt.Errorf("-plans: %w", err)
		}
		p.Fuse = f
		ps = append(ps, p)
	}
	return ps, nil
}

type namedModel struct {
	name string
	load func() (*model.Config, *model.Weights, error)
}

// ParseGemv reads a GEMV variant "WGxTPR", with a trailing f for FMA and
// then, after a slash, the fewest workgroups a product is spread over
// (webgpu.Gemv.Groups): "256x8/512".
func ParseGemv(s string) (webgpu.Gemv, error) {
	var g webgpu.Gemv
	s = strings.TrimSpace(s)
	if v, groups, ok := strings.Cut(s, "/"); ok {
		n, err := strconv.Atoi(groups)
		if err != nil || n <= 0 {
			return g, fmt.Errorf("-gemv: variant %q: %q is no count of workgroups", s, groups)
		}
		g.Groups, s = n, v
	}
	if strings.HasSuffix(s, "f") {
		g.FMA, s = true, strings.TrimSuffix(s, "f")
	}
	// Not fmt.Sscanf: the chat module links this package, and fmt's
	// scanner would add ~60 KB of code to it.
	wg, tpr, ok := strings.Cut(s, "x")
	var err1, err2 error
	g.WG, err1 = strconv.Atoi(wg)
	g.TPR, err2 = strconv.Atoi(tpr)
	if !ok || err1 != nil || err2 != nil {
		return g, fmt.Errorf("-gemv: variant %q is not WGxTPR[f]", s)
	}
	if err := g.Validate(); err != nil {
		return g, fmt.Errorf("-gemv: variant %q: %w", s, err)
	}
	return g, nil
}

// gemvKey is the decode product's kernel that variant g names, before a
// tier applies to it.
func gemvKey(g webgpu.Gemv) shaders.Key {
	return shaders.Key{Family: "gemv", Entry: "gemv", Int8: true, WG: g.WG, TPR: g.TPR, FMA: g.FMA}
}

// gemvName names variant g as kernel k runs it (after its tier).
func gemvName(g webgpu.Gemv, k shaders.Key) string {
	s := fmt.Sprintf("wg%d, %d per row", g.WG, g.TPR)
	if g.Groups > 0 {
		s += fmt.Sprintf(", %d+ groups", g.Groups)
	}
	switch {
	case k.Dot4:
		return s + ", dot4"
	case k.FMA:
		return s + ", fma"
	}
	return s + ", int"
}

// bencher times work on one device.
type bencher struct {
	dev gpu.Device
	// rowAttention: Options.RowAttention.
	rowAttention bool
	enc          gpu.Encoder
	warm         time.Duration // Options.Warm
}

// warmUp runs f once, and again until the bencher's warm time has passed
// since it began: what each measurement does before it is timed.
func (b *bencher) warmUp(f func() error) error {
	t0 := time.Now()
	for {
		if err := f(); err != nil {
			return err
		}
		if time.Since(t0) >= b.warm {
			return nil
		}
	}
}

// timeRuns runs cmds as a warm-up (warmUp), then reps times, waiting for
// the GPU after each, and returns the median seconds of the timed runs.
func (b *bencher) timeRuns(cmds []byte, reps int) (float64, error) {
	run := func() error {
		if err := b.dev.Run(cmds); err != nil {
			return err
		}
		return b.dev.Poll(true)
	}
	if err := b.warmUp(run); err != nil {
		return 0, err
	}
	var times []float64
	for range reps {
		t0 := time.Now()
		if err := run(); err != nil {
			return 0, err
		}
		times = append(times, time.Since(t0).Seconds())
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

func (b *bencher) copyBandwidth(size int64) (float64, error) {
	src, err := b.dev.NewBuffer(size, gpu.Storage, "bench_src")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(src)
	dst, err := b.dev.NewBuffer(size, gpu.Storage, "bench_dst")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(dst)
	const copies = 10
	b.enc.Reset()
	for i := 0; i < copies; i++ {
		b.enc.Copy(src, 0, dst, 0, size)
	}
	t, err := b.timeRuns(b.enc.Bytes(), 5)
	return 2 * float64(size) * copies / t, err
}

// dispatchTimed binds bufs after step and params (as the model does),
// dispatches k reps times in one command list, and returns the median
// seconds per dispatch.
func (b *bencher) dispatchTimed(k shaders.Key, params any, grid [3]int, reps int, bufs ...gpu.Buffer) (float64, error) {
	kern, err := shaders.Compile(b.dev, k)
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeKernel(kern)
	uni := make([]gpu.Buffer, 2)
	for i, v := range []any{shaders.Step{N: 1}, params} {
		if uni[i], err = b.dev.NewBuffer(256, gpu.Uniform, "bench_params"); err != nil {
			return 0, err
		}
		defer b.dev.FreeBuffer(uni[i])
		if err := b.dev.Write(uni[i], 0, shaders.Bytes(v)); err != nil {
			return 0, err
		}
	}
	binds := []gpu.Binding{{Slot: 0, Buffer: uni[0]}, {Slot: 1, Buffer: uni[1]}}
	for i, buf := range bufs {
		binds = append(binds, gpu.Binding{Slot: uint32(2 + i), Buffer: buf})
	}
	g, err := b.dev.NewBindGroup(kern, binds)
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBindGroup(g)
	b.enc.Reset()
	for i := 0; i < reps; i++ {
		b.enc.Dispatch(kern, g, grid[0], grid[1], grid[2])
	}
	if err := b.enc.Err(); err != nil {
		return 0, err
	}
	t, err := b.timeRuns(b.enc.Bytes(), 5)
	return t / float64(reps), err
}

// randomBuffer makes a storage buffer of size bytes of random data.
func (b *bencher) randomBuffer(size int64, label string) (gpu.Buffer, error) {
	buf, err := b.dev.NewBuffer(size, gpu.Storage, label)
	if err != nil {
		return 0, err
	}
	r := rand.NewChaCha8([32]byte{1})
	chunk := make([]byte, 16<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		n := min(int64(len(chunk)), size-off)
		r.Read(chunk[:n])
		if err := b.dev.Write(buf, off, chunk[:n]); err != nil {
			b.dev.FreeBuffer(buf)
			return 0, err
		}
	}
	return buf, nil
}

func (b *bencher) streamBandwidth(size int64, unroll int) (float64, error) {
	src, err := b.randomBuffer(size, "bench_stream")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(src)
	sink, err := b.dev.NewBuffer(1024, gpu.Storage, "bench_sink")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(sink)
	const wg = shaders.StreamWG
	vecs := size / 16
	groups := int((vecs + wg*int64(unroll) - 1) / (wg * int64(unroll)))
	x := min(groups, 65535)
	t, err := b.dispatchTimed(shaders.Key{Family: "stream", Entry: "stream", WG: wg, TPR: unroll},
		shaders.StreamParams{Vecs: uint32(vecs), Magic: 0x9e3779b9}, [3]int{x, (groups + x - 1) / x, 1}, 10, src, sink)
	return float64(size) / t, err
}

// gemvBandwidth times the GEMV of a random int8 matrix of about size bytes
// and cols columns (rows = size/cols) with the model's layout.
func (b *bencher) gemvBandwidth(size int64, cols int, k shaders.Key) (float64, error) {
	rows := int((size - 64) / int64(cols+4))
	scaleWord := (rows*cols + 15) / 16 * 4
	wbytes := int64(scaleWord+rows)*4 + 16
	w, err := b.randomBuffer(wbytes&^15, "bench_gemv_w")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(w)
	// Scales of 1, so that sums stay finite.
	ones := make([]byte, 4*rows)
	for i := 0; i < rows; i++ {
		binary.LittleEndian.PutUint32(ones[4*i:], math.Float32bits(1))
	}
	if err := b.dev.Write(w, int64(scaleWord)*4, ones); err != nil {
		return 0, err
	}
	x, err := b.randomBuffer(int64(cols+16), "bench_gemv_x")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(x)
	if err := b.dev.Write(x, int64(cols), binary.LittleEndian.AppendUint32(nil, math.Float32bits(1))); err != nil {
		return 0, err
	}
	y, err := b.dev.NewBuffer(int64(rows)*4, gpu.Storage, "bench_gemv_y")
	if err != nil {
		return 0, err
	}
	defer b.dev.FreeBuffer(y)
	rpw := k.WG / k.TPR
	groups := (rows + rpw - 1) / rpw
	gx := min(groups, 65535)
	t, err := b.dispatchTimed(k,
		shaders.MatmulParams{Rows: uint32(rows), Cols: uint32(cols), WScaleWord: uint32(scaleWord), XScaleWord: uint32(cols / 4),
			OutStride: uint32(rows)}, [3]int{gx, (groups + gx - 1) / gx, 1}, 10, w, x, y)
	return float64(int64(rows)*int64(cols+4)) / t, err
}

// pickSteps and pickRuns are how pickGemv times each variant: the fastest
// of pickRuns greedy decodes of pickSteps steps, after a warm-up.
const pickSteps, pickRuns = 32, 3

// pickGemv returns the variant among candidates that decodes model c
// (weights w, tier's kernels, plan pl) fastest, and a table of each one's
// decode speed. The variant's 64 MiB GEMV bandwidth, which picked it
// before, was noise against the model's speed: one afternoon the pick
// moved native 1B decode between 425 and 508 tok/s (a 64 MiB matrix sits
// in an H200's L2, and one product says nothing of the step's other
// kernels). Each candidate is a model of its own (the variant is fixed
// when the model is made), so each costs a load of the weights.
func (b *bencher) pickGemv(c *model.Config, w *model.Weights, candidates []webgpu.Gemv, tier shaders.Tier, pl Plan) (webgpu.Gemv, string, error) {
	var best webgpu.Gemv
	bestT := 0.0
	var table strings.Builder
	table.WriteString("| GEMV | decode tok/s |\n| --- | --- |\n")
	for _, g := range candidates {
		t, err := b.decodeTime(c, w, g, pl)
		if err != nil {
			return best, "", fmt.Errorf("%s: %w", gemvName(g, tier.Apply(gemvKey(g))), err)
		}
		if bestT == 0 || t < bestT {
			best, bestT = g, t
		}
		fmt.Fprintf(&table, "| %s | %.0f |\n", gemvName(g, tier.Apply(gemvKey(g))), pickSteps/t)
	}
	if bestT == 0 {
		return best, "", fmt.Errorf("no GEMV variant to pick from (-gemv)")
	}
	fmt.Fprintf(&table, "\npicked: %s\n", gemvName(best, tier.Apply(gemvKey(best))))
	return best, table.String(), nil
}

// decodeTime is the fastest of pickRuns greedy decodes of pickSteps steps
// of model c with GEMV variant g, in seconds.
func (b *bencher) decodeTime(c *model.Config, w *model.Weights, g webgpu.Gemv, pl Plan) (float64, error) {
	m, err := webgpu.New(b.dev, c, w, webgpu.Options{Chunk: 1, Gemv: g, Fuse: pl.Fuse, RowReread: pl.Reread, Attention: pl.Attn, AttnRoom: pl.AttnRoom,
		AttnWhole: pl.AttnWhole})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	s, err := m.NewSequence(min(c.ContextLen, pickSteps+1))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	decode := func() error { _, err := s.Greedy(1, 0, pickSteps); return err }
	// Each candidate's weights were just uploaded, while the GPU's clock
	// fell: every candidate gets the same warm-up.
	if err := b.warmUp(decode); err != nil {
		return 0, err
	}
	best := 0.0
	for range pickRuns {
		t0 := time.Now()
		if err := decode(); err != nil {
			return 0, err
		}
		if t := time.Since(t0).Seconds(); best == 0 || t < best {
			best = t
		}
	}
	return best, nil
}

// timedRuns is how many timed runs a model's figures are the median of.
const timedRuns = 5

// model puts model c (weights w) on the device, times prefill and decode on tier's kernels (the
// device's own, or with fallback its fallback tier), and returns its
// table row and, with profile, the table of its decode step by kernel.
func (b *bencher) model(name string, c *model.Config, w *model.Weights, g webgpu.Gemv, tier shaders.Tier, fallback bool, pl Plan, decode, prompt, longAt int, bw float64, profile bool) (row, prof string, err error) {
	// Steps as long as the prompt, as far as a step's buffers fit the
	// device's bindings (webgpu.Sequence.C; the logits, one row read per
	// step, no longer bound it).
	chunk := max(1, prompt)
	// With a profile on a device with timestamps, the model runs on a
	// busyDevice, which can time a decode batch's passes.
	dev := b.dev
	var busy *busyDevice
	if t, ok := gpu.TimerOf(b.dev); ok && profile {
		busy = &busyDevice{Device: b.dev, timer: t}
		dev = busy
	}
	split := 0
	if pl.Split {
		split = webgpu.SplitPasses
	}
	m, err := webgpu.New(dev, c, w, webgpu.Options{Chunk: chunk, Gemv: g, Fuse: pl.Fuse, RowReread: pl.Reread, RowAttention: b.rowAttention, Fallback: fallback, Tile: pl.Tile, Split: split, FlashFirst: pl.FlashFirst, FlashTile: pl.FlashK,
		Attention: pl.Attn, AttnRoom: pl.AttnRoom, AttnWhole: pl.AttnWhole})
	if err != nil {
		return "", "", err
	}
	defer m.Close()
	ctx := min(c.ContextLen, max(prompt, decode, longAt+decode))
	longAt = min(longAt, ctx-decode)
	s, err := m.NewSequence(ctx)
	if err != nil {
		return "", "", err
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 7))
	tokens := make([]int32, prompt)
	for i := range tokens {
		tokens[i] = int32(r.IntN(c.Vocab))
	}
	logits := make([]float32, c.Vocab)
	tPrefill, err := b.medianRuns(func() error { return s.Forward(tokens, 0, logits) })
	if err != nil {
		return "", "", fmt.Errorf("prefill: %w", err)
	}
	// The same step on a new sequence each run, timed from its Forward
	// on: what a new chat's first prompt meets (the page's bench opens a
	// session per run). Buffers WebGPU has just made are cleared and
	// readied on first use, which the runs above pay only in their warm-up.
	tFresh, err := freshRuns(m, ctx, tokens, logits)
	if err != nil {
		return "", "", fmt.Errorf("prefill on a new sequence: %w", err)
	}
	tDecode, err := b.medianRuns(func() error { _, err := s.Greedy(tokens[0], 0, decode); return err })
	if err != nil {
		return "", "", fmt.Errorf("decode: %w", err)
	}
	// The same steps drawn as a reply is by default (sample.Defaults: the
	// sampling kernels after each step's logits, with top-p).
	tSampled, err := b.medianRuns(func() error {
		_, err := s.Sample(tokens[0], 0, decode, sample.Defaults(7), 0, nil)
		return err
	})
	if err != nil {
		return "", "", fmt.Errorf("sampled decode: %w", err)
	}
	tLong, err := b.medianRuns(func() error { _, err := s.Greedy(tokens[0], longAt, decode); return err })
	if err != nil {
		return "", "", fmt.Errorf("decode from %d: %w", longAt, err)
	}
	wb := weightBytes(c)
	roof := func(from int) float64 {
		bytes := float64(wb) + kvBytesRead(c, from, decode)
		return bw / bytes
	}
	dec, long := float64(decode)/tDecode.median, float64(decode)/tLong.median
	row = fmt.Sprintf("| %s | %s | %s | %.1f MB | %d | %.0f ±%.0f%% | %.1f%% | %.0f ±%.0f%% | %.0f ±%.0f%% | %.1f%% | %.0f ±%.0f%% | %.0f ±%.0f%% |", name, tier, pl, float64(wb)/1e6, s.Dispatches(1, longAt),
		dec, tDecode.spread(), 100*dec/roof(0), float64(decode)/tSampled.median, tSampled.spread(), long, tLong.spread(), 100*long/roof(longAt), float64(prompt)/tPrefill.median, tPrefill.spread(),
		float64(prompt)/tFresh.median, tFresh.spread())
	if busy != nil {
		busy.counting, busy.busy = true, 0
		t0 := time.Now()
		_, err := s.Greedy(tokens[0], 0, decode)
		wall := time.Since(t0).Seconds()
		busy.counting = false
		if err == nil {
			err = busy.err
		}
		if err != nil {
			return "", "", fmt.Errorf("busy time: %w", err)
		}
		prof += fmt.Sprintf("\n%s, %s kernels, plan %s: a greedy batch of %d steps from 0, each pass timed: %.0f us a step of wall clock, the GPU busy %.0f us of it (%.0f%%); the rest is the GPU waiting for the host\n",
			name, tier, pl, decode, wall/float64(decode)*1e6, float64(busy.busy)/1e3/float64(decode), 100*float64(busy.busy)*1e-9/wall)
	}
	if profile {
		// A step at position decode, and one from the long position where
		// it is measured: attention's share grows with the keys.
		positions := []int{decode}
		if longAt > decode {
			positions = append(positions, longAt)
		}
		for _, pos := range positions {
			p, err := s.ProfileDecode(pos, 50)
			if err != nil {
				return "", "", fmt.Errorf("profile: %w", err)
			}
			prof += profileTable(name+", "+tier.String()+" kernels, plan "+pl.String(), pos, p)
			op, err := s.OmissionProfile(pos, omissionSteps, timedRuns)
			if err != nil {
				return "", "", fmt.Errorf("profile: %w", err)
			}
			prof += omissionTable(op)
		}
	}
	return row, prof, nil
}

// freshRuns times a Forward of tokens from position 0 on a new sequence
// of ctx positions of m: one untimed run, then timedRuns runs (it follows
// medianRuns' prefill runs, whose warm-up has the clock up); making and
// closing each sequence is not timed. The sequences
// stay open until the last run, so that each is made afresh (the model
// hands a closed one back to the next NewSequence).
func freshRuns(m *webgpu.Model, ctx int, tokens []int32, logits []float32) (runTimes, error) {
	var ts []float64
	var open []*webgpu.Sequence
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	for i := 0; i <= timedRuns; i++ {
		s, err := m.NewSequence(ctx)
		if err != nil {
			return runTimes{}, err
		}
		open = append(open, s)
		t0 := time.Now()
		if err := s.Forward(tokens, 0, logits); err != nil {
			return runTimes{}, err
		}
		if i > 0 {
			ts = append(ts, time.Since(t0).Seconds())
		}
	}
	slices.Sort(ts)
	return runTimes{median: ts[len(ts)/2], min: ts[0], max: ts[len(ts)-1]}, nil
}

// runTimes are the timed runs of one measurement.
type runTimes struct{ median, min, max float64 }

// spread is half the range of the runs in percent of their median: the
// ± a figure is printed with.
func (r runTimes) spread() float64 { return 50 * (r.max - r.min) / r.median }

// medianRuns runs f to warm up (warmUp), then timedRuns times, and
// returns the timed runs' median and range in seconds.
func (b *bencher) medianRuns(f func() error) (runTimes, error) {
	if err := b.warmUp(f); err != nil {
		return runTimes{}, err
	}
	var ts []float64
	for range timedRuns {
		t0 := time.Now()
		if err := f(); err != nil {
			return runTimes{}, err
		}
		ts = append(ts, time.Since(t0).Seconds())
	}
	slices.Sort(ts)
	return runTimes{median: ts[len(ts)/2], min: ts[0], max: ts[len(ts)-1]}, nil
}

// weightBytes is what a decode step reads of the weights: every matrix
// once (a tied embedding once, as the output head), int8 values and
// float32 row scales, and the norm vectors.
func weightBytes(c *model.Config) int64 {
	var n int64
	for _, s := range c.TensorSpecs() {
		if s.Name == model.NameEmbed && !c.TiedEmbedding {
			continue // one row is gathered
		}
		if s.Rows <= 1 {
			n += int64(s.Cols) * 4
			continue
		}
		n += int64(s.Rows) * int64(s.Cols+4)
	}
	return n
}

// kvBytesRead is the mean KV bytes one decode step reads over steps
// decoded from position from: every layer's keys and values of the
// positions it attends to (int8 rows and their scales), layers that share a
// producer's cache included, since each reads it.
func kvBytesRead(c *model.Config, from, steps int) float64 {
	row := float64(c.KVHeads) * float64(c.HeadDim+4) * 2
	var total float64
	for p := from; p < from+steps; p++ {
		for _, l := range c.Layers {
			keys := p + 1
			if l.Window > 0 {
				keys = min(keys, l.Window)
			}
			total += float64(keys) * row
		}
	}
	return total / float64(steps)
}
