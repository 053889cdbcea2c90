//go:build !js && !wasip1

package shaders

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/internal/gputest"
)

// matrixUnitsWGSL loads a 16x32 int8 left matrix from a word array at
// offset 4 with stride 16 and multiplies it by a matrix of ones: every
// result row is the sum of one row of the left matrix, which tells where
// the load read it from.
const matrixUnitsWGSL = `enable subgroups;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> a: array<i32>;
@group(0) @binding(1) var<storage, read_write> o: array<i32>;
@compute @workgroup_size(256)
fn units() {
  let l = subgroupMatrixLoad<subgroup_matrix_left<i8, 32, 16>, row_major>(&a, 4u, 16u);
  let r = subgroup_matrix_right<i8, 16, 32>(1);
  let c = subgroupMatrixMultiply<i32>(l, r);
  subgroupMatrixStore<row_major>(&o, 0u, c, 16u);
}
`

// TestMatrixLoadUnits checks what tiled.wgsl's MATRIX variant assumes of
// Dawn's int8 matrix loads (its BYTES_PER_UNIT): offset and stride count
// elements of the i32 array, four int8 each, not bytes. It runs where the
// Dawn device has subgroup matrices (WICK_DAWN_EXPERIMENTAL=1 on a GPU with
// them) and says so where it does not.
func TestMatrixLoadUnits(t *testing.T) {
	d := gputest.Dawn()[0].Open(t)
	if !d.Info().Has(FeatureSubgroupMatrix) {
		t.Skipf("%s offers no %s here (WICK_DAWN_EXPERIMENTAL=1 on a GPU with tensor cores runs it)", d.Info().Adapter, FeatureSubgroupMatrix)
	}
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(int8(i%7*5 - 13 + i/61))
	}
	sums := func(unit int) []int32 {
		s := make([]int32, 16)
		for m := range s {
			for k := range 32 {
				s[m] += int32(int8(data[unit*(4+16*m)+k]))
			}
		}
		return s
	}
	kern, err := d.NewKernel(gpu.KernelSource{Label: "matrix-units", WGSL: matrixUnitsWGSL, Entry: "units"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeKernel(kern)
	in, err := d.NewBuffer(int64(len(data)), gpu.Storage, "in")
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBuffer(in)
	out, err := d.NewBuffer(4*256, gpu.Storage, "out")
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBuffer(out)
	if err := d.Write(in, 0, data); err != nil {
		t.Fatal(err)
	}
	g, err := d.NewBindGroup(kern, []gpu.Binding{{Slot: 0, Buffer: in}, {Slot: 1, Buffer: out}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBindGroup(g)
	var e gpu.Encoder
	e.Dispatch(kern, g, 1, 1, 1)
	if err := d.Run(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	b, err := gpu.ReadSync(d, out, 0, 4*256)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]int32, 16)
	for m := range got {
		got[m] = int32(binary.LittleEndian.Uint32(b[4*16*m:])) // column 0 of row m
		for n := 1; n < 16; n++ {
			if v := int32(binary.LittleEndian.Uint32(b[4*(16*m+n):])); v != got[m] {
				t.Fatalf("row %d: column %d is %d, column 0 %d (a product by ones has equal columns)", m, n, v, got[m])
			}
		}
	}
	words, bytes := sums(4), sums(1)
	switch fmt.Sprint(got) {
	case fmt.Sprint(words):
		t.Logf("int8 matrix loads count offset and stride in i32 elements, as tiled.wgsl assumes")
	case fmt.Sprint(bytes):
		t.Fatalf("int8 matrix loads count offset and stride in bytes: tiled.wgsl's BYTES_PER_UNIT must be 1")
	default:
		t.Fatalf("row sums %v match neither i32 units %v nor bytes %v", got, words, bytes)
	}
}
