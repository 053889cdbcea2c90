package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Type is a GGML tensor type.
type Type uint32

// The tensor types wick reads (ggml's numbering).
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	BF16 Type = 30
)

// layout is a type's block: values per block and bytes per block.
var layout = map[Type]struct {
	name          string
	values, bytes uint64
}{
	F32: {"F32", 1, 4}, F16: {"F16", 1, 2}, BF16: {"BF16", 1, 2},
	Q4_0: {"Q4_0", 32, 18}, Q4_1: {"Q4_1", 32, 20}, Q5_0: {"Q5_0", 32, 22}, Q5_1: {"Q5_1", 32, 24},
	Q8_0: {"Q8_0", 32, 34}, Q4_K: {"Q4_K", 256, 144}, Q5_K: {"Q5_K", 256, 176}, Q6_K: {"Q6_K", 256, 210},
}

func (t Type) String() string {
	if l, ok := layout[t]; ok {
		return l.name
	}
	return fmt.Sprintf("%d", uint32(t))
}

// rowBytes is the bytes of a row of cols values; an error for a type wick
// does not read or a row that is not whole blocks.
func (t Type) rowBytes(cols uint64) (uint64, error) {
	l, ok := layout[t]
	if !ok {
		return 0, fmt.Errorf("tensor type %s is not supported (wick reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K)", t)
	}
	if cols == 0 || cols%l.values != 0 {
		return 0, fmt.Errorf("rows of %d values are not whole %s blocks of %d", cols, t, l.values)
	}
	return cols / l.values * l.bytes, nil
}

// Dequantize decodes whole blocks of t in src into dst, as gguf-py's
// quants.dequantize does, operation for operation in float32 (each product
// is converted to float32 explicitly, which keeps Go from fusing it into a
// multiply-add and so from rounding differently).
func (t Type) Dequantize(dst []float32, src []byte) error {
	l, ok := layout[t]
	if !ok {
		_, err := t.rowBytes(0)
		return err
	}
	if uint64(len(src))%l.bytes != 0 || uint64(len(dst)) != uint64(len(src))/l.bytes*l.values {
		return fmt.Errorf("%s: %d bytes into %d values: not whole blocks", t, len(src), len(dst))
	}
	for b := 0; len(src) > 0; b++ {
		blk, out := src[:l.bytes], dst[:l.values]
		src, dst = src[l.bytes:], dst[l.values:]
		switch t {
		case F32:
			out[0] = math.Float32frombits(binary.LittleEndian.Uint32(blk))
		case F16:
			out[0] = half(blk)
		case BF16:
			out[0] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(blk)) << 16)
		case Q8_0:
			d := half(blk)
			for i := range 32 {
				out[i] = float32(float32(int8(blk[2+i])) * d)
			}
		case Q4_0, Q4_1, Q5_0, Q5_1:
			legacy(t, out, blk)
		case Q4_K, Q5_K:
			kquant(t, out, blk)
		case Q6_K:
			q6k(out, blk)
		}
	}
	return nil
}

// legacy decodes the 32-value blocks: d (and m) as float16, 4-bit values
// (low nibbles first, then high), the fifth bits of Q5 in a 32-bit word.
func legacy(t Type, out []float32, blk []byte) {
	d := half(blk)
	var m float32
	off := 2
	if t == Q4_1 || t == Q5_1 {
		m, off = half(blk[2:]), 4
	}
	var qh uint32
	if t == Q5_0 || t == Q5_1 {
		qh, off = binary.LittleEndian.Uint32(blk[off:]), off+4
	}
	qs := blk[off:]
	for i := range 32 {
		q := uint32(qs[i%16]>>(4*(i/16))) & 0xF
		if t == Q5_0 || t == Q5_1 {
			q |= (qh >> i & 1) << 4
		}
		switch t {
		case Q4_0:
			out[i] = float32(d * float32(int8(q)-8))
		case Q5_0:
			out[i] = float32(d * float32(int8(q)-16))
		default: // Q4_1, Q5_1
			out[i] = float32(d*float32(q)) + m
		}
	}
}

// kquant decodes Q4_K and Q5_K superblocks: d and dmin, eight 6-bit scales
// and mins packed in 12 bytes, 4-bit values in groups of 32 bytes (low
// nibbles for the even sub-block, high for the odd), and for Q5_K a fifth
// bit per value from 32 bytes, bit s for sub-block s.
func kquant(t Type, out []float32, blk []byte) {
	d, dmin := half(blk), half(blk[2:])
	sc := blk[4:16]
	var scale, mins [8]uint8
	for j := range 4 {
		scale[j], mins[j] = sc[j]&0x3F, sc[4+j]&0x3F
		scale[4+j] = sc[8+j]&0x0F | (sc[j]>>2)&0x30
		mins[4+j] = sc[8+j]>>4 | (sc[4+j]>>2)&0x30
	}
	qh, qs := []byte(nil), blk[16:]
	if t == Q5_K {
		qh, qs = blk[16:48], blk[48:]
	}
	for s := range 8 {
		ds := float32(d * float32(scale[s]))
		dm := float32(dmin * float32(mins[s]))
		for j := range 32 {
			q := qs[(s/2)*32+j] >> (4 * (s % 2)) & 0xF
			if qh != nil {
				q |= (qh[j] >> s & 1) << 4
			}
			out[s*32+j] = float32(ds*float32(q)) - dm
		}
	}
}

// q6k decodes a Q6_K superblock: low 4 bits in 128 bytes, high 2 bits in
// 64, sixteen int8 scales, then d.
func q6k(out []float32, blk []byte) {
	ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
	d := half(blk[208:])
	for p := range 256 {
		h, r := p/128, p%128
		lo := ql[h*64+r%64] >> (4 * (r / 64)) & 0xF
		hi := qh[h*32+r%32] >> (2 * (r / 32)) & 3
		q := int8(lo|hi<<4) - 32
		ds := float32(d * float32(int8(sc[p/16])))
		out[p] = float32(ds * float32(q))
	}
}

// half decodes the little-endian IEEE float16 at b exactly.
func half(b []byte) float32 {
	h := binary.LittleEndian.Uint16(b)
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	man := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F: // inf, NaN
		return math.Float32frombits(sign | 0xFF<<23 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: normalise.
	e := uint32(113)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3FF)<<13)
}
