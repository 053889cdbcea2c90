//go:build !js && !wasip1

package gpu

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
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
