package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets from the first byte after the header), then the data.
//
// The reader is written here rather than taken from
// github.com/nlpodyssey/safetensors (the one Go reader the module proxy
// serves, and only as an untagged pseudo-version): the format is a page of
// code, and the converter needs exactly this shape of reader: headers of
// many files checked up front with errors that name the file and tensor, and
// tensor bytes read through io.ReaderAt in chunks of rows, so that a
// checkpoint is never held in memory whole.

// maxHeaderBytes bounds the JSON header before it is allocated; real
// headers are a few hundred KiB even for large models.
const maxHeaderBytes = 100 << 20

// stTensor is one tensor of a checkpoint, located in its file.
type stTensor struct {
	name   string
	file   *stFile
	dtype  string  // safetensors dtype: "F32", "F16", "BF16", ...
	shape  []int64 // outermost first
	offset int64   // of the first byte, from the start of the file
	size   int64   // bytes
}

// stFile is one opened safetensors file.
type stFile struct {
	path string
	f    *os.File
}

// checkpoint is the tensors of a Hugging Face checkpoint directory, from one
// model.safetensors or from the shards its index file lists.
type checkpoint struct {
	dir     string
	files   []*stFile
	tensors map[string]*stTensor
}

// openCheckpoint finds and checks the safetensors files of dir: those that
// model.safetensors.index.json lists when it exists, else every
// *.safetensors file.
func openCheckpoint(dir string) (*checkpoint, error) {
	names, err := checkpointFiles(dir)
	if err != nil {
		return nil, err
	}
	c := &checkpoint{dir: dir, tensors: make(map[string]*stTensor)}
	for _, name := range names {
		if err := c.add(filepath.Join(dir, name)); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// checkpointFiles lists the safetensors files of dir, sorted.
func checkpointFiles(dir string) ([]string, error) {
	index := filepath.Join(dir, "model.safetensors.index.json")
	data, err := os.ReadFile(index)
	if errors.Is(err, os.ErrNotExist) {
		matches, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no *.safetensors files (only safetensors checkpoints are read)", dir)
		}
		names := make([]string, len(matches))
		for i, m := range matches {
			names[i] = filepath.Base(m)
		}
		sort.Strings(names)
		return names, nil
	}
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map", index)
	}
	seen := make(map[string]bool)
	var names []string
	for tensor, file := range idx.WeightMap {
		if file == "" || filepath.Base(file) != file {
			return nil, fmt.Errorf("%s: tensor %q is in %q, which is not a file name in the checkpoint's directory", index, tensor, file)
		}
		if !seen[file] {
			seen[file] = true
			names = append(names, file)
		}
	}
	sort.Strings(names)
	return names, nil
}

// add reads and checks the header of the safetensors file at path.
func (c *checkpoint) add(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	sf := &stFile{path: path, f: f}
	c.files = append(c.files, sf)
	tensors, err := readHeader(sf)
	if err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	for _, t := range tensors {
		if prev, ok := c.tensors[t.name]; ok {
			return fmt.Errorf("safetensors: tensor %q is in both %s and %s", t.name, prev.file.path, path)
		}
		c.tensors[t.name] = t
	}
	return nil
}

// readHeader parses and checks a file's header: every tensor's bytes must
// lie inside the file and match its dtype and shape.
func readHeader(sf *stFile) ([]*stTensor, error) {
	info, err := sf.f.Stat()
	if err != nil {
		return nil, err
	}
	var lenBuf [8]byte
	if _, err := sf.f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("reading the header length: file of %d bytes is truncated: %w", info.Size(), err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeaderBytes || int64(n) > info.Size()-8 {
		return nil, fmt.Errorf("header length %d does not fit the file of %d bytes (or exceeds the limit of %d): truncated or not safetensors", n, info.Size(), maxHeaderBytes)
	}
	header := make([]byte, n)
	if _, err := sf.f.ReadAt(header, 8); err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(header, &entries); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	dataStart := 8 + int64(n)
	dataLen := info.Size() - dataStart
	var tensors []*stTensor
	for name, raw := range entries {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("header entry %q: %w", name, err)
		}
		if len(e.DataOffsets) != 2 || e.DataOffsets[0] < 0 || e.DataOffsets[1] < e.DataOffsets[0] {
			return nil, fmt.Errorf("tensor %q: data_offsets %v, want [begin, end] with 0 <= begin <= end", name, e.DataOffsets)
		}
		if e.DataOffsets[1] > dataLen {
			return nil, fmt.Errorf("tensor %q: data ends at byte %d of the data section, which holds only %d bytes: the file is truncated", name, e.DataOffsets[1], dataLen)
		}
		size := e.DataOffsets[1] - e.DataOffsets[0]
		if es := dtypeBytes(e.DType); es != 0 {
			elems := int64(1)
			for _, d := range e.Shape {
				if d < 0 || d > math.MaxInt32 {
					return nil, fmt.Errorf("tensor %q: shape %v has a bad dim", name, e.Shape)
				}
				elems *= d
				if elems > size {
					break
				}
			}
			if elems*es != size {
				return nil, fmt.Errorf("tensor %q: %s %v needs %d bytes, data_offsets give %d", name, e.DType, e.Shape, elems*es, size)
			}
		}
		tensors = append(tensors, &stTensor{name: name, file: sf, dtype: e.DType, shape: e.Shape, offset: dataStart + e.DataOffsets[0], size: size})
	}
	return tensors, nil
}

