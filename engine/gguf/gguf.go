// Package gguf reads GGUF files (llama.cpp's model format): the metadata,
// the tensor directory, and tensor rows dequantised to float32, for
// wick's converter. It is written for wick's needs rather than taken from a
// library: the Go GGUF readers available read whole tensors into memory or
// lack the K-quants, while the converter must stream rows of multi-GB files
// and refuse, by name, every tensor type it cannot decode exactly. Its
// dequantisation equals gguf-py's quants.dequantize bit for bit (see the
// tests and testdata/gguf).
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// Magic is the first four bytes of a GGUF file.
const Magic = "GGUF"

// Limits that refuse implausible files before allocating for them.
const (
	maxString  = 1 << 26 // bytes of one metadata string (chat templates are KiB)
	maxArray   = 1 << 26 // entries of one metadata array (vocabularies are < 1M)
	maxTensors = 1 << 20
	maxKVs     = 1 << 20
	maxDims    = 4
)

// File is an opened GGUF file's header: its metadata and tensor directory.
type File struct {
	Version  uint32
	Metadata map[string]any // uint8..int64, float32/64, bool, string, or []any of them
	Tensors  []*Tensor      // in file order
	byName   map[string]*Tensor
	r        io.ReaderAt
	name     string
}

// Tensor is one entry of the tensor directory.
type Tensor struct {
	Name   string
	Type   Type
	Dims   []uint64 // innermost first: Dims[0] values make a row
	Offset int64    // of the first byte in the file
	Size   int64    // bytes
}

// Rows is the number of rows of Dims[0] values.
func (t *Tensor) Rows() int64 {
	n := int64(1)
	for _, d := range t.Dims[1:] {
		n *= int64(d)
	}
	return n
}

// Open reads the header of the GGUF file of size bytes read through r.
// name is used in errors. Everything is bounds-checked against size: a
// truncated or corrupt file is an error naming what is wrong.
func Open(r io.ReaderAt, size int64, name string) (*File, error) {
	f, err := open(r, size, name)
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", name, err)
	}
	return f, nil
}

func open(r io.ReaderAt, size int64, name string) (*File, error) {
	d := &decoder{r: r, size: size}
	if m := d.bytes(4); d.err == nil && string(m) != Magic {
		return nil, fmt.Errorf("not a GGUF file (magic %q)", m)
	}
	f := &File{Metadata: map[string]any{}, byName: map[string]*Tensor{}, r: r, name: name}
	f.Version = d.u32()
	if d.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("GGUF version %d is not supported (2 and 3 are)", f.Version)
	}
	nt, nkv := d.u64(), d.u64()
	if d.err != nil {
		return nil, fmt.Errorf("header: %w", d.err)
	}
	if nt > maxTensors || nkv > maxKVs {
		return nil, fmt.Errorf("header claims %d tensors and %d metadata entries, implausibly many", nt, nkv)
	}
	for i := uint64(0); i < nkv; i++ {
		key := d.str()
		v := d.value(d.u32(), 0)
		if d.err != nil {
			return nil, fmt.Errorf("metadata entry %d (%q): %w", i, key, d.err)
		}
		f.Metadata[key] = v
	}
	for i := uint64(0); i < nt; i++ {
		t := &Tensor{Name: d.str()}
		nd := d.u32()
		if d.err == nil && (nd == 0 || nd > maxDims) {
			return nil, fmt.Errorf("tensor %q: %d dimensions", t.Name, nd)
		}
		for j := uint32(0); j < nd && d.err == nil; j++ {
			t.Dims = append(t.Dims, d.u64())
		}
		t.Type = Type(d.u32())
		off := d.u64()
		if d.err != nil {
			return nil, fmt.Errorf("tensor %d (%q): %w", i, t.Name, d.err)
		}
		if _, dup := f.byName[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		bytes, err := t.Type.rowBytes(t.Dims[0])
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		rows := uint64(1)
		for _, dim := range t.Dims[1:] {
			if dim == 0 || rows > math.MaxInt64/dim {
				return nil, fmt.Errorf("tensor %q: shape %v", t.Name, t.Dims)
			}
			rows *= dim
		}
		if bytes == 0 || rows > uint64(math.MaxInt64)/bytes || off > math.MaxInt64 {
			return nil, fmt.Errorf("tensor %q: shape %v, offset %d: implausible", t.Name, t.Dims, off)
		}
		t.Offset, t.Size = int64(off), int64(rows*bytes)
		f.Tensors = append(f.Tensors, t)
		f.byName[t.Name] = t
	}
	align := int64(32)
	if a, ok := f.Metadata["general.alignment"]; ok {
		v, ok := asInt(a)
		if !ok || v <= 0 || v%8 != 0 || v > 1<<20 {
			return nil, fmt.Errorf("general.alignment %v: want a positive multiple of 8", a)
		}
		align = v
	}
	data := (d.off + align - 1) / align * align
	for _, t := range f.Tensors {
		if t.Offset%align != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not aligned to %d", t.Name, t.Offset, align)
		}
		t.Offset += data
		if t.Offset > size || t.Size > size-t.Offset {
			return nil, fmt.Errorf("tensor %q: bytes %d..%d lie past the end of the file (%d bytes): truncated?", t.Name, t.Offset, t.Offset+t.Size, size)
		}
	}
	return f, nil
}

