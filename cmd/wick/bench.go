//go:build !js && !wasip1

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/wick-run/wick/bench"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/gpu/dawn"
)

func init() {
	commands["bench"] = command{"measure GPU bandwidth, the int8 GEMV, decode and prefill speed", runBench}
}

// wick bench runs package bench on the native device; the Node host runs
// the same measurements on Dawn (node/host.mjs bench).
func runBench(args []string) error {
	d := bench.Defaults
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := bench.Options{}
	fs.StringVar(&o.Model, "model", d.Model, "a model directory measured beside the Gemma shapes (empty: none)")
	fs.StringVar(&o.Shapes, "shapes", d.Shapes, "Gemma 3 shapes with random int8 weights: "+strings.Join(bench.Shapes, ", ")+" (empty: none)")
	fs.IntVar(&o.MiB, "mib", d.MiB, "MiB read by the bandwidth and GEMV measurements (capped by the device's limits)")
	fs.IntVar(&o.Decode, "decode", d.Decode, "decode steps timed (tg)")
	fs.IntVar(&o.Prompt, "prompt", d.Prompt, "prefill tokens timed (pp)")
	fs.IntVar(&o.Long, "long", d.Long, "also time decode from this position (0: no)")
	fs.StringVar(&o.Gemv, "gemv", d.Gemv, "GEMV variants WGxTPR, f for float32 FMA products; the fastest runs the models")
	fs.StringVar(&o.Configs, "configs", d.Configs, "also the architecture table's variants (bench/ARCHITECTURE.md) with random weights: "+
		strings.Join(bench.ArchVariants, ",")+", or all")
	fs.StringVar(&o.Plans, "plans", d.Plans, "decode plans each model runs with, side by side: comma-separated folds joined by + (none, epi: gate|up's gated epilogue, the default; norm, gated, attn, all, gN: products with a prologue over at least N workgroups), each optionally +reread (the row kernels that reread their row in every pass rather than hold it in registers, the default), +attn-group-prep, +attn-group or +attn-split (the decode attention path; default group-prep) and +roomN (its partial states per head at most; default 64), +wholeN (int8 models of one KV head: decode attention over spans of up to N keys in one workgroup that quantises its output itself, with no merge; the default none), +tile64 or +tile128 (the prefill product's tile: 64x64 with its loops written out, MATRIX on the matrix tier; 128x128), +split (prefill products of few rows split along their columns, on tile64's tile with it), +flash-first (prefill attention's first variant, not its register one, the default) or +flash32 (the register one with tiles of 32 keys); e.g. none,epi,epi+reread,norm+gated,all+g64,attn-split,attn-group+room128")
	fs.Float64Var(&o.Warm, "warm", d.Warm, "seconds each timed figure first repeats its work, untimed, so that the GPU's clock has ramped up (0: once)")
	fs.BoolVar(&o.RowAttention, "row-attention", false, "plan prefill attention per (query head, token) instead of flash (webgpu.Options.RowAttention)")
	fs.BoolVar(&o.Profile, "profile", false, "also print each model's decode step by kernel: GPU timestamp queries on Dawn (-dawn); wall clock natively, each dispatch repeated alone (cogentcore/webgpu v0.23.0 has no compute-pass timestampWrites)")
	onDawn := fs.Bool("dawn", false, "run on Dawn (Chrome's WebGPU, through engine/gpu/dawn and node) instead of wgpu-native")
	experimental := fs.Bool("experimental", false, "with -dawn: also offer the adapter's chromium-experimental-* features (subgroup matrices: the prefill product on tensor cores)")
	writeShape := fs.String("write-shape", "", "write a model directory with random int8 weights (as measured) to the path given after the flags, and stop: NAME is a Gemma 3 shape or a model directory whose architecture it keeps")
	tok := fs.String("tokenizer", "testdata/tokenizer/tokenizer.model", "with -write-shape: the SentencePiece tokenizer the model directory gets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *writeShape != "" {
		if fs.NArg() != 1 {
			return errors.New("bench -write-shape NAME DIR: give the directory to write")
		}
		if err := bench.WriteShape(fs.Arg(0), *writeShape, *tok); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote the %s shape to %s\n", *writeShape, fs.Arg(0))
		return nil
	}
	if *onDawn {
		// Dawn's device always gets the adapter's largest bindings.
		dev, err := dawn.Open(dawn.Options{Timestamps: o.Profile, Experimental: *experimental})
		if err != nil {
			return err
		}
		defer dev.Close()
		return bench.Run(dev, o, os.Stdout)
	}
	// Ask for 1 GiB bindings where the adapter has them; else the defaults.
	dev, err := gpu.Open(gpu.Options{Need: gpu.Limits{MaxStorageBufferBindingSize: 1 << 30, MaxBufferSize: 1 << 30}})
	var le *gpu.LimitError
	if errors.As(err, &le) {
		dev, err = gpu.Open(gpu.Options{})
	}
	if err != nil {
		return err
	}
	defer dev.Close()
	return bench.Run(dev, o, os.Stdout)
}
