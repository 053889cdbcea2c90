// Package gpurecord is a gpu.Device that runs nothing and records the
// kernels made on it, so that tests can plan models of any size against
// any device's limits without a GPU: engine/webgpu's test of the planned
// kernel variants uses it. Buffers hold no data; Map hands back zeros.
package gpurecord

import (
	"fmt"

	"github.com/wick-run/wick/engine/gpu"
)

// Device records kernels. The zero value is not usable: see New.
type Device struct {
	info    gpu.Info
	sizes   map[gpu.Buffer]int64 // live buffers and their sizes
	kernels map[string]gpu.KernelSource
	next    uint32
	pending []func()
}

// New returns a device with the given limits, named adapter.
func New(adapter string, lim gpu.Limits) *Device {
	return &Device{info: gpu.Info{Adapter: adapter, Limits: lim}, sizes: map[gpu.Buffer]int64{}, kernels: map[string]gpu.KernelSource{}}
}

// Offer makes d report WebGPU features and WGSL language features, as a
// device with a higher tier of kernels does (shaders.TierOf), and returns d.
func (d *Device) Offer(features, wgsl []string) *Device {
	d.info.Features, d.info.WGSL = features, wgsl
	return d
}

// Kernels returns every kernel made on d since New, by label.
func (d *Device) Kernels() map[string]gpu.KernelSource { return d.kernels }

func (d *Device) handle() uint32 {
	d.next++
	return d.next
}

func (d *Device) Info() gpu.Info { return d.info }

// NewBuffer checks size against the limits as a real device does.
func (d *Device) NewBuffer(size int64, usage gpu.Usage, label string) (gpu.Buffer, error) {
	if size <= 0 || size%4 != 0 {
		return 0, fmt.Errorf("new buffer %q: size %d is not a positive multiple of 4", label, size)
	}
	if size > d.info.Limits.MaxBufferSize {
		return 0, fmt.Errorf("new buffer %q: %w", label, &gpu.LimitError{Adapter: d.info.Adapter, Limit: "maxBufferSize",
			Have: d.info.Limits.MaxBufferSize, Need: size})
	}
	b := gpu.Buffer(d.handle())
	d.sizes[b] = size
	return b, nil
}

func (d *Device) Write(b gpu.Buffer, offset int64, data []byte) error {
	size, ok := d.sizes[b]
	if !ok {
		return fmt.Errorf("write: buffer %d does not exist", b)
	}
	if offset%4 != 0 || len(data)%4 != 0 || offset+int64(len(data)) > size {
		return fmt.Errorf("write: %d bytes at %d into buffer %d of %d bytes", len(data), offset, b, size)
	}
	return nil
}

// NewKernel records src under its label.
func (d *Device) NewKernel(src gpu.KernelSource) (gpu.Kernel, error) {
	d.kernels[src.Label] = src
	return gpu.Kernel(d.handle()), nil
}

// NewBindGroup checks that each binding lies within its buffer and the
// storage binding limit.
func (d *Device) NewBindGroup(k gpu.Kernel, bindings []gpu.Binding) (gpu.BindGroup, error) {
	for _, b := range bindings {
		size, ok := d.sizes[b.Buffer]
		if !ok {
			return 0, fmt.Errorf("bind group: slot %d: buffer %d does not exist", b.Slot, b.Buffer)
		}
		n := b.Size
		if n == 0 {
			n = size - b.Offset
		}
		if b.Offset%256 != 0 || b.Offset+n > size || n > d.info.Limits.MaxStorageBufferBindingSize {
			return 0, fmt.Errorf("bind group: slot %d: %d bytes at %d of buffer %d (%d bytes; binding limit %d)",
				b.Slot, n, b.Offset, b.Buffer, size, d.info.Limits.MaxStorageBufferBindingSize)
		}
	}
	return gpu.BindGroup(d.handle()), nil
}

func (d *Device) Run(cmds []byte) error { return nil }

// Map hands back size zero bytes in the next Poll.
func (d *Device) Map(b gpu.Buffer, offset, size int64, done func(data []byte, err error)) error {
	if s, ok := d.sizes[b]; !ok || offset+size > s {
		return fmt.Errorf("map: %d bytes at %d of buffer %d", size, offset, b)
	}
	d.pending = append(d.pending, func() { done(make([]byte, size), nil) })
	return nil
}

func (d *Device) Poll(wait bool) error {
	p := d.pending
	d.pending = nil
	for _, f := range p {
		f()
	}
	return nil
}

func (d *Device) FreeBuffer(b gpu.Buffer)     { delete(d.sizes, b) }
func (d *Device) FreeKernel(gpu.Kernel)       {}
func (d *Device) FreeBindGroup(gpu.BindGroup) {}
func (d *Device) Close() error                { return nil }

var _ gpu.Device = (*Device)(nil)
