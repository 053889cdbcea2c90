//go:build !js && !wasip1

package gpu

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// Options choose the native adapter and what to ask of it.
type Options struct {
	// Need is what the model needs; Open fails with a LimitError when the
	// adapter cannot give it. Zero fields ask for WebGPU's defaults
	// (128 MiB bindings, 256 MiB buffers).
	Need Limits
}

// native implements Device on wgpu-native through cogentcore/webgpu.
type native struct {
	info    Info
	inst    *wgpu.Instance
	adapter *wgpu.Adapter
	dev     *wgpu.Device
	queue   *wgpu.Queue

	// Handle tables: handle h is index h-1; freed entries are nil.
	bufs    []*wgpu.Buffer
	kernels []*wgpu.ComputePipeline
	groups  []*wgpu.BindGroup

	maps []*pendingMap
}

type pendingMap struct {
	buf          *wgpu.Buffer
	offset, size int64
	done         func([]byte, error)
	status       wgpu.BufferMapAsyncStatus
	finished     bool
}

// Open opens the first high-performance adapter of wgpu-native and a device
// with the limits opts.Need asks for.
func Open(opts Options) (Device, error) {
	// A nil descriptor: cogentcore/webgpu v0.23.0 mallocs the instance
	// extras without zeroing them, so any descriptor passes a garbage GLES
	// minor version that makes wgpu-native panic now and then.
	inst := wgpu.CreateInstance(nil)
	adapter, err := inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
	if err != nil || adapter == nil {
		inst.Release()
		if err != nil {
			return nil, fmt.Errorf("open gpu: %w: %v", ErrNoAdapter, err)
		}
		return nil, fmt.Errorf("open gpu: %w", ErrNoAdapter)
	}
	ai := adapter.GetInfo()
	name := adapterName(ai)
	al := adapter.GetLimits().Limits
	// Drivers may report "no limit" as the largest uint64 (NVIDIA's
	// maxBufferSize does): clamp, so that it does not read as negative.
	clamp := func(v uint64) int64 { return int64(min(v, math.MaxInt64)) }
	have := Limits{MaxStorageBufferBindingSize: clamp(al.MaxStorageBufferBindingSize), MaxBufferSize: clamp(al.MaxBufferSize)}
	if err := have.Check(name, opts.Need); err != nil {
		adapter.Release()
		inst.Release()
		return nil, fmt.Errorf("open gpu: %w", err)
	}
	// Ask for what is needed and no more than the defaults otherwise; never
	// pass the adapter's own limits back: MaxPushConstantSize comes back
	// uninitialised from GetLimits and makes RequestDevice fail at random.
	want := Limits{MaxStorageBufferBindingSize: max(opts.Need.MaxStorageBufferBindingSize, 128<<20),
		MaxBufferSize: max(opts.Need.MaxBufferSize, 256<<20)}
	want.MaxStorageBufferBindingSize = min(want.MaxStorageBufferBindingSize, have.MaxStorageBufferBindingSize)
	want.MaxBufferSize = min(want.MaxBufferSize, have.MaxBufferSize)
	lim := wgpu.DefaultLimits()
	lim.MaxStorageBufferBindingSize = uint64(want.MaxStorageBufferBindingSize)
	lim.MaxBufferSize = uint64(want.MaxBufferSize)
	lim.MaxPushConstantSize = 0
	dev, err := adapter.RequestDevice(&wgpu.DeviceDescriptor{Label: "wick", RequiredLimits: &wgpu.RequiredLimits{Limits: lim}})
	if err != nil {
		adapter.Release()
		inst.Release()
		return nil, fmt.Errorf("open gpu: request device from %s with maxStorageBufferBindingSize %d, maxBufferSize %d: %w",
			name, want.MaxStorageBufferBindingSize, want.MaxBufferSize, err)
	}
	// The device is created with no optional features, and its naga (about
	// wgpu 22) knows no WGSL language features (no packed int8 dot, no
	// subgroups: FINDINGS.md), so Info lists none: the native device runs
	// the portable tier. cogentcore/webgpu v0.23.0 does not expose the
	// adapter's subgroup sizes, so they stay 0.
	info := Info{Adapter: name, Limits: want, Software: ai.AdapterType == wgpu.AdapterTypeCPU}
	return &native{info: info, inst: inst, adapter: adapter, dev: dev, queue: dev.GetQueue()}, nil
}

