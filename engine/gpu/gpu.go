// Package gpu is wick's boundary to a GPU: a small compute interface of
// buffers, kernels (WGSL compute pipelines), bind groups and one call that
// replays a recorded command list into one command buffer. Every host
// implements it: natively on wgpu-native (this package, build tag
// !js && !wasip1), and later in the browser, where a wasm module crosses it
// through a few //go:wasmimport functions that JS implements on
// navigator.gpu. That is why everything crossing it is an integer handle or
// bytes: resources are numbered, and a step is the byte-encoded command list
// of encoding.go.
package gpu

import (
	"errors"
	"fmt"
	"slices"
)

// Handles name GPU objects across the boundary; 0 is never a valid handle.
type (
	Buffer    uint32
	Kernel    uint32
	BindGroup uint32
)

// Usage says what a buffer is for. Every buffer may be written from the
// host and copied to and from (CopySrc|CopyDst are implied).
type Usage uint32

const (
	// Storage buffers are read or written by kernels.
	Storage Usage = 1 << iota
	// Uniform buffers hold kernel parameters.
	Uniform
	// MapRead buffers are copy targets the host reads back (see Device.Map);
	// they can be nothing else.
	MapRead
)

// Limits are the device limits a model's buffers depend on.
type Limits struct {
	MaxStorageBufferBindingSize int64 `json:"maxStorageBufferBindingSize"` // largest range one storage binding may cover
	MaxBufferSize               int64 `json:"maxBufferSize"`               // largest buffer
}

// Info describes an opened device. It crosses the wasm boundary as JSON
// (the info import, wasm/ABI.md), hence the tags.
type Info struct {
	Adapter string `json:"adapter"` // adapter name and backend, for notices and benchmarks
	Limits  Limits `json:"limits"`  // the limits the device was created with
	// Software is true for an adapter that runs on the CPU (lavapipe,
	// SwiftShader): correct, but no faster than wick's own CPU backend.
	Software bool `json:"software,omitempty"`
	// Features are the WebGPU features the device was created with
	// (GPUFeatureName strings such as "subgroups", "timestamp-query"):
	// what its kernels may use, not all the adapter offers. A host that
	// withholds features (to test the fallback tier) lists none.
	Features []string `json:"features,omitempty"`
	// WGSL are the WGSL language features the device's compiler accepts
	// (navigator.gpu.wgslLanguageFeatures, such as
	// "packed_4x8_integer_dot_product"), under the same withholding.
	WGSL []string `json:"wgsl,omitempty"`
	// SubgroupMinSize and SubgroupMaxSize bound the subgroup sizes the
	// adapter may run kernels with (0 when it has no subgroups). Kernels
	// must be correct for every size in between, never assume one.
	SubgroupMinSize int `json:"subgroupMinSize,omitempty"`
	SubgroupMaxSize int `json:"subgroupMaxSize,omitempty"`
	// SubgroupMatrix lists the subgroup-matrix shapes the device offers
	// (chromium-experimental-subgroup-matrix, only where the host opts
	// into experimental features).
	SubgroupMatrix []SubgroupMatrixConfig `json:"subgroupMatrix,omitempty"`
}

// SubgroupMatrixConfig is one shape of subgroup-matrix product the device
// offers: an M x K left by a K x N right into an M x N result, of the
// component and result types named as WGSL names them ("i8", "i32", "f16").
type SubgroupMatrixConfig struct {
	M         int    `json:"M"`
	N         int    `json:"N"`
	K         int    `json:"K"`
	Component string `json:"component"`
	Result    string `json:"result"`
}

// Has reports whether the device was created with WebGPU feature f.
func (i Info) Has(f string) bool { return slices.Contains(i.Features, f) }

// HasWGSL reports whether the device's compiler accepts WGSL language
// feature f.
func (i Info) HasWGSL(f string) bool { return slices.Contains(i.WGSL, f) }

// Binding is one entry of a bind group: a range of a buffer bound at
// @binding(Slot) of group 0. Size 0 binds from Offset to the buffer's end.
// Offset must be a multiple of 256 (minStorageBufferOffsetAlignment).
type Binding struct {
	Slot   uint32
	Buffer Buffer
	Offset int64
	Size   int64
}

// KernelSource is one compute entry point of a WGSL module. Pipelines use
// the layout WGSL implies (group 0 only), so bind groups are made per kernel.
type KernelSource struct {
	Label string // names the kernel in errors
	WGSL  string
	Entry string
}