// Tensor returns the tensor named name, or nil.
func (f *File) Tensor(name string) *Tensor { return f.byName[name] }

// Names lists the tensor names, sorted.
func (f *File) Names() []string {
	out := make([]string, 0, len(f.Tensors))
	for _, t := range f.Tensors {
		out = append(out, t.Name)
	}
	sort.Strings(out)
	return out
}

// String returns metadata key as a string.
func (f *File) String(key string) (string, bool) {
	s, ok := f.Metadata[key].(string)
	return s, ok
}

// Int returns metadata key as an integer (of any integer type).
func (f *File) Int(key string) (int64, bool) { return asInt(f.Metadata[key]) }

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case int64:
		return x, true
	}
	return 0, false
}

// ReadRows decodes rows lo..hi of t into dst (len (hi-lo)*Dims[0]), as
// float32, reading only those rows' bytes.
func (f *File) ReadRows(t *Tensor, lo, hi int64, dst []float32) error {
	cols := t.Dims[0]
	if lo < 0 || hi > t.Rows() || lo > hi || uint64(len(dst)) != uint64(hi-lo)*cols {
		return fmt.Errorf("gguf %s: tensor %q: rows %d..%d of %d into %d values", f.name, t.Name, lo, hi, t.Rows(), len(dst))
	}
	rb, _ := t.Type.rowBytes(cols)
	buf := make([]byte, int64(rb)*(hi-lo))
	if _, err := f.r.ReadAt(buf, t.Offset+int64(rb)*lo); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("gguf %s: tensor %q: %w", f.name, t.Name, err)
	}
	return t.Type.Dequantize(dst, buf)
}

// decoder reads little-endian values at a running offset, remembering the
// first error.
type decoder struct {
	r    io.ReaderAt
	size int64
	off  int64
	err  error
}

func (d *decoder) bytes(n int64) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > d.size-d.off {
		d.err = fmt.Errorf("%d bytes at offset %d lie past the end of the file (%d bytes): truncated?", n, d.off, d.size)
		return nil
	}
	b := make([]byte, n)
	if _, err := d.r.ReadAt(b, d.off); err != nil {
		d.err = err
		return nil
	}
	d.off += n
	return b
}

func (d *decoder) u8() uint8 {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) str() string {
	n := d.u64()
	if d.err == nil && n > maxString {
		d.err = fmt.Errorf("string of %d bytes, implausibly long", n)
	}
	return string(d.bytes(int64(n)))
}

// value reads a metadata value of GGUF type typ; depth bounds nested arrays.
func (d *decoder) value(typ uint32, depth int) any {
	if d.err != nil {
		return nil
	}
	switch typ {
	case 0:
		return d.u8()
	case 1:
		return int8(d.u8())
	case 2:
		return d.u16()
	case 3:
		return int16(d.u16())
	case 4:
		return d.u32()
	case 5:
		return int32(d.u32())
	case 6:
		return math.Float32frombits(d.u32())
	case 7:
		b := d.u8()
		if b > 1 && d.err == nil {
			d.err = fmt.Errorf("bool value %d", b)
		}
		return b == 1
	case 8:
		return d.str()
	case 9:
		et, n := d.u32(), d.u64()
		if d.err == nil && (n > maxArray || depth > 2) {
			d.err = fmt.Errorf("array of %d entries (depth %d), implausible", n, depth)
		}
		out := make([]any, 0, min(n, 1<<16))
		for i := uint64(0); i < n && d.err == nil; i++ {
			out = append(out, d.value(et, depth+1))
		}
		return out
	case 10:
		return d.u64()
	case 11:
		return int64(d.u64())
	case 12:
		return math.Float64frombits(d.u64())
	}
	d.err = fmt.Errorf("unknown metadata value type %d", typ)
	return nil
}