func (n *native) Info() Info { return n.info }

func (n *native) buf(b Buffer) (*wgpu.Buffer, error) {
	if b == 0 || int(b) > len(n.bufs) || n.bufs[b-1] == nil {
		return nil, fmt.Errorf("no buffer %d", b)
	}
	return n.bufs[b-1], nil
}

func (n *native) NewBuffer(size int64, usage Usage, label string) (Buffer, error) {
	if size <= 0 || size%4 != 0 {
		return 0, fmt.Errorf("new buffer %q: size %d is not a positive multiple of 4", label, size)
	}
	if size > n.info.Limits.MaxBufferSize {
		return 0, fmt.Errorf("new buffer %q: %w", label, &LimitError{n.info.Adapter, "maxBufferSize", n.info.Limits.MaxBufferSize, size})
	}
	var u wgpu.BufferUsage
	switch {
	case usage&MapRead != 0:
		u = wgpu.BufferUsageMapRead | wgpu.BufferUsageCopyDst
	default:
		u = wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst
		if usage&Storage != 0 {
			u |= wgpu.BufferUsageStorage
		}
		if usage&Uniform != 0 {
			u |= wgpu.BufferUsageUniform
		}
	}
	b, err := n.dev.CreateBuffer(&wgpu.BufferDescriptor{Label: label, Size: uint64(size), Usage: u})
	if err != nil {
		return 0, fmt.Errorf("new buffer %q of %d bytes: %w", label, size, err)
	}
	n.bufs = append(n.bufs, b)
	return Buffer(len(n.bufs)), nil
}

func (n *native) Write(b Buffer, offset int64, data []byte) error {
	wb, err := n.buf(b)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if offset%4 != 0 || len(data)%4 != 0 {
		return fmt.Errorf("write to buffer %d: offset %d and length %d must be multiples of 4", b, offset, len(data))
	}
	if len(data) == 0 {
		return nil
	}
	if err := n.queue.WriteBuffer(wb, uint64(offset), data); err != nil {
		return fmt.Errorf("write to buffer %d: %w", b, err)
	}
	return nil
}

func (n *native) NewKernel(src KernelSource) (Kernel, error) {
	mod, err := n.dev.CreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: src.Label, WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: src.WGSL}})
	if err != nil {
		return 0, fmt.Errorf("kernel %s: compile WGSL: %w", src.Label, err)
	}
	defer mod.Release()
	p, err := n.dev.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{Label: src.Label,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: src.Entry}})
	if err != nil {
		return 0, fmt.Errorf("kernel %s: create pipeline for entry point %q: %w", src.Label, src.Entry, err)
	}
	n.kernels = append(n.kernels, p)
	return Kernel(len(n.kernels)), nil
}

func (n *native) NewBindGroup(k Kernel, bindings []Binding) (BindGroup, error) {
	if k == 0 || int(k) > len(n.kernels) || n.kernels[k-1] == nil {
		return 0, fmt.Errorf("new bind group: no kernel %d", k)
	}
	p := n.kernels[k-1]
	entries := make([]wgpu.BindGroupEntry, len(bindings))
	for i, b := range bindings {
		wb, err := n.buf(b.Buffer)
		if err != nil {
			return 0, fmt.Errorf("new bind group for kernel %d, binding %d: %w", k, b.Slot, err)
		}
		size := uint64(b.Size)
		if size == 0 {
			size = wb.GetSize() - uint64(b.Offset)
		}
		entries[i] = wgpu.BindGroupEntry{Binding: b.Slot, Buffer: wb, Offset: uint64(b.Offset), Size: size}
	}
	layout := p.GetBindGroupLayout(0)
	defer layout.Release()
	g, err := n.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: layout, Entries: entries})
	if err != nil {
		return 0, fmt.Errorf("new bind group for kernel %d: %w", k, err)
	}
	n.groups = append(n.groups, g)
	return BindGroup(len(n.groups)), nil
}

