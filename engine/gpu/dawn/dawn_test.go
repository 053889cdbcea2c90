//go:build !js && !wasip1

package dawn

import (
	"encoding/binary"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wick-run/wick/engine/gpu"
)

// open opens a device of tier or fails saying how to get one: Dawn is part
// of `make deps`, so a missing one is a failure, not a skip.
func open(t *testing.T, opts Options) *Device {
	t.Helper()
	d, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

const addOne = `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
	if (id.x < arrayLength(&dst)) { dst[id.x] = src[id.x] + 1.0; }
}
`

// subgroupSum writes, for every invocation, the sum over its subgroup of
// the invocation indices and the subgroup size: a kernel only the 'all'
// tier can run.
const subgroupSum = `
enable subgroups;
@group(0) @binding(0) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) n: u32) {
	dst[2u * i] = subgroupAdd(i);
	dst[2u * i + 1u] = n;
}
`

func TestInfoByTier(t *testing.T) {
	all := open(t, Options{Tier: TierAll})
	fb := open(t, Options{Tier: TierFallback})
	ai, fi := all.Info(), fb.Info()
	t.Logf("all: %+v", ai)
	t.Logf("fallback: %+v", fi)
	if ai.Limits.MaxStorageBufferBindingSize < 128<<20 || ai.Adapter == "" {
		t.Errorf("all tier: info %+v lacks the adapter or limits", ai)
	}
	if len(fi.Features) != 0 || len(fi.WGSL) != 0 || fi.SubgroupMinSize != 0 || fi.SubgroupMaxSize != 0 || len(fi.SubgroupMatrix) != 0 {
		t.Errorf("fallback tier reports %+v, want no features, WGSL features or subgroups", fi)
	}
	// Every adapter Dawn runs on here (lavapipe 25, the H200) offers these.
	if !ai.Has("subgroups") || !ai.HasWGSL("packed_4x8_integer_dot_product") {
		t.Errorf("all tier: features %v, WGSL %v; want subgroups and packed_4x8_integer_dot_product", ai.Features, ai.WGSL)
	}
	if ai.SubgroupMinSize < 1 || ai.SubgroupMaxSize < ai.SubgroupMinSize {
		t.Errorf("all tier: subgroup sizes %d..%d", ai.SubgroupMinSize, ai.SubgroupMaxSize)
	}
}

func TestRunDispatchCopyRead(t *testing.T) {
	for _, tier := range []string{TierAll, TierFallback} {
		t.Run(tier, func(t *testing.T) {
			d := open(t, Options{Tier: tier})
			const n = 100
			src, err := d.NewBuffer(4*n, gpu.Storage, "src")
			if err != nil {
				t.Fatal(err)
			}
			dst, err := d.NewBuffer(4*n, gpu.Storage, "dst")
			if err != nil {
				t.Fatal(err)
			}
			k, err := d.NewKernel(gpu.KernelSource{Label: "add_one", WGSL: addOne, Entry: "main"})
			if err != nil {
				t.Fatal(err)
			}
			g, err := d.NewBindGroup(k, []gpu.Binding{{Slot: 0, Buffer: src}, {Slot: 1, Buffer: dst}})
			if err != nil {
				t.Fatal(err)
			}
			in := make([]byte, 4*n)
			for i := range n {
				binary.LittleEndian.PutUint32(in[4*i:], math.Float32bits(float32(i)*0.5))
			}
			var e gpu.Encoder
			e.Write(src, 0, in)
			e.Dispatch(k, g, (n+63)/64, 1, 1)
			if err := d.Run(e.Bytes()); err != nil {
				t.Fatal(err)
			}
			got, err := gpu.ReadSync(d, dst, 0, 4*n)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); v != float32(i)*0.5+1 {
					t.Fatalf("dst[%d] = %v, want %v", i, v, float32(i)*0.5+1)
				}
			}
		})
	}
}