// Device is a GPU that runs wick's kernels. Calls are made from one
// goroutine at a time.
type Device interface {
	Info() Info
	// NewBuffer makes a zero-filled buffer of size bytes (a multiple of 4).
	NewBuffer(size int64, usage Usage, label string) (Buffer, error)
	// Write copies data into b at offset (both multiples of 4) before any
	// work submitted after it.
	Write(b Buffer, offset int64, data []byte) error
	// NewKernel compiles a WGSL compute entry point. Compile and pipeline
	// errors carry the WGSL line.
	NewKernel(src KernelSource) (Kernel, error)
	// NewBindGroup binds buffer ranges to k's bindings.
	NewBindGroup(k Kernel, bindings []Binding) (BindGroup, error)
	// Run replays a command list (see Encoder) into one command buffer, or
	// a long one into several in order (SplitDispatches), and submits it.
	// It does not wait for the GPU.
	Run(cmds []byte) error
	// Map reads size bytes of a MapRead buffer at offset (multiple of 8)
	// once all submitted work is done, and calls done with them (the slice
	// is only valid during the call). done runs inside Poll, callbacks in
	// the order of the Map calls. A buffer has at most one Map outstanding
	// (WebGPU's mapAsync refuses a second while the first is pending).
	Map(b Buffer, offset, size int64, done func(data []byte, err error)) error
	// Poll runs the callbacks of finished work; with wait, it first blocks
	// until every outstanding Map has completed, or until all submitted
	// work is done when none is outstanding. (Work submitted after the
	// last Map may still run: that is how a decode batch submitted ahead
	// runs while the host takes the picks of the one before it.)
	Poll(wait bool) error
	// FreeBuffer, FreeKernel and FreeBindGroup release one object.
	FreeBuffer(Buffer)
	FreeKernel(Kernel)
	FreeBindGroup(BindGroup)
	// Close releases the device and everything made on it.
	Close() error
}

// ErrNoAdapter is returned by Open when no GPU adapter is found.
var ErrNoAdapter = errors.New("no WebGPU adapter found (on Debian, install mesa-vulkan-drivers and libvulkan1 for the lavapipe CPU adapter; the Makefile's deps target does)")

// LimitError says that the adapter cannot give a limit the model needs.
type LimitError struct {
	Adapter string
	Limit   string // the WebGPU limit's name, e.g. maxStorageBufferBindingSize
	Have    int64
	Need    int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("adapter %s: %s is %d bytes, the model needs %d", e.Adapter, e.Limit, e.Have, e.Need)
}

// Check reports the first limit of need that have does not reach.
func (have Limits) Check(adapter string, need Limits) error {
	if need.MaxStorageBufferBindingSize > have.MaxStorageBufferBindingSize {
		return &LimitError{adapter, "maxStorageBufferBindingSize", have.MaxStorageBufferBindingSize, need.MaxStorageBufferBindingSize}
	}
	if need.MaxBufferSize > have.MaxBufferSize {
		return &LimitError{adapter, "maxBufferSize", have.MaxBufferSize, need.MaxBufferSize}
	}
	return nil
}

// ReadSync copies size bytes of b at offset into a fresh MapRead buffer,
// waits for the GPU and returns them. It is for tests and tools: the
// decode loop never waits.
func ReadSync(d Device, b Buffer, offset, size int64) ([]byte, error) {
	padded := (size + 3) &^ 3
	st, err := d.NewBuffer(padded, MapRead, "readback")
	if err != nil {
		return nil, fmt.Errorf("read buffer %d: %w", b, err)
	}
	defer d.FreeBuffer(st)
	var e Encoder
	e.Copy(b, offset, st, 0, padded)
	if err := d.Run(e.Bytes()); err != nil {
		return nil, fmt.Errorf("read buffer %d: %w", b, err)
	}
	var out []byte
	var mapErr error
	called := false
	if err := d.Map(st, 0, padded, func(data []byte, err error) {
		out, mapErr, called = append([]byte(nil), data[:size]...), err, true
	}); err != nil {
		return nil, fmt.Errorf("read buffer %d: %w", b, err)
	}
	if err := d.Poll(true); err != nil {
		return nil, fmt.Errorf("read buffer %d: %w", b, err)
	}
	if !called {
		return nil, fmt.Errorf("read buffer %d: map callback did not run after the queue drained", b)
	}
	return out, mapErr
}
