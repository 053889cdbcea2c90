package convert

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSafetensorsHeader feeds the safetensors header reader arbitrary
// files: it must never panic, and every tensor it accepts must lie inside
// the file with as many bytes as its dtype and shape need. `make fuzz` runs
// it for a bounded time; the seeds run with every `go test`.
func FuzzSafetensorsHeader(f *testing.F) {
	file := func(header string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		return append(append(b, header...), make([]byte, data)...)
	}
	f.Add(file(`{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}`, 24))
	f.Add(file(`{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]}}`, 12))
	f.Add(file(`{"w":{"dtype":"F32","shape":[2147483647,2147483647],"data_offsets":[0,24]}}`, 24))
	f.Add(file(`{"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}`, 8))
	f.Add(file(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[4,0]}}`, 4))
	f.Add(file(`{}`, 0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte{1, 2, 3})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "model.safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		tensors, err := readHeader(&stFile{path: path, f: fh})
		if err != nil {
			return
		}
		for _, st := range tensors {
			if st.offset < 8 || st.size < 0 || st.offset+st.size > int64(len(data)) {
				t.Fatalf("tensor %q: bytes [%d, +%d) outside the file of %d", st.name, st.offset, st.size, len(data))
			}
			if es := dtypeBytes(st.dtype); es != 0 {
				n := es
				for _, d := range st.shape {
					n *= d
				}
				if n != st.size {
					t.Fatalf("tensor %q: %s %v is %d bytes, accepted with %d", st.name, st.dtype, st.shape, n, st.size)
				}
			}
		}
	})
}
