//go:build wasip1

package gpu

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// The wick_gpu imports: the GPU boundary as a wasm module sees it. The host
// (JS on navigator.gpu in a browser, wasm/host's Go functions under wazero)
// implements them; wasm/ABI.md is their contract. Every import that can fail
// returns a negative number and keeps a message for last_error. Pointers are
// offsets into the module's memory, valid only during the call.

//go:wasmimport wick_gpu info
func gpuInfo(ptr unsafe.Pointer, cap uint32) int32

//go:wasmimport wick_gpu create_buffer
func gpuCreateBuffer(size int64, usage uint32, label unsafe.Pointer, labelLen uint32) int32

//go:wasmimport wick_gpu write_buffer
func gpuWriteBuffer(buf uint32, offset int64, data unsafe.Pointer, n uint32) int32

//go:wasmimport wick_gpu create_kernel
func gpuCreateKernel(wgsl unsafe.Pointer, wgslLen uint32, entry unsafe.Pointer, entryLen uint32, label unsafe.Pointer, labelLen uint32) int32

//go:wasmimport wick_gpu create_bind_group
func gpuCreateBindGroup(kernel uint32, entries unsafe.Pointer, count uint32) int32

//go:wasmimport wick_gpu run
func gpuRun(cmds unsafe.Pointer, n uint32) int32

//go:wasmimport wick_gpu run_timed
func gpuRunTimed(cmds unsafe.Pointer, n uint32, req uint32, by uint32) int32

//go:wasmimport wick_gpu map
func gpuMap(buf uint32, offset, size int64, req uint32) int32

//go:wasmimport wick_gpu fill
func gpuFill(buf uint32, offset int64, shard unsafe.Pointer, shardLen uint32, shardOffset, length int64) int32

//go:wasmimport wick_gpu free
func gpuFree(kind, handle uint32)

//go:wasmimport wick_gpu last_error
func gpuLastError(ptr unsafe.Pointer, cap uint32) int32

// Kinds of object for the free import.
const (
	freeBuffer    = 1
	freeKernel    = 2
	freeBindGroup = 3
)

// BindingBytes is the size of one bind group entry as create_bind_group
// reads it: slot u32, buffer u32, offset u64, size u64, little-endian.
const BindingBytes = 24

// Imported is the Device of a wasm module: every call crosses into the
// host through the wick_gpu imports. Readbacks complete asynchronously:
// Map only asks the host to start one; the host hands the bytes back with
// Deliver (from an export) while the module waits in Poll(true), which
// calls the wait function given to OpenImported. That function returns
// control to the host (see wasm/module), so nothing in the module blocks
// on the GPU.
type Imported struct {
	info    Info
	wait    func() error
	nextReq uint32
	maps    []*importedMap // outstanding and delivered readbacks, in request order
	filled  bool           // fills were issued since the last wait
	ran     bool           // command lists were submitted since the last wait
	fence   [2]Buffer      // a word of storage and its MapRead twin, for Poll(true) with nothing to read
	scratch []byte
	// spare holds delivery buffers whose callbacks have run, for the next
	// readbacks: a step's logits (1 MB of a 262k vocabulary) and a prefix
	// cache snapshot (megabytes) would otherwise be a fresh allocation
	// each, garbage the collector then works through inside a prompt's
	// time to first token.
	spare [][]byte
}

type importedMap struct {
	req       uint32
	done      func([]byte, error)
	delivered bool
	data      []byte
	err       error
}

// OpenImported returns the host's device, or an error wrapping ErrNoAdapter
// when the host has none. wait is called by Poll(true) while readbacks or
// fills are outstanding; it must return once the host has delivered every
// readback it was asked for and written every fill, with an error when the
// host reports an asynchronous failure (see HostError): the host hands its
// status over as it resumes the module, never through an import of its own.
func OpenImported(wait func() error) (*Imported, error) {
	buf := make([]byte, 1024)
	for {
		n := gpuInfo(unsafe.Pointer(&buf[0]), uint32(len(buf)))
		if n < 0 {
			return nil, fmt.Errorf("open gpu: %w", ErrNoAdapter)
		}
		if int(n) > len(buf) {
			buf = make([]byte, n)
			continue
		}
		d := &Imported{wait: wait}
		if err := json.Unmarshal(buf[:n], &d.info); err != nil {
			return nil, fmt.Errorf("open gpu: the host's info is not gpu.Info as JSON: %w", err)
		}
		if d.info.Limits.MaxStorageBufferBindingSize <= 0 || d.info.Limits.MaxBufferSize <= 0 {
			return nil, fmt.Errorf("open gpu: the host's info has no limits: %s", buf[:n])
		}
		return d, nil
	}
}

// HostError is the host's last failure, code being what the host
// returned: the module's wait reports asynchronous failures with it.
func HostError(code int32) error { return hostError(code) }