// dtypeBytes is the element size of the dtypes the converter reads, 0 for
// others (which are refused when such a tensor is read).
func dtypeBytes(dtype string) int64 {
	switch dtype {
	case "F32":
		return 4
	case "F16", "BF16":
		return 2
	}
	return 0
}

// Close closes the checkpoint's files.
func (c *checkpoint) Close() error {
	var first error
	for _, f := range c.files {
		if err := f.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.files = nil
	return first
}

// tensor returns the named tensor, checking that its shape is rows x cols
// (a vector when rows is 0).
//
// A name of partName's form reads rows lo..hi of a stacked tensor, whose
// whole shape is checked.
func (c *checkpoint) tensor(name string, rows, cols int) (*stTensor, error) {
	if base, part, ok := strings.Cut(name, "#"); ok {
		var lo, hi, total int
		if _, err := fmt.Sscanf(part, "%d:%d:%d", &lo, &hi, &total); err != nil || hi-lo != rows || lo < 0 || hi > total {
			return nil, fmt.Errorf("checkpoint %s: bad part %q of tensor %q for %d rows", c.dir, part, base, rows)
		}
		t, err := c.tensor(base, total, cols)
		if err != nil {
			return nil, err
		}
		es := dtypeBytes(t.dtype)
		return &stTensor{name: fmt.Sprintf("%s rows %d..%d", base, lo, hi), file: t.file, dtype: t.dtype,
			shape: []int64{int64(rows), int64(cols)}, offset: t.offset + int64(lo*cols)*es, size: int64(rows*cols) * es}, nil
	}
	t, ok := c.tensors[name]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s: tensor %q is missing", c.dir, name)
	}
	want := []int64{int64(rows), int64(cols)}
	if rows == 0 {
		want = want[1:]
	}
	if !equalShape(t.shape, want) {
		return nil, fmt.Errorf("safetensors %s: tensor %q has shape %v, the config needs %v", t.file.path, name, t.shape, want)
	}
	if dtypeBytes(t.dtype) == 0 {
		return nil, fmt.Errorf("safetensors %s: tensor %q has dtype %s; wick converts F32, F16 and BF16 tensors", t.file.path, name, t.dtype)
	}
	return t, nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// chunkBytes is about how many bytes of a tensor are read at a time.
const chunkBytes = 4 << 20

// rows reads t as float32 in chunks of whole rows of cols values and calls
// fn with the index of the chunk's first row and its values. The buffers are
// reused between calls.
func (t *stTensor) rows(cols int, fn func(row int, vals []float32) error) error {
	es := dtypeBytes(t.dtype)
	rowBytes := int64(cols) * es
	total := int(t.size / rowBytes)
	per := max(1, int(chunkBytes/rowBytes))
	raw := make([]byte, int64(min(per, total))*rowBytes)
	vals := make([]float32, min(per, total)*cols)
	for r := 0; r < total; r += per {
		n := min(per, total-r)
		buf := raw[:int64(n)*rowBytes]
		if _, err := t.file.f.ReadAt(buf, t.offset+int64(r)*rowBytes); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("safetensors %s: tensor %q: %w", t.file.path, t.name, err)
		}
		v := vals[:n*cols]
		decode(v, buf, t.dtype)
		if err := fn(r, v); err != nil {
			return err
		}
	}
	return nil
}

// decode converts little-endian elements of dtype in b into dst.
func decode(dst []float32, b []byte, dtype string) {
	switch dtype {
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "BF16":
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case "F16":
		for i := range dst {
			dst[i] = f16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// f16ToF32 widens an IEEE 754 half-precision value exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: frac * 2^-24, exact in float32.
	v := float32(frac) * (1.0 / (1 << 24))
	if sign != 0 {
		v = -v
	}
	return v
}
