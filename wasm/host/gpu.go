package host

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu"
)

// state is one instance's side of the wick_gpu imports. Host functions are
// shared by every instance of a runtime; each call finds its instance's
// state in the context the host passed to the export.
type state struct {
	dev     gpu.Device
	dir     string // the model directory on the host, for fills
	lastErr string
	done    []readback // finished readbacks, to deliver at the next wait

	shardsOnce sync.Once
	shardsErr  error
}

type readback struct {
	req  uint32
	data []byte
	err  error
}

type stateKey struct{}

func withState(ctx context.Context, st *state) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateOf(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	if st == nil {
		return &state{} // a call outside Instance methods: no device
	}
	return st
}

// fail records err for last_error and returns the import's error code.
func (st *state) fail(err error) int32 {
	st.lastErr = err.Error()
	return -1
}

func (st *state) noDevice() int32 { return st.fail(fmt.Errorf("the host has no GPU device")) }

// read returns n bytes of module memory at p, or false.
func read(m api.Module, p, n uint32) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	return m.Memory().Read(p, n)
}

func readString(m api.Module, p, n uint32) (string, bool) {
	b, ok := read(m, p, n)
	return string(b), ok
}

// bindingBytes is the size of one create_bind_group entry: slot u32,
// buffer u32, offset u64, size u64 (engine/gpu.BindingBytes in the module).
const bindingBytes = 24

var errMemory = fmt.Errorf("a pointer and length outside the module's memory")

// instantiateGPU defines the wick_gpu host module (see wasm/ABI.md).
func instantiateGPU(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder("wick_gpu")
	fn := func(name string, f any) { b.NewFunctionBuilder().WithFunc(f).Export(name) }

	fn("info", func(ctx context.Context, m api.Module, p, capacity uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return -1
		}
		out, err := json.Marshal(st.dev.Info())
		if err != nil {
			return st.fail(fmt.Errorf("info: %w", err))
		}
		if len(out) <= int(capacity) && !m.Memory().Write(p, out) {
			return st.fail(errMemory)
		}
		return int32(len(out))
	})
	fn("create_buffer", func(ctx context.Context, m api.Module, size int64, usage, lp, ln uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		label, ok := readString(m, lp, ln)
		if !ok {
			return st.fail(errMemory)
		}
		h, err := st.dev.NewBuffer(size, gpu.Usage(usage), label)
		if err != nil {
			return st.fail(err)
		}
		return int32(h)
	})
	fn("write_buffer", func(ctx context.Context, m api.Module, buf uint32, off int64, p, n uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		data, ok := read(m, p, n)
		if !ok {
			return st.fail(errMemory)
		}
		if err := st.dev.Write(gpu.Buffer(buf), off, data); err != nil {
			return st.fail(err)
		}
		return 0
	})
	fn("create_kernel", func(ctx context.Context, m api.Module, wp, wn, ep, en, lp, ln uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		wgsl, ok1 := readString(m, wp, wn)
		entry, ok2 := readString(m, ep, en)
		label, ok3 := readString(m, lp, ln)
		if !ok1 || !ok2 || !ok3 {
			return st.fail(errMemory)
		}
		k, err := st.dev.NewKernel(gpu.KernelSource{Label: label, WGSL: wgsl, Entry: entry})
		if err != nil {
			return st.fail(err)
		}
		return int32(k)
	})
	fn("create_bind_group", func(ctx context.Context, m api.Module, k, p, count uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		if count > 64 {
			return st.fail(fmt.Errorf("bind group of %d entries (at most 64)", count))
		}
		raw, ok := read(m, p, count*bindingBytes)
		if !ok {
			return st.fail(errMemory)
		}
		bs := make([]gpu.Binding, count)
		for j := range bs {
			e := raw[j*bindingBytes:]
			bs[j] = gpu.Binding{Slot: binary.LittleEndian.Uint32(e), Buffer: gpu.Buffer(binary.LittleEndian.Uint32(e[4:])),
				Offset: int64(binary.LittleEndian.Uint64(e[8:])), Size: int64(binary.LittleEndian.Uint64(e[16:]))}
		}
		g, err := st.dev.NewBindGroup(gpu.Kernel(k), bs)
		if err != nil {
			return st.fail(err)
		}
		return int32(g)
	})
	fn("run", func(ctx context.Context, m api.Module, p, n uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		cmds, ok := read(m, p, n)
		if !ok {
			return st.fail(errMemory)
		}
		if err := st.dev.Run(cmds); err != nil {
			return st.fail(err)
		}
		return 0
	})
	fn("run_timed", func(ctx context.Context, m api.Module, p, n, req, by uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		t, ok := gpu.TimerOf(st.dev)
		if !ok {
			return st.fail(fmt.Errorf("run_timed: the device has no timestamp queries (%s)", gpu.FeatureTimestamps))
		}
		cmds, ok := read(m, p, n)
		if !ok {
			return st.fail(errMemory)
		}
		err := t.RunTimed(cmds, gpu.Timing(by), func(iv []gpu.Interval, err error) {
			var data []byte
			for _, x := range iv {
				data = binary.LittleEndian.AppendUint64(data, x.Begin)
				data = binary.LittleEndian.AppendUint64(data, x.End)
			}
			st.done = append(st.done, readback{req: req, data: data, err: err})
		})
		if err != nil {
			return st.fail(err)
		}
		return 0
	})
	fn("map", func(ctx context.Context, m api.Module, buf uint32, off, size int64, req uint32) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		err := st.dev.Map(gpu.Buffer(buf), off, size, func(data []byte, err error) {
			st.done = append(st.done, readback{req: req, data: append([]byte(nil), data...), err: err})
		})
		if err != nil {
			return st.fail(err)
		}
		return 0
	})
	fn("fill", func(ctx context.Context, m api.Module, buf uint32, off int64, sp, sn uint32, shardOff, length int64) int32 {
		st := stateOf(ctx)
		if st.dev == nil {
			return st.noDevice()
		}
		shard, ok := readString(m, sp, sn)
		if !ok {
			return st.fail(errMemory)
		}
		if err := st.fill(gpu.Buffer(buf), off, shard, shardOff, length); err != nil {
			return st.fail(err)
		}
		return 0
	})
	fn("free", func(ctx context.Context, kind, h uint32) {
		st := stateOf(ctx)
		if st.dev == nil {
			return
		}
		switch kind {
		case 1:
			st.dev.FreeBuffer(gpu.Buffer(h))
		case 2:
			st.dev.FreeKernel(gpu.Kernel(h))
		case 3:
			st.dev.FreeBindGroup(gpu.BindGroup(h))
		}
	})
	fn("last_error", func(ctx context.Context, m api.Module, p, capacity uint32) int32 {
		st := stateOf(ctx)
		msg := []byte(st.lastErr)
		if len(msg) <= int(capacity) && !m.Memory().Write(p, msg) {
			return -1
		}
		return int32(len(msg))
	})
	_, err := b.Instantiate(ctx)
	return err
}

