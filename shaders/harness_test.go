//go:build !js && !wasip1

package shaders

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/internal/gputest"
)

// cur is the device of the running test: the one onDevices set for its
// subtest, else wgpu-native. Tests of this package run one at a time.
var (
	cur     gpu.Device
	kernels = map[gpu.Device]map[Key]gpu.Kernel{} // compiled variants, by device
)

// device returns the running test's device, or fails saying how to get
// one: kernels untested for want of a GPU must not pass.
func device(t *testing.T) gpu.Device {
	t.Helper()
	if cur == nil {
		return gputest.Native().Open(t)
	}
	return cur
}

// onDevices runs test once on every device of gputest.Devices (wgpu-native,
// Dawn with the kernels' features, Dawn with them withheld), as subtests
// named by device, against the same CPU reference and on the same inputs
// (newRand). Under Dawn on lavapipe the subgroup size is 8 (adapter.info
// reports 8..8, and a subgroupAdd kernel runs at 8: engine/gpu/dawn's
// TestSubgroups), so the 'dawn' device checks the subgroup variants at
// size 8 only; the H200 runs them at 32.
//
// dawnCases, when given, are the only cases (runCase) of test that run on
// Dawn: tests of big kernels (attention, staged products) name one int8
// case per variant family there, because lavapipe's LLVM takes 5-40 s to
// compile each of their variants on a cold shader cache (as on a fresh CI
// machine), once more per WGSL compiler; wgpu-native runs every case.
func onDevices(t *testing.T, test func(t *testing.T), dawnCases ...string) {
	t.Helper()
	for _, gd := range gputest.Devices() {
		t.Run(gd.Name, func(t *testing.T) {
			prevDev, prevCases := cur, only
			cur, only = gd.Open(t), nil
			if gd.Dawn && len(dawnCases) > 0 {
				only = dawnCases
			}
			defer func() { cur, only = prevDev, prevCases }()
			test(t)
		})
	}
}

// only lists the cases the running device runs (nil: all); see onDevices.
var only []string

// runCase runs one case of a table as a subtest, or skips it, saying so,
// where the device runs only some (onDevices).
func runCase(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if only != nil && !slices.Contains(only, name) {
		t.Run(name, func(t *testing.T) {
			t.Skipf("on Dawn only %v run (compile time); wgpu-native runs every case", only)
		})
		return
	}
	t.Run(name, f)
}

// poison is the pattern every output buffer holds before a kernel runs, so
// an element the kernel forgot reads as NaN (or as 0xffffffff).
const poison = 0xffffffff

func u32bytes(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func bytesU32(b []byte) []uint32 {
	v := make([]uint32, len(b)/4)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return v
}

// packI8 packs int8 values four to a word, element 0 in the low byte.
func packI8(q []int8) []uint32 {
	w := make([]uint32, (len(q)+3)/4)
	for i, v := range q {
		w[i/4] |= uint32(uint8(v)) << (8 * (i % 4))
	}
	return w
}

func unpackI8(w []uint32, n int) []int8 {
	q := make([]int8, n)
	for i := range q {
		q[i] = int8(w[i/4] >> (8 * (i % 4)))
	}
	return q
}

// buffer makes a storage buffer holding data (padded to words), or of
// poison words when data is nil and words > 0.
func buffer(t *testing.T, data []byte, words int) gpu.Buffer {
	t.Helper()
	d := device(t)
	if data == nil {
		p := make([]uint32, words)
		for i := range p {
			p[i] = poison
		}
		data = u32bytes(p)
	}
	for len(data)%4 != 0 || len(data) == 0 {
		data = append(data, 0)
	}
	b, err := d.NewBuffer(int64(len(data)), gpu.Storage, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.FreeBuffer(b) })
	if err := d.Write(b, 0, data); err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t *testing.T, b gpu.Buffer, words int) []byte {
	t.Helper()
	data, err := gpu.ReadSync(device(t), b, 0, int64(4*words))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// dispatch runs variant k, as the device's tier of kernels runs it (as the
// engine plans it: packed dot products and subgroup reductions on Dawn with
// its features), once: step at @binding(0), params at @binding(1), and bufs
// at @binding(2)...
func dispatch(t *testing.T, k Key, step Step, params any, grid [3]int, bufs ...gpu.Buffer) {
	t.Helper()
	d := device(t)
	k = TierOf(d.Info()).Apply(k)
	if kernels[d] == nil {
		kernels[d] = map[Key]gpu.Kernel{}
	}
	kern, ok := kernels[d][k]
	if !ok {
		var err error
		if kern, err = Compile(d, k); err != nil {
			t.Fatal(err)
		}
		kernels[d][k] = kern
	}
	uni := func(v any) gpu.Buffer {
		b, err := d.NewBuffer(256, gpu.Uniform, "params")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.FreeBuffer(b) })
		if err := d.Write(b, 0, Bytes(v)); err != nil {
			t.Fatal(err)
		}
		return b
	}
	binds := []gpu.Binding{{Slot: 0, Buffer: uni(step)}, {Slot: 1, Buffer: uni(params)}}
	for i, b := range bufs {
		binds = append(binds, gpu.Binding{Slot: uint32(2 + i), Buffer: b})
	}
	g, err := d.NewBindGroup(kern, binds)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBindGroup(g)
	var e gpu.Encoder
	e.Dispatch(kern, g, grid[0], grid[1], grid[2])
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// closeTo checks got against want within rel of the largest |want| (a
// relative error that tolerates cancellation in single elements).
func closeTo(t *testing.T, what string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var scale float64
	for _, w := range want {
		scale = max(scale, math.Abs(float64(w)))
	}
	for i, w := range want {
		g := got[i]
		if d := math.Abs(float64(g - w)); !(d <= rel*max(scale, 1e-30)) {
			t.Fatalf("%s[%d] = %v, want %v (tolerance %.3g)", what, i, g, w, rel*scale)
		}
	}
}