// hostError fetches the message of the host's last failure.
func hostError(code int32) error {
	buf := make([]byte, 512)
	n := gpuLastError(unsafe.Pointer(&buf[0]), uint32(len(buf)))
	if int(n) > len(buf) {
		buf = make([]byte, n)
		n = gpuLastError(unsafe.Pointer(&buf[0]), uint32(len(buf)))
	}
	if n <= 0 {
		return fmt.Errorf("host gpu error %d", code)
	}
	return errors.New(string(buf[:min(int(n), len(buf))]))
}

// ptr returns a pointer to b's bytes, or nil for an empty slice.
func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func strPtr(s string) unsafe.Pointer {
	if s == "" {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func (d *Imported) Info() Info { return d.info }

func (d *Imported) NewBuffer(size int64, usage Usage, label string) (Buffer, error) {
	if size <= 0 || size%4 != 0 {
		return 0, fmt.Errorf("new buffer %q: size %d is not a positive multiple of 4", label, size)
	}
	h := gpuCreateBuffer(size, uint32(usage), strPtr(label), uint32(len(label)))
	if h <= 0 {
		return 0, fmt.Errorf("new buffer %q of %d bytes: %w", label, size, hostError(h))
	}
	return Buffer(h), nil
}

func (d *Imported) Write(b Buffer, offset int64, data []byte) error {
	if offset%4 != 0 || len(data)%4 != 0 {
		return fmt.Errorf("write to buffer %d: offset %d and length %d must be multiples of 4", b, offset, len(data))
	}
	if len(data) == 0 {
		return nil
	}
	if r := gpuWriteBuffer(uint32(b), offset, ptr(data), uint32(len(data))); r < 0 {
		return fmt.Errorf("write to buffer %d: %w", b, hostError(r))
	}
	return nil
}

func (d *Imported) NewKernel(src KernelSource) (Kernel, error) {
	h := gpuCreateKernel(strPtr(src.WGSL), uint32(len(src.WGSL)), strPtr(src.Entry), uint32(len(src.Entry)),
		strPtr(src.Label), uint32(len(src.Label)))
	if h <= 0 {
		return 0, fmt.Errorf("kernel %s: %w", src.Label, hostError(h))
	}
	return Kernel(h), nil
}

func (d *Imported) NewBindGroup(k Kernel, bindings []Binding) (BindGroup, error) {
	d.scratch = d.scratch[:0]
	for _, b := range bindings {
		if b.Offset < 0 || b.Size < 0 {
			return 0, fmt.Errorf("new bind group for kernel %d, binding %d: negative offset or size", k, b.Slot)
		}
		d.scratch = binary.LittleEndian.AppendUint32(d.scratch, b.Slot)
		d.scratch = binary.LittleEndian.AppendUint32(d.scratch, uint32(b.Buffer))
		d.scratch = binary.LittleEndian.AppendUint64(d.scratch, uint64(b.Offset))
		d.scratch = binary.LittleEndian.AppendUint64(d.scratch, uint64(b.Size))
	}
	h := gpuCreateBindGroup(uint32(k), ptr(d.scratch), uint32(len(bindings)))
	if h <= 0 {
		return 0, fmt.Errorf("new bind group for kernel %d: %w", k, hostError(h))
	}
	return BindGroup(h), nil
}

func (d *Imported) Run(cmds []byte) error {
	if len(cmds) == 0 {
		return nil
	}
	if r := gpuRun(ptr(cmds), uint32(len(cmds))); r < 0 {
		return fmt.Errorf("run command list: %w", hostError(r))
	}
	d.ran = true
	return nil
}

// RunTimed runs a command list with timestamped passes (Timer, on a host
// whose device has FeatureTimestamps). The host hands the timestamps back
// as a readback.
func (d *Imported) RunTimed(cmds []byte, by Timing, done func([]Interval, error)) error {
	if len(cmds) == 0 {
		done(nil, nil)
		return nil
	}
	d.nextReq++
	req := d.nextReq
	if r := gpuRunTimed(ptr(cmds), uint32(len(cmds)), req, uint32(by)); r < 0 {
		return fmt.Errorf("run timed command list: %w", hostError(r))
	}
	d.ran = true
	d.maps = append(d.maps, &importedMap{req: req, done: func(b []byte, err error) {
		if err != nil {
			done(nil, fmt.Errorf("timestamps: %w", err))
			return
		}
		done(DecodeIntervals(b))
	}})
	return nil
}

func (d *Imported) Map(b Buffer, offset, size int64, done func([]byte, error)) error {
	d.nextReq++
	req := d.nextReq
	if r := gpuMap(uint32(b), offset, size, req); r < 0 {
		return fmt.Errorf("map buffer %d: %w", b, hostError(r))
	}
	d.maps = append(d.maps, &importedMap{req: req, done: done})
	return nil
}

// Fill asks the host to write length bytes of the shard file named shard,
// from shardOffset on, into b at offset: weights go from the host's storage
// to the GPU without passing through the module's memory. The host may
// complete it later; it is written before any Run after the next Poll(true).
func (d *Imported) Fill(b Buffer, offset int64, shard string, shardOffset, length int64) error {
	if r := gpuFill(uint32(b), offset, strPtr(shard), uint32(len(shard)), shardOffset, length); r < 0 {
		return fmt.Errorf("fill buffer %d at %d from %s [%d, +%d): %w", b, offset, shard, shardOffset, length, hostError(r))
	}
	d.filled = true
	return nil
}

// Deliver hands the bytes of readback req to the device; failure, when not
// empty, is the host's reason the readback failed. The callback runs in the
// next Poll. data is copied.
func (d *Imported) Deliver(req uint32, data []byte, failure string) error {
	var m *importedMap
	for _, c := range d.maps {
		if c.req == req {
			m = c
		}
	}
	if m == nil || m.delivered {
		return fmt.Errorf("deliver readback %d: no such readback is outstanding", req)
	}
	m.delivered = true
	if failure != "" {
		m.err = fmt.Errorf("map buffer: %s", failure)
	} else {
		m.data = append(d.spareFor(len(data)), data...)
	}
	return nil
}

// spareFor returns an empty buffer from d.spare with room for n bytes, or
// nil (append then makes one).
func (d *Imported) spareFor(n int) []byte {
	best := -1 // the smallest that fits: a step's logits leave a snapshot's room to it
	for i, b := range d.spare {
		if cap(b) >= n && (best < 0 || cap(b) < cap(d.spare[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	b := d.spare[best]
	d.spare = append(d.spare[:best], d.spare[best+1:]...)
	return b[:0]
}

// maxSpare bounds the delivery buffers kept: a step's readbacks are its
// logits and at most one snapshot.
const maxSpare = 2

func (d *Imported) outstanding() bool {
	for _, m := range d.maps {
		if !m.delivered {
			return true
		}
	}
	return false
}

// fenceMap asks for a readback of one word copied after all submitted
// work: the host has no "wait for the queue" call, and a readback resolves
// only once the work before it is done, so this is how Poll(true) keeps
// Device's promise when the caller reads nothing back (benchmarks, tools).
func (d *Imported) fenceMap() error {
	if d.fence[0] == 0 {
		var err error
		if d.fence[0], err = d.NewBuffer(4, Storage, "fence"); err != nil {
			return err
		}
		if d.fence[1], err = d.NewBuffer(4, MapRead, "fence_readback"); err != nil {
			return err
		}
	}
	var e Encoder
	e.Copy(d.fence[0], 0, d.fence[1], 0, 4)
	if err := d.Run(e.Bytes()); err != nil {
		return err
	}
	return d.Map(d.fence[1], 0, 4, func([]byte, error) {})
}

func (d *Imported) Poll(wait bool) error {
	if wait && d.ran && !d.filled && !d.outstanding() {
		if err := d.fenceMap(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
	}
	if wait && (d.filled || d.outstanding()) {
		if d.wait == nil {
			return errors.New("poll: waiting for the host is not possible here")
		}
		if err := d.wait(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		d.filled, d.ran = false, false
		if d.outstanding() {
			return errors.New("poll: the host resumed before delivering every readback")
		}
	}
	var ready []*importedMap
	rest := d.maps[:0]
	for _, m := range d.maps {
		if m.delivered {
			ready = append(ready, m)
		} else {
			rest = append(rest, m)
		}
	}
	d.maps = rest
	for _, m := range ready {
		m.done(m.data, m.err)
		// The bytes were valid only during the call (Device.Map): the
		// buffer serves the next readback, the largest ones kept.
		if m.data != nil {
			d.spare = append(d.spare, m.data)
			slices.SortFunc(d.spare, func(a, b []byte) int { return cap(b) - cap(a) })
			d.spare = d.spare[:min(len(d.spare), maxSpare)]
			m.data = nil
		}
	}
	return nil
}

func (d *Imported) FreeBuffer(b Buffer)       { gpuFree(freeBuffer, uint32(b)) }
func (d *Imported) FreeKernel(k Kernel)       { gpuFree(freeKernel, uint32(k)) }
func (d *Imported) FreeBindGroup(g BindGroup) { gpuFree(freeBindGroup, uint32(g)) }

// Close forgets outstanding readbacks; the host owns the device and frees
// what the module made when the instance goes.
func (d *Imported) Close() error {
	d.maps = nil
	return nil
}

var _ Timer = (*Imported)(nil)
