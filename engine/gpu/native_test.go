//go:build !js && !wasip1

package gpu

import (
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

// openTest opens the native device or fails, saying how to get one: a test
// that skips without a GPU would hide that the backend was never tested.
func openTest(t *testing.T) Device {
	t.Helper()
	d, err := Open(Options{})
	if err != nil {
		t.Fatalf("%v\n(install mesa-vulkan-drivers and libvulkan1: `make deps` does)", err)
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

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestRunDispatchCopyRead(t *testing.T) {
	d := openTest(t)
	const n = 100
	src, err := d.NewBuffer(4*n, Storage, "src")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := d.NewBuffer(4*n, Storage, "dst")
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.NewKernel(KernelSource{Label: "add_one", WGSL: addOne, Entry: "main"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.NewBindGroup(k, []Binding{{Slot: 0, Buffer: src}, {Slot: 1, Buffer: dst}})
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(i) * 0.5
	}
	var e Encoder
	e.Write(src, 0, f32bytes(in))
	e.Dispatch(k, g, (n+63)/64, 1, 1)
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSync(d, dst, 0, 4*n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); v != in[i]+1 {
			t.Fatalf("dst[%d] = %v, want %v", i, v, in[i]+1)
		}
	}
}

// TestLongListKeepsOrder runs a list of many dependent dispatches, passes
// broken by copies, that the executor submits as several command buffers
// (SplitDispatches): each dispatch adds one to what the one before wrote,
// so any reordering or lost part shows in the sum.
func TestLongListKeepsOrder(t *testing.T) {
	d := openTest(t)
	const n, count = 100, 5*SplitDispatches + 1
	var bufs [3]Buffer
	for i := range bufs {
		var err error
		if bufs[i], err = d.NewBuffer(4*n, Storage, "buf"); err != nil {
			t.Fatal(err)
		}
	}
	k, err := d.NewKernel(KernelSource{Label: "add_one", WGSL: addOne, Entry: "main"})
	if err != nil {
		t.Fatal(err)
	}
	// there: bufs[0] -> bufs[1]; back: bufs[1] -> bufs[0].
	there, err := d.NewBindGroup(k, []Binding{{Slot: 0, Buffer: bufs[0]}, {Slot: 1, Buffer: bufs[1]}})
	if err != nil {
		t.Fatal(err)
	}
	back, err := d.NewBindGroup(k, []Binding{{Slot: 0, Buffer: bufs[1]}, {Slot: 1, Buffer: bufs[0]}})
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(i)
	}
	var e Encoder
	e.Write(bufs[0], 0, f32bytes(in))
	for i := range count {
		g := there
		if i%2 == 1 {
			g = back
		}
		e.Dispatch(k, g, (n+63)/64, 1, 1)
		if i%5 == 4 { // ends the pass
			e.Copy(bufs[0], 0, bufs[2], 0, 4*n)
		}
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSync(d, bufs[1], 0, 4*n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); v != in[i]+count {
			t.Fatalf("after %d dispatches, [%d] = %v, want %v", count, i, v, in[i]+count)
		}
	}
}

func TestKernelErrorsNameTheLine(t *testing.T) {
	d := openTest(t)
	for _, tc := range []struct {
		name, src, entry, want string
	}{
		{"parse", "fn main() {\n  let x = ;\n}\n", "main", ":2:"},
		{"unknown identifier", "@compute @workgroup_size(1)\nfn main() {\n\n  let x = nope;\n}\n", "main", ":4:"},
		{"bad entry point", addOne, "main_missing", "entry point"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.NewKernel(KernelSource{Label: tc.name, WGSL: tc.src, Entry: tc.entry})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLimitErrorNamesTheLimit(t *testing.T) {
	_, err := Open(Options{Need: Limits{MaxStorageBufferBindingSize: 1 << 50}})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "maxStorageBufferBindingSize" || !strings.Contains(err.Error(), "maxStorageBufferBindingSize") {
		t.Fatalf("Open with an impossible binding size: got %v, want a LimitError naming maxStorageBufferBindingSize", err)
	}
}

func TestEncodingRoundTrip(t *testing.T) {
	var e Encoder
	e.Write(3, 8, []byte{1, 2, 3, 4, 5})
	e.Dispatch(1, 2, 3, 4, 5)
	e.Copy(3, 4, 5, 8, 12)
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	var got []Command
	if err := Decode(e.Bytes(), func(c Command) error { got = append(got, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Op != OpWrite || string(got[0].Data) != "\x01\x02\x03\x04\x05" || got[0].Offset != 8 ||
		got[1].Op != OpDispatch || got[1].X != 3 || got[1].Z != 5 || got[2].Op != OpCopy || got[2].Size != 12 || got[2].DstOff != 8 {
		t.Fatalf("decoded %+v", got)
	}
	e.Write(1, 0, []byte{0, 0, 0, 0})
	if e.Err() == nil {
		t.Fatal("a write after a dispatch was accepted")
	}
}

// spin runs a serial chain of a 32-bit hash on one invocation, continuing
// from state[0], then records in state[1] that it finished: work that
// takes as long as asked for, and whose end can be seen.
const spin = `
struct Params { iters: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@compute @workgroup_size(1)
fn main() {
	var x = state[0];
	for (var i = 0u; i < params.iters; i++) {
		x = x * 1664525u + 1013904223u;
		x = x ^ (x >> 13u);
	}
	state[0] = x;
	state[1] = params.iters;
}
`

func spinCPU(x uint32, iters int) uint32 {
	for range iters {
		x = x*1664525 + 1013904223
		x ^= x >> 13
	}
	return x
}

// TestWaitOutlastsWgpuTimeout submits one command buffer of more than 5 s
// of GPU work and waits for it. wgpu-native's own wait gives up after 5 s
// and then treats the work as finished: it maps buffers the GPU has not
// written yet and recycles command buffers and buffers the driver is still
// using (lavapipe then crashed in its command executor). Poll(true) must
// return only once the work is done. lavapipe is made to run submissions
// on its queue thread, as it does on its own once submissions overlap, so
// that Run returns before the work is done.
func TestWaitOutlastsWgpuTimeout(t *testing.T) {
	t.Setenv("MESA_VK_ENABLE_SUBMIT_THREAD", "1")
	d := openTest(t)
	params, err := d.NewBuffer(16, Uniform, "spin_params")
	if err != nil {
		t.Fatal(err)
	}
	state, err := d.NewBuffer(16, Storage, "spin_state")
	if err != nil {
		t.Fatal(err)
	}
	k, err := d.NewKernel(KernelSource{Label: "spin", WGSL: spin, Entry: "main"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.NewBindGroup(k, []Binding{{Slot: 0, Buffer: params}, {Slot: 1, Buffer: state}})
	if err != nil {
		t.Fatal(err)
	}
	back, err := d.NewBuffer(16, MapRead, "spin_readback")
	if err != nil {
		t.Fatal(err)
	}
	// run submits one command buffer, as a prefill step is: dispatches
	// chained runs of iters steps from the state start, then the copy of
	// the state to the readback buffer; it then maps that buffer and
	// waits. It returns the state and how long Run and the whole took.
	run := func(start uint32, iters, dispatches int) (x, done uint32, submit, took time.Duration) {
		t.Helper()
		var e Encoder
		e.Write(params, 0, binary.LittleEndian.AppendUint32(nil, uint32(iters)))
		e.Write(state, 0, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, start), 0))
		for range dispatches {
			e.Dispatch(k, g, 1, 1, 1)
		}
		e.Copy(state, 0, back, 0, 16)
		t0 := time.Now()
		if err := d.Run(e.Bytes()); err != nil {
			t.Fatal(err)
		}
		submit = time.Since(t0)
		var mapErr error
		if err := d.Map(back, 0, 16, func(data []byte, err error) {
			if mapErr = err; err == nil {
				x, done = binary.LittleEndian.Uint32(data), binary.LittleEndian.Uint32(data[4:])
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := d.Poll(true); err != nil {
			t.Fatal(err)
		}
		if mapErr != nil {
			t.Fatal(mapErr)
		}
		return x, done, submit, time.Since(t0)
	}
	// Calibrate on a short chain, after a warm-up run that compiles the
	// kernel and times a run's fixed costs; its result also checks the
	// kernel against the CPU.
	const calib = 1 << 25
	_, _, _, fixed := run(1, 1<<10, 1)
	x, _, _, took := run(1, calib, 1)
	if want := spinCPU(1, calib); x != want {
		t.Fatalf("calibration run: state %#x, want %#x", x, want)
	}
	perStep := max(took-fixed, time.Millisecond).Seconds() / calib
	// 7 s of work, in dispatches of at most 2^31 steps; again, rescaled,
	// while the load of a busy machine makes it too short.
	const want = 7.0
	for try := 1; ; try++ {
		total := want / perStep
		dispatches := int(total/(1<<31)) + 1
		iters := int(total / float64(dispatches))
		_, done, submit, took := run(7, iters, dispatches)
		t.Logf("%d dispatches of %d steps: Run took %v, the whole %v", dispatches, iters, submit, took)
		if done != uint32(iters) {
			t.Fatalf("after %v the GPU's work was read back unfinished (state[1] = %d, want %d)", took, done, iters)
		}
		if waited := took - submit; waited >= 5500*time.Millisecond {
			break
		} else if try == 4 {
			t.Fatalf("Poll waited only %v: the work must outlast wgpu-native's 5 s wait to test it", waited)
		}
		perStep = took.Seconds() / total
	}
}

// TestMapsOutlastGC leaves readbacks pending through garbage collections
// and a churn of small allocations before polling for them, as the prefix
// cache's snapshots stay out while a reply's first token is drawn. Each
// must come back with its own bytes. Through cogentcore/webgpu's
// MapAsync, whose callback data the collector could free while the map
// was out, this crashed the process ("misuse of an invalid Handle"; see
// nativemap.go).
func TestMapsOutlastGC(t *testing.T) {
	d := openTest(t)
	const maps, n = 16, 64
	var e Encoder
	bufs := make([]Buffer, maps)
	var srcs []Buffer
	for i := range bufs {
		var err error
		if bufs[i], err = d.NewBuffer(4*n, MapRead, "readback"); err != nil {
			t.Fatal(err)
		}
		vals := make([]float32, n)
		for j := range vals {
			vals[j] = float32(i*n + j)
		}
		src, err := d.NewBuffer(4*n, Storage, "src")
		if err != nil {
			t.Fatal(err)
		}
		e.Write(src, 0, f32bytes(vals))
		srcs = append(srcs, src)
	}
	for i, src := range srcs { // a list's writes come first
		e.Copy(src, 0, bufs[i], 0, 4*n)
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	got := make([][]byte, maps)
	for i, b := range bufs {
		if err := d.Map(b, 0, 4*n, func(data []byte, err error) {
			if err != nil {
				t.Errorf("map %d: %v", i, err)
				return
			}
			got[i] = append([]byte(nil), data...)
		}); err != nil {
			t.Fatal(err)
		}
		// Churn: what freed memory is reused for.
		junk := make([]*[2]uint32, 0, 4096)
		for k := range 4096 {
			junk = append(junk, &[2]uint32{0xdeadbeef, uint32(k)})
		}
		runtime.GC()
		runtime.KeepAlive(junk)
	}
	runtime.GC()
	if err := d.Poll(true); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if len(got[i]) != 4*n {
			t.Fatalf("map %d delivered %d bytes, want %d", i, len(got[i]), 4*n)
		}
		for j := range n {
			if v := math.Float32frombits(binary.LittleEndian.Uint32(got[i][4*j:])); v != float32(i*n+j) {
				t.Fatalf("map %d value %d = %v, want %v", i, j, v, float32(i*n+j))
			}
		}
	}
}