func (n *native) Run(cmds []byte) error {
	enc, err := n.dev.CreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer func() {
		if enc != nil {
			enc.Release()
		}
	}()
	var pass *wgpu.ComputePassEncoder
	dispatches := 0 // in enc
	// submit finishes enc, submits it and starts the next (SplitDispatches).
	submit := func() error {
		cb, err := enc.Finish(nil)
		enc.Release()
		enc = nil
		if err != nil {
			return fmt.Errorf("finish: %w", err)
		}
		n.queue.Submit(cb)
		cb.Release()
		if enc, err = n.dev.CreateCommandEncoder(nil); err != nil {
			return err
		}
		dispatches = 0
		return nil
	}
	endPass := func() error {
		if pass == nil {
			return nil
		}
		err := pass.End()
		// Released before Finish: wgpu-native v22 otherwise fails the encoder.
		pass.Release()
		pass = nil
		return err
	}
	err = Decode(cmds, func(c Command) error {
		switch c.Op {
		case OpWrite:
			return n.Write(c.Buffer, c.Offset, c.Data)
		case OpDispatch:
			if c.Kernel == 0 || int(c.Kernel) > len(n.kernels) || n.kernels[c.Kernel-1] == nil {
				return fmt.Errorf("dispatch: no kernel %d", c.Kernel)
			}
			if c.Group == 0 || int(c.Group) > len(n.groups) || n.groups[c.Group-1] == nil {
				return fmt.Errorf("dispatch of kernel %d: no bind group %d", c.Kernel, c.Group)
			}
			if pass == nil {
				if dispatches >= SplitDispatches {
					if err := submit(); err != nil {
						return err
					}
				}
				pass = enc.BeginComputePass(nil)
			}
			dispatches++
			pass.SetPipeline(n.kernels[c.Kernel-1])
			pass.SetBindGroup(0, n.groups[c.Group-1], nil)
			pass.DispatchWorkgroups(c.X, c.Y, c.Z)
		case OpCopy:
			if err := endPass(); err != nil {
				return err
			}
			src, err := n.buf(c.Src)
			if err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			dst, err := n.buf(c.Dst)
			if err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			return enc.CopyBufferToBuffer(src, uint64(c.SrcOff), dst, uint64(c.DstOff), uint64(c.Size))
		}
		return nil
	})
	if err2 := endPass(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("run command list: %w", err)
	}
	cb, err := enc.Finish(nil)
	if err != nil {
		return fmt.Errorf("run command list: finish: %w", err)
	}
	defer cb.Release()
	n.queue.Submit(cb)
	return nil
}

func (n *native) Map(b Buffer, offset, size int64, done func([]byte, error)) error {
	wb, err := n.buf(b)
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	pm := &pendingMap{buf: wb, offset: offset, size: size, done: done}
	if err := mapRead(n.dev, pm); err != nil {
		return fmt.Errorf("map buffer %d: %w", b, err)
	}
	n.maps = append(n.maps, pm)
	return nil
}

func (n *native) Poll(wait bool) error {
	if wait {
		n.waitIdle()
	} else {
		n.dev.Poll(false, nil)
	}
	// Callbacks only record the status; the data is copied out and the
	// buffer unmapped here, outside wgpu's callback.
	var errs []error
	rest := n.maps[:0]
	for _, pm := range n.maps {
		if !pm.finished {
			rest = append(rest, pm)
			continue
		}
		if pm.status != wgpu.BufferMapAsyncStatusSuccess {
			pm.done(nil, fmt.Errorf("map buffer: %s", pm.status))
			continue
		}
		pm.done(pm.buf.GetMappedRange(uint(pm.offset), uint(pm.size)), nil)
		if err := pm.buf.Unmap(); err != nil {
			errs = append(errs, err)
		}
	}
	n.maps = rest
	return errors.Join(errs...)
}

