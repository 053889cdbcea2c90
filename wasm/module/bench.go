//go:build wasip1

package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/wick-run/wick/bench"
	"github.com/wick-run/wick/engine/gpu"
)

// wick_bench runs package bench on the host's GPU: the measurements of
// `wick bench`, made the same way through this host's WebGPU (Dawn under
// the Node host). Input: bench.Options as JSON, over bench.Defaults (its
// "model" must be "": the module cannot read a model's shards on the GPU
// path). Output: the tables as text. Its GPU waits hand control to the host
// (status 2), as every readback does.
//
//go:wasmexport wick_bench
func wickBench(n uint32) int32 {
	return guard(func() int32 {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("bench: %w", err))
		}
		o := bench.Defaults
		o.Model = ""
		if err := json.Unmarshal(data, &o); err != nil {
			return fail(fmt.Errorf("bench: options: %w", err))
		}
		return start(func(t *task) error {
			dev := gpuDev
			if dev == nil {
				var err error
				if dev, err = gpu.OpenImported(waitHost); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				gpuDev = dev
			}
			var out bytes.Buffer
			if err := bench.Run(dev, o, &out); err != nil {
				return fmt.Errorf("bench: %w (after:\n%s)", err, out.String())
			}
			setOutput(out.Bytes())
			return nil
		})
	})
}
