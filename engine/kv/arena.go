// Package kv lays out wick's KV cache: one arena for the whole model in which
// each producer layer owns a region. Local producers are rings of `window`
// slots and RingRoom more, global producers hold every position up to the context limit, and
// consumer layers (cross-layer KV sharing) own nothing and read their
// producer's region. The same Layout addresses the CPU arena (a []byte) and
// the GPU arena (one storage buffer).
package kv

import (
	"fmt"
	"unsafe"

	"github.com/wick-run/wick/engine/model"
)

// Align is the byte alignment of every array in the arena: a WebGPU storage
// binding offset must be a multiple of minStorageBufferOffsetAlignment (256).
const Align = 256

// Region is one producer layer's part of the arena. Values are laid out
// [Slots][KVHeads][HeadDim] (int8 or float32); in int8 mode each (slot,
// head) row has a float32 scale, laid out [Slots][KVHeads].
type Region struct {
	Layer  int  // the producer layer
	Slots  int  // positions held: the window and RingRoom (ring), or the context limit
	Ring   bool // local layer: position p lives in slot p % Slots
	Window int  // local layer: its window (Slots is smaller when the context is)
	// Byte offsets into the arena.
	K, V           int64
	KScale, VScale int64 // int8 mode only
}

// Slot is where position pos lives in r.
func (r *Region) Slot(pos int) int {
	if r.Ring {
		return pos % r.Slots
	}
	return pos
}

// RingRoom is how many slots a ring holds beyond its window: how far past
// the end it keeps a sequence may write and still take those positions
// back (Layout.CanRewind). Devices decode in batches of up to four steps
// and see a stop token among the picks only after the steps behind it
// ran; a ring of exactly `window` slots can take back one position once
// it has wrapped, so every chat longer than the window decoded two steps
// a batch (twice the readbacks and the GPU idling between them). Eight
// slots, a few hundred bytes a ring, allow batches of up to ten steps.
// Attention reads a layer's window alone (position p in slot p % Slots),
// so the room changes no result, and a snapshot holds positions, not
// slots.
const RingRoom = 8

// Layout places every producer's region in one arena.
type Layout struct {
	DType    model.DType
	KVHeads  int
	HeadDim  int
	Context  int
	Regions  []Region
	OfLayer  []int // region index read by each layer (its producer's)
	Bytes    int64 // arena size
	RowBytes int64 // bytes of one (slot, head) row of values
}

// NewLayout lays out the KV arena of c for sequences of at most context positions.
func NewLayout(c *model.Config, context int) (*Layout, error) {
	if context <= 0 || context > c.ContextLen {
		return nil, fmt.Errorf("kv layout: context %d outside 1..%d (the model's context_len)", context, c.ContextLen)
	}
	elem := int64(1)
	if c.DType == model.F32 {
		elem = 4
	}
	lay := &Layout{DType: c.DType, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Context: context,
		OfLayer: make([]int, len(c.Layers)), RowBytes: elem * int64(c.HeadDim)}
	var off int64
	alloc := func(n int64) int64 {
		at := off
		off += (n + Align - 1) / Align * Align
		return at
	}
	regionOf := map[int]int{}
	for i, l := range c.Layers {
		if !c.Producer(i) {
			lay.OfLayer[i] = regionOf[l.KVSource]
			continue
		}
		r := Region{Layer: i, Slots: context, Window: l.Window}
		if l.Kind == model.Local && l.Window+RingRoom < context {
			r.Slots, r.Ring = l.Window+RingRoom, true
		} else if l.Kind == model.Local {
			r.Ring = true // a window wider than the context still addresses as a ring
		}
		rows := int64(r.Slots) * int64(c.KVHeads)
		r.K = alloc(rows * lay.RowBytes)
		r.V = alloc(rows * lay.RowBytes)
		if c.DType == model.Int8 {
			r.KScale = alloc(rows * 4)
			r.VScale = alloc(rows * 4)
		}
		regionOf[i] = len(lay.Regions)
		lay.OfLayer[i] = len(lay.Regions)
		lay.Regions = append(lay.Regions, r)
	}
	lay.Bytes = off
	return lay, nil
}

// Arena is the CPU-side KV cache: one byte slice addressed by a Layout.
type Arena struct {
	*Layout
	Buf []byte
}

// NewArena allocates a zeroed arena for lay.
func NewArena(lay *Layout) *Arena {
	// float32 views need 4-byte alignment: allocate as uint32 words.
	words := make([]uint32, (lay.Bytes+3)/4)
	buf := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), lay.Bytes)
	return &Arena{Layout: lay, Buf: buf}
}

// Row addresses one (slot, head) row of a region: its values and, in int8
// mode, its scale.
type Row struct {
	I8    []int8
	F32   []float32
	Scale *float32
}

func (a *Arena) row(valOff, scaleOff int64, slot, head int) Row {
	idx := int64(slot)*int64(a.KVHeads) + int64(head)
	at := valOff + idx*a.RowBytes
	if a.DType == model.F32 {
		return Row{F32: unsafe.Slice((*float32)(unsafe.Pointer(&a.Buf[at])), a.HeadDim)}
	}
	return Row{
		I8:    unsafe.Slice((*int8)(unsafe.Pointer(&a.Buf[at])), a.HeadDim),
		Scale: (*float32)(unsafe.Pointer(&a.Buf[scaleOff+idx*4])),
	}
}

// K returns the key row of position pos and KV head h in region r.
func (a *Arena) K(r *Region, pos, h int) Row { return a.row(r.K, r.KScale, r.Slot(pos), h) }

// V returns the value row of position pos and KV head h in region r.
func (a *Arena) V(r *Region, pos, h int) Row { return a.row(r.V, r.VScale, r.Slot(pos), h) }

// Region returns the region layer reads.
func (a *Arena) Region(layer int) *Region { return &a.Regions[a.OfLayer[layer]] }

// CanRewind reports whether a sequence whose KV holds positions [0, from)
// can be cut back to [0, to) in place. Global regions always can. A ring of
// S slots and window W can while the positions attention at `to` still
// needs, max(0, to-W+1) .. to-1, have not been overwritten: position j is
// overwritten once j+S has been written, and the first needed position to
// be hit is the smallest, max(0, to-W+1). With S = W + RingRoom that
// allows writing RingRoom+1 positions past `to`.
func (l *Layout) CanRewind(from, to int) bool {
	if to >= from || to == 0 {
		return true
	}
	for _, r := range l.Regions {
		if r.Ring && from > max(0, to-r.Window+1)+r.Slots {
			return false
		}
	}
	return true
}