// waitIdle returns once every submitted command buffer has run, and runs
// the callbacks of the work that finished.
//
// It polls rather than asking wgpu-native to wait: the wgpu-core it links
// waits on its fence for at most 5 s (CLEANUP_WAIT_MS; wgpu 22 waits 60 s)
// and then, ignoring the timeout, treats the submission as finished. It
// fires the map callbacks over buffers the GPU has not written yet and
// recycles the command buffers, buffers and bind groups the driver is
// still running. lavapipe, which runs submissions on a queue thread once
// they overlap, then read its commands from freed memory and crashed (a
// pipeline and a descriptor-set pointer that glibc's allocator had already
// linked into its free lists). That was the suite's crash: one command
// buffer ran for more than 5 s (a Gemma-3-270M-shaped prefill step takes
// 5-30 s on lavapipe; a first step also compiles its kernels on the queue
// thread, slower still when the 2 cores are busy).
// TestWaitOutlastsWgpuTimeout reproduces it. A poll without wait reads how
// far the fence has got and frees only what that covers, however long a
// command buffer runs.
//
// The sleeps grow from 10 us to 1 ms: a short wait costs little more than
// the blocking one did, and a long one wakes the CPU at most a thousand
// times a second.
//
// With readbacks outstanding it returns once they are all back, as
// Device.Poll says: the work submitted after them (a decode batch
// submitted ahead, see engine.BatchPipeliner) may still run.
func (n *native) waitIdle() {
	pause := 10 * time.Microsecond
	for !n.dev.Poll(false, nil) && !n.mapsBack() {
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// mapsBack reports whether readbacks are outstanding and all have come back.
func (n *native) mapsBack() bool {
	for _, pm := range n.maps {
		if !pm.finished {
			return false
		}
	}
	return len(n.maps) > 0
}

func (n *native) FreeBuffer(b Buffer) {
	if wb, err := n.buf(b); err == nil {
		wb.Destroy()
		wb.Release()
		n.bufs[b-1] = nil
	}
}

func (n *native) FreeKernel(k Kernel) {
	if k != 0 && int(k) <= len(n.kernels) && n.kernels[k-1] != nil {
		n.kernels[k-1].Release()
		n.kernels[k-1] = nil
	}
}

func (n *native) FreeBindGroup(g BindGroup) {
	if g != 0 && int(g) <= len(n.groups) && n.groups[g-1] != nil {
		n.groups[g-1].Release()
		n.groups[g-1] = nil
	}
}

func (n *native) Close() error {
	// wgpu-native frees a device's command buffers and memory at once when
	// it is released, whatever still runs: let submitted work finish first.
	n.waitIdle()
	for i := range n.groups {
		n.FreeBindGroup(BindGroup(i + 1))
	}
	for i := range n.kernels {
		n.FreeKernel(Kernel(i + 1))
	}
	for i := range n.bufs {
		n.FreeBuffer(Buffer(i + 1))
	}
	n.queue.Release()
	n.dev.Release()
	n.adapter.Release()
	n.inst.Release()
	return nil
}

// adapterName describes an adapter for people. wgpu-native (about 22)
// leaves AdapterInfo.Name as the PCI device id ("0x2330") on Vulkan, so the
// vendor is named from its PCI id and the driver's description added.
func adapterName(ai wgpu.AdapterInfo) string {
	vendors := map[uint32]string{0x10de: "NVIDIA", 0x1002: "AMD", 0x8086: "Intel", 0x106b: "Apple", 0x13b5: "ARM", 0x5143: "Qualcomm", 0x10005: "Mesa"}
	name := ai.Name
	if strings.HasPrefix(name, "0x") {
		vendor, ok := vendors[ai.VendorId]
		if !ok {
			vendor = fmt.Sprintf("vendor %#x", ai.VendorId)
		}
		name = fmt.Sprintf("%s device %#x", vendor, ai.DeviceId)
		if ai.AdapterType == wgpu.AdapterTypeCPU && ai.DriverDescription != "" {
			name = ai.DriverDescription // "llvmpipe (LLVM 15.0.6, 256 bits)"
		} else if ai.DriverDescription != "" {
			name += ", driver " + ai.DriverDescription
		}
	}
	return fmt.Sprintf("%s [%s, %s]", name, ai.AdapterType, ai.BackendType)
}