// TestSubgroups runs a subgroup reduction on the all tier and checks it for
// the subgroup size the device ran it with, which must lie within Info's
// bounds; the fallback tier must refuse the kernel (no subgroups feature).
func TestSubgroups(t *testing.T) {
	d := open(t, Options{Tier: TierAll})
	out, err := d.NewBuffer(4*128, gpu.Storage, "sums")
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.NewKernel(gpu.KernelSource{Label: "subgroup_sum", WGSL: subgroupSum, Entry: "main"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.NewBindGroup(k, []gpu.Binding{{Slot: 0, Buffer: out}})
	if err != nil {
		t.Fatal(err)
	}
	var e gpu.Encoder
	e.Dispatch(k, g, 1, 1, 1)
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	raw, err := gpu.ReadSync(d, out, 0, 4*128)
	if err != nil {
		t.Fatal(err)
	}
	size := binary.LittleEndian.Uint32(raw[4:])
	info := d.Info()
	if int(size) < info.SubgroupMinSize || int(size) > info.SubgroupMaxSize {
		t.Fatalf("ran with subgroup size %d, outside the reported %d..%d", size, info.SubgroupMinSize, info.SubgroupMaxSize)
	}
	t.Logf("subgroup size %d (reported %d..%d)", size, info.SubgroupMinSize, info.SubgroupMaxSize)
	for i := range uint32(64) {
		first := i / size * size
		want := size*first + size*(size-1)/2
		if got := binary.LittleEndian.Uint32(raw[8*i:]); got != want {
			t.Fatalf("invocation %d: subgroupAdd %d, want %d", i, got, want)
		}
	}
	fb := open(t, Options{Tier: TierFallback})
	if _, err := fb.NewKernel(gpu.KernelSource{Label: "subgroup_sum", WGSL: subgroupSum, Entry: "main"}); err == nil || !strings.Contains(err.Error(), "subgroups") {
		t.Fatalf("the fallback tier compiled a subgroup kernel: %v", err)
	}
}

func TestKernelErrorsNameTheLine(t *testing.T) {
	d := open(t, Options{})
	for _, tc := range []struct {
		name, src, entry, want string
	}{
		{"parse", "fn main() {\n  let x = ;\n}\n", "main", "2:"},
		{"unknown identifier", "@compute @workgroup_size(1)\nfn main() {\n\n  let x = nope;\n}\n", "main", "4:"},
		{"bad entry point", addOne, "main_missing", "main_missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.NewKernel(gpu.KernelSource{Label: tc.name, WGSL: tc.src, Entry: tc.entry})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("error %q does not contain %q and the label", err, tc.want)
			}
		})
	}
	// The device still works after the failures.
	if _, err := d.NewKernel(gpu.KernelSource{Label: "add_one", WGSL: addOne, Entry: "main"}); err != nil {
		t.Fatal(err)
	}
}

// TestValidationErrorAtPoll: a command list that fails Dawn's validation
// (a copy past a buffer's end) is reported by the next Poll, once.
func TestValidationErrorAtPoll(t *testing.T) {
	d := open(t, Options{})
	a, err := d.NewBuffer(16, gpu.Storage, "a")
	if err != nil {
		t.Fatal(err)
	}
	var e gpu.Encoder
	e.Copy(a, 0, a, 8, 16)
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := d.Poll(true); err == nil {
		t.Fatal("Poll after an invalid copy: no error")
	} else {
		t.Log(err)
	}
	if err := d.Poll(true); err != nil {
		t.Fatalf("the second Poll: %v", err)
	}
}

// TestMapOrder: readbacks are delivered in the order they were asked for,
// each with its own bytes, and none before Poll.
func TestMapOrder(t *testing.T) {
	d := open(t, Options{})
	src, err := d.NewBuffer(64, gpu.Storage, "src")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64)
	for i := range data {
		data[i] = byte(i)
	}
	var e gpu.Encoder
	e.Write(src, 0, data)
	// One readback buffer per Map: a buffer has one outstanding Map at a
	// time (gpu.Device.Map), as WebGPU's mapAsync allows.
	var backs []gpu.Buffer
	for range 2 {
		back, err := d.NewBuffer(64, gpu.MapRead, "back")
		if err != nil {
			t.Fatal(err)
		}
		e.Copy(src, 0, back, 0, 64)
		backs = append(backs, back)
	}
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	var order []int
	for i, off := range []int64{32, 0} {
		if err := d.Map(backs[i], off, 32, func(b []byte, err error) {
			if err != nil || len(b) != 32 || b[0] != byte(off) {
				t.Errorf("readback %d: %v, %v", i, b, err)
			}
			order = append(order, i)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(order) != 0 {
		t.Fatal("a callback ran before Poll")
	}
	if err := d.Poll(true); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != 0 || order[1] != 1 {
		t.Fatalf("callbacks ran in order %v, want [0 1]", order)
	}
}

// TestCrashIsAnError: a Node process that dies makes the next call fail at
// once with an error saying so, and so does every later call.
func TestCrashIsAnError(t *testing.T) {
	d, err := Open(Options{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err = d.NewBuffer(16, gpu.Storage, "after")
	if err == nil || !strings.Contains(err.Error(), "Node process failed") {
		t.Fatalf("a call after the process died: %v", err)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Fatalf("the failure took %v", took)
	}
	if err := d.Poll(true); err == nil {
		t.Fatal("a later call succeeded")
	}
}

// TestHangIsAnError: a Node process that stops answering makes the call
// fail after the timeout, and is killed.
func TestHangIsAnError(t *testing.T) {
	d, err := Open(Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = d.Poll(true)
	if err == nil || !strings.Contains(err.Error(), "no reply within") {
		t.Fatalf("a call to a stopped process: %v", err)
	}
	if took := time.Since(t0); took > 8*time.Second {
		t.Fatalf("the failure took %v", took)
	}
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the stopped process was not killed")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{Tier: "fast"}); err == nil || !strings.Contains(err.Error(), "fast") {
		t.Errorf("an unknown tier: %v", err)
	}
	if _, err := Open(Options{Root: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "device.mjs") {
		t.Errorf("a root without node/device.mjs: %v", err)
	}
	_, err := Open(Options{Need: gpu.Limits{MaxStorageBufferBindingSize: 1 << 50}})
	if err == nil || !strings.Contains(err.Error(), "cannot hold the model") {
		t.Errorf("an impossible binding size: %v", err)
	}
}