// maxFill caps one fill's bytes, so that a bad length cannot make the host
// allocate without bound.
const maxFill = 1 << 30

// fill copies length bytes of the shard file at shardOff into buf at off.
// Every shard is checked against the manifest's size and sha256 before the
// first fill, as the browser checks each shard it downloads.
func (st *state) fill(buf gpu.Buffer, off int64, shard string, shardOff, length int64) error {
	if shard == "" || strings.ContainsAny(shard, "/\\\x00") || shard == "." || shard == ".." || !strings.HasPrefix(shard, "shard-") {
		return fmt.Errorf("fill: %q is not a shard file name", shard)
	}
	if length <= 0 || length > maxFill || shardOff < 0 || off < 0 {
		return fmt.Errorf("fill from %s: offset %d, length %d out of range", shard, shardOff, length)
	}
	st.shardsOnce.Do(func() {
		f, err := format.Open(st.dir)
		if err == nil {
			err = f.Verify()
		}
		st.shardsErr = err
	})
	if st.shardsErr != nil {
		return fmt.Errorf("fill: %w", st.shardsErr)
	}
	file, err := os.Open(filepath.Join(st.dir, shard))
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	defer file.Close()
	data := make([]byte, length)
	if _, err := file.ReadAt(data, shardOff); err != nil {
		return fmt.Errorf("fill: read %d bytes at %d of %s: %w", length, shardOff, shard, err)
	}
	if err := st.dev.Write(buf, off, data); err != nil {
		return fmt.Errorf("fill from %s: %w", shard, err)
	}
	return nil
}
