//go:build !js && !wasip1

package webgpu

import (
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
)

// Importing this package makes engine.Load offer the native WebGPU backend
// (and pick it by default where an adapter exists).
func init() { engine.Register("webgpu", open) }

// backend adapts *Model to engine.Backend and owns the device it opened.
type backend struct {
	*Model
	dev gpu.Device
}

func open(cfg *model.Config, w *model.Weights, explicit bool) (engine.Backend, error) {
	// Default limits: tensors above the 128 MiB binding size are split by
	// rows, which works on every adapter, browsers' defaults included.
	dev, err := gpu.Open(gpu.Options{})
	if err != nil {
		return nil, err
	}
	if info := dev.Info(); info.Software && !explicit {
		// A CPU rasteriser (lavapipe) runs the same kernels about half as
		// fast as engine/cpu on the same cores.
		dev.Close()
		return nil, fmt.Errorf("adapter %s runs on the CPU: %w", info.Adapter, engine.ErrPreferCPU)
	}
	m, err := New(dev, cfg, w, Options{})
	if err != nil {
		dev.Close()
		return nil, err
	}
	return backend{m, dev}, nil
}

func (b backend) NewSequence(context int) (engine.Sequence, error) {
	return b.Model.NewSequence(context)
}

func (b backend) Close() error {
	err := b.Model.Close()
	b.dev.Close()
	return err
}
