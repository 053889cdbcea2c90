package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/wick-run/wick/engine/model"
)

// Snapshot is the live KV of positions [Start, End) copied out of an arena:
// what the prefix cache keeps per block and what a saved conversation holds.
// Only what attention can still read is kept: a global producer's every
// position in the range, a local producer's last Window-1 of them (all that
// attention at the next position reads), a consumer nothing (it reads its producer's region). A
// snapshot does not depend on the arena's context, so it restores into a
// session of any context that holds End positions.
//
// A snapshot is immutable once made: the prefix cache hands the same one to
// many sessions.
type Snapshot struct {
	Start, End int
	DType      model.DType
	KVHeads    int
	HeadDim    int
	Regions    []SnapRegion // one per producer, in the layout's order
	// Data holds, region after region, the K rows of positions From..End-1,
	// then their V rows, then (int8) their K scales and their V scales.
	Data []byte
}

// SnapRegion says which positions a snapshot holds for one producer.
type SnapRegion struct {
	Layer int  // the producer layer
	Ring  bool // a local producer
	From  int  // first position held; End is the snapshot's
}

// Bytes is the snapshot's size in memory: its KV data.
func (s *Snapshot) Bytes() int64 { return int64(len(s.Data)) }

// slotBytes is the bytes one position takes in one region: K and V rows of
// every KV head, and their scales in int8 mode.
func slotBytes(dtype model.DType, kvHeads, headDim int) int64 {
	if dtype == model.F32 {
		return 2 * int64(kvHeads) * int64(headDim) * 4
	}
	return 2 * int64(kvHeads) * (int64(headDim) + 4)
}

// Span is the positions [From, To) of a snapshot to take.
type Span struct{ From, To int }

// CanCapture reports whether positions [from, to) can be copied out of an
// arena whose last write (Forward or Restore) ended at position end: what a
// snapshot keeps of them is still in place. A global region keeps every
// position. A snapshot of a ring holds only what a continuation at `to`
// attends to, the Window-1 positions before it (see Region.Live), and a
// ring of Slots slots holds the positions [end-Slots, end) after writing
// up to end. So a block can be taken after a write that ran past its end,
// as long as the ring still holds the block's live part (a prefill step
// longer than a block snapshots every block it completed afterwards), and
// a session can save after a decode batch that ran one step past a stop
// token.
func (l *Layout) CanCapture(end, from, to int) bool {
	if from < 0 || from > to || to > end {
		return false
	}
	return end <= l.CaptureBound(from, to)
}

// CaptureBound is the furthest a write may reach (the largest end) with
// positions [from, to) still capturable (CanCapture): a ring's live part
// of them, from Region.Live, is overwritten once position Live+Slots is
// written. Without rings nothing bounds it (it returns the context).
func (l *Layout) CaptureBound(from, to int) int {
	bound := l.Context
	for i := range l.Regions {
		if r := &l.Regions[i]; r.Ring {
			bound = min(bound, r.Live(from, to)+r.Slots)
		}
	}
	return bound
}

// Live is the first position of [from, to) that a snapshot keeps of r: all
// of them for a global region, and for a ring only the last Window-1, since
// attention at `to` (the next position) reads no further back.
func (r *Region) Live(from, to int) int {
	if r.Ring {
		return max(from, to-(r.Window-1))
	}
	return from
}

// Capture copies the KV of positions [from, to) out of a. The caller makes
// sure the arena still holds them (see Layout.CanCapture).
func (a *Arena) Capture(from, to int) (*Snapshot, error) {
	if from < 0 || from > to || to > a.Context {
		return nil, fmt.Errorf("kv capture: positions [%d, %d) outside the arena's context of %d", from, to, a.Context)
	}
	s := &Snapshot{Start: from, End: to, DType: a.DType, KVHeads: a.KVHeads, HeadDim: a.HeadDim}
	var size int64
	for _, r := range a.Regions {
		sr := SnapRegion{Layer: r.Layer, Ring: r.Ring, From: r.Live(from, to)}
		s.Regions = append(s.Regions, sr)
		size += int64(to-sr.From) * slotBytes(a.DType, a.KVHeads, a.HeadDim)
	}
	s.Data = make([]byte, 0, size)
	for i := range a.Regions {
		r, sr := &a.Regions[i], s.Regions[i]
		a.eachSlot(r, sr.From, to, func(_ int, at, n int64) {
			s.Data = append(s.Data, a.Buf[at:at+n]...)
		})
	}
	return s, nil
}

// eachSlot walks the K rows, V rows, K scales and V scales of positions
// [from, to) of r in that order (the order of Snapshot.Data), calling f with
// each one's position, arena offset and length.
func (a *Arena) eachSlot(r *Region, from, to int, f func(pos int, at, n int64)) {
	rows := int64(a.KVHeads)
	arrays := []struct{ base, width int64 }{{r.K, rows * a.RowBytes}, {r.V, rows * a.RowBytes}}
	if a.DType == model.Int8 {
		arrays = append(arrays, struct{ base, width int64 }{r.KScale, rows * 4}, struct{ base, width int64 }{r.VScale, rows * 4})
	}
	for _, arr := range arrays {
		for p := from; p < to; p++ {
			f(p, arr.base+int64(r.Slot(p))*arr.width, arr.width)
		}
	}
}

// Restore loads the KV of positions [0, n) into a from parts, which must
// cover [0, n) contiguously in order: one snapshot from 0, or a prefix
// cache's chain of blocks. It returns n. Ring positions older than the ring
// holds are skipped. Nothing is written unless every part fits a.
func (a *Arena) Restore(parts []*Snapshot) (int, error) {
	n := 0
	for i, s := range parts {
		if err := a.checkShape(s); err != nil {
			return 0, fmt.Errorf("kv restore: part %d: %w", i, err)
		}
		if s.Start != n {
			return 0, fmt.Errorf("kv restore: part %d holds positions [%d, %d), want them to start at %d", i, s.Start, s.End, n)
		}
		n = s.End
	}
	if n > a.Context {
		return 0, fmt.Errorf("kv restore: %d positions do not fit the arena's context of %d", n, a.Context)
	}
	for i, s := range parts {
		for j, sr := range s.Regions {
			r := &a.Regions[j]
			if need := a.needFrom(r, s.Start, n); need < s.End && sr.From > need {
				return 0, fmt.Errorf("kv restore: part %d holds layer %d's positions from %d, the arena needs them from %d", i, sr.Layer, sr.From, need)
			}
		}
	}
	for _, s := range parts {
		data := s.Data
		for j, sr := range s.Regions {
			r := &a.Regions[j]
			held := int64(s.End-sr.From) * slotBytes(a.DType, a.KVHeads, a.HeadDim)
			region := data[:held]
			data = data[held:]
			need := a.needFrom(r, s.Start, n)
			if need >= s.End {
				continue // every position of this part is older than the ring holds
			}
			// Walk the stored rows in their order, writing only those the
			// arena needs: older ring positions would be overwritten anyway.
			var src int64
			a.eachSlot(r, sr.From, s.End, func(pos int, at, w int64) {
				if pos >= need {
					copy(a.Buf[at:at+w], region[src:src+w])
				}
				src += w
			})
		}
	}
	return n, nil
}

// needFrom is the first position of a part starting at start that region r
// needs when the restored sequence ends at n (see Region.Live).
func (a *Arena) needFrom(r *Region, start, n int) int { return r.Live(start, n) }

// checkShape reports whether s was captured from an arena of this layout's
// shape and is internally consistent.
func (a *Arena) checkShape(s *Snapshot) error {
	if s.DType != a.DType || s.KVHeads != a.KVHeads || s.HeadDim != a.HeadDim {
		return fmt.Errorf("snapshot is %v with %d KV heads of %d, the arena %v with %d of %d", s.DType, s.KVHeads, s.HeadDim, a.DType, a.KVHeads, a.HeadDim)
	}
	if len(s.Regions) != len(a.Regions) {
		return fmt.Errorf("snapshot has %d KV regions, the arena %d", len(s.Regions), len(a.Regions))
	}
	if s.Start < 0 || s.Start > s.End {
		return fmt.Errorf("snapshot holds positions [%d, %d)", s.Start, s.End)
	}
	var size int64
	for j, sr := range s.Regions {
		r := a.Regions[j]
		if sr.Layer != r.Layer || sr.Ring != r.Ring {
			return fmt.Errorf("snapshot region %d is layer %d (ring %v), the arena's is layer %d (ring %v)", j, sr.Layer, sr.Ring, r.Layer, r.Ring)
		}
		if sr.From < s.Start || sr.From > s.End || (!sr.Ring && sr.From != s.Start) {
			return fmt.Errorf("snapshot region %d holds positions from %d, outside [%d, %d]", j, sr.From, s.Start, s.End)
		}
		size += int64(s.End-sr.From) * slotBytes(a.DType, a.KVHeads, a.HeadDim)
	}
	if size != int64(len(s.Data)) {
		return fmt.Errorf("snapshot has %d bytes of KV, its regions need %d", len(s.Data), size)
	}
	return nil
}

// Snapshot file errors. Every error DecodeFile returns wraps one of them.
var (
	// ErrSnapshotCorrupt: the data is not a whole snapshot file (truncated,
	// damaged, or not a snapshot at all).
	ErrSnapshotCorrupt = errors.New("kv snapshot is corrupted or truncated")
	// ErrSnapshotVersion: a snapshot file of a format version this build
	// does not read.
	ErrSnapshotVersion = errors.New("kv snapshot has an unsupported version")
	// ErrSnapshotModel: a sound snapshot saved by another model, or by the
	// same weights run in another mode (int8 or float32).
	ErrSnapshotModel = errors.New("kv snapshot is from another model")
)

// FileVersion is the snapshot file format version this package writes and reads.
const FileVersion = 1

// fileMagic opens every snapshot file. The \r\n catches text-mode mangling.
const fileMagic = "wickKV\r\n"

// Limits on what a snapshot file may declare, checked before anything is
// sized from it.
const (
	maxFileTokens  = 1 << 20
	maxFileRegions = 1024
	maxFileLayers  = 1024 // model.Config's limit on layers
	maxFileDim     = 4096
	maxFileMeta    = 64 << 20
)

// Identity names what produced a snapshot: the model's weights and its
// config (which includes the mode, int8 or float32). Engine fills it with
// sha256 hashes; kv only compares it.
type Identity struct {
	Model  [32]byte
	Config [32]byte
}

// File is a conversation persisted: the tokens so far, the KV of the first
// KV.End of them, and the caller's own data (the engine keeps the chat's
// messages there).
type File struct {
	Identity
	Tokens []int32
	Meta   []byte
	KV     *Snapshot // Start 0, End at most len(Tokens)
}

// header is the fixed part of a snapshot file after the magic, all
// little-endian uint32 but for the hashes.
type header struct {
	Version  uint32
	Identity Identity
	DType    uint32
	KVHeads  uint32
	HeadDim  uint32
	Tokens   uint32 // token count
	KVEnd    uint32 // positions of KV held, at most Tokens
	Regions  uint32
	MetaLen  uint32
}

const headerBytes = 4 + 64 + 7*4

// Encode lays f out in the snapshot file format:
//
//	magic "wickKV\r\n", then header (version, model and config hashes,
//	dtype, KV heads, head dim, token count, KV positions, region count,
//	meta length), then per region (layer, ring, first position held),
//	then the tokens (int32), the meta bytes, the KV data, and a CRC-32C
//	of everything before it.
func (f *File) Encode() ([]byte, error) {
	s := f.KV
	if s == nil || s.Start != 0 || s.End > len(f.Tokens) {
		return nil, fmt.Errorf("kv snapshot file: KV must hold positions [0, n) with n at most the %d tokens", len(f.Tokens))
	}
	if len(f.Tokens) > maxFileTokens || len(s.Regions) > maxFileRegions || len(f.Meta) > maxFileMeta {
		return nil, fmt.Errorf("kv snapshot file: %d tokens, %d regions, %d meta bytes: over the limits %d, %d, %d",
			len(f.Tokens), len(s.Regions), len(f.Meta), maxFileTokens, maxFileRegions, maxFileMeta)
	}
	b := make([]byte, 0, len(fileMagic)+headerBytes+12*len(s.Regions)+4*len(f.Tokens)+len(f.Meta)+len(s.Data)+4)
	b = append(b, fileMagic...)
	u32 := func(v int) { b = binary.LittleEndian.AppendUint32(b, uint32(v)) }
	u32(FileVersion)
	b = append(b, f.Model[:]...)
	b = append(b, f.Config[:]...)
	for _, v := range []int{int(s.DType), s.KVHeads, s.HeadDim, len(f.Tokens), s.End, len(s.Regions), len(f.Meta)} {
		u32(v)
	}
	for _, r := range s.Regions {
		ring := 0
		if r.Ring {
			ring = 1
		}
		u32(r.Layer)
		u32(ring)
		u32(r.From)
	}
	for _, t := range f.Tokens {
		u32(int(t))
	}
	b = append(b, f.Meta...)
	b = append(b, s.Data...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DecodeFile parses a snapshot file and checks that want produced it. A
// damaged or truncated file gives an error wrapping ErrSnapshotCorrupt, an
// unknown version ErrSnapshotVersion, a file of another model or mode
// ErrSnapshotModel (with the file still returned, since its tokens and meta
// are sound).
func DecodeFile(data []byte, want Identity) (*File, error) {
	if len(data) < len(fileMagic)+4 || string(data[:len(fileMagic)]) != fileMagic {
		return nil, fmt.Errorf("%w: no snapshot magic (%d bytes)", ErrSnapshotCorrupt, len(data))
	}
	rest := data[len(fileMagic):]
	if v := binary.LittleEndian.Uint32(rest); v != FileVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads version %d", ErrSnapshotVersion, v, FileVersion)
	}
	if len(rest) < headerBytes {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrSnapshotCorrupt, len(data))
	}
	var h header
	h.Version = binary.LittleEndian.Uint32(rest)
	copy(h.Identity.Model[:], rest[4:36])
	copy(h.Identity.Config[:], rest[36:68])
	fields := []*uint32{&h.DType, &h.KVHeads, &h.HeadDim, &h.Tokens, &h.KVEnd, &h.Regions, &h.MetaLen}
	for i, p := range fields {
		*p = binary.LittleEndian.Uint32(rest[68+4*i:])
	}
	rest = rest[headerBytes:]
	dtype := model.DType(h.DType)
	switch {
	case dtype != model.Int8 && dtype != model.F32:
		return nil, fmt.Errorf("%w: unknown dtype %d", ErrSnapshotCorrupt, h.DType)
	case h.KVHeads == 0 || h.KVHeads > maxFileDim || h.HeadDim == 0 || h.HeadDim > maxFileDim:
		return nil, fmt.Errorf("%w: %d KV heads of %d outside 1..%d", ErrSnapshotCorrupt, h.KVHeads, h.HeadDim, maxFileDim)
	case h.Tokens > maxFileTokens || h.KVEnd > h.Tokens:
		return nil, fmt.Errorf("%w: %d tokens with KV of %d (limit %d)", ErrSnapshotCorrupt, h.Tokens, h.KVEnd, maxFileTokens)
	case h.Regions > maxFileRegions || h.MetaLen > maxFileMeta:
		return nil, fmt.Errorf("%w: %d regions, %d meta bytes (limits %d, %d)", ErrSnapshotCorrupt, h.Regions, h.MetaLen, maxFileRegions, maxFileMeta)
	}
	if len(rest) < 12*int(h.Regions) {
		return nil, fmt.Errorf("%w: %d bytes, too short for %d regions", ErrSnapshotCorrupt, len(data), h.Regions)
	}
	s := &Snapshot{Start: 0, End: int(h.KVEnd), DType: dtype, KVHeads: int(h.KVHeads), HeadDim: int(h.HeadDim)}
	var kvBytes int64
	for i := 0; i < int(h.Regions); i++ {
		layer, ring, from := binary.LittleEndian.Uint32(rest), binary.LittleEndian.Uint32(rest[4:]), binary.LittleEndian.Uint32(rest[8:])
		rest = rest[12:]
		if layer >= maxFileLayers || ring > 1 || from > h.KVEnd || (ring == 0 && from != 0) {
			return nil, fmt.Errorf("%w: region %d: layer %d, ring %d, from %d of %d positions", ErrSnapshotCorrupt, i, layer, ring, from, h.KVEnd)
		}
		s.Regions = append(s.Regions, SnapRegion{Layer: int(layer), Ring: ring == 1, From: int(from)})
		kvBytes += int64(h.KVEnd-from) * slotBytes(dtype, s.KVHeads, s.HeadDim)
	}
	wantLen := int64(len(fileMagic)+headerBytes+12*int(h.Regions)) + 4*int64(h.Tokens) + int64(h.MetaLen) + kvBytes + 4
	if int64(len(data)) != wantLen {
		return nil, fmt.Errorf("%w: %d bytes, its header describes %d", ErrSnapshotCorrupt, len(data), wantLen)
	}
	body := data[:len(data)-4]
	if sum, got := binary.LittleEndian.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); sum != got {
		return nil, fmt.Errorf("%w: checksum %08x, the data sums to %08x", ErrSnapshotCorrupt, sum, got)
	}
	f := &File{Identity: h.Identity, Tokens: make([]int32, h.Tokens), KV: s}
	for i := range f.Tokens {
		f.Tokens[i] = int32(binary.LittleEndian.Uint32(rest[4*i:]))
	}
	rest = rest[4*int(h.Tokens):]
	f.Meta = append([]byte(nil), rest[:h.MetaLen]...)
	s.Data = append([]byte(nil), rest[h.MetaLen:len(rest)-4]...)
	if h.Identity.Model != want.Model {
		return f, fmt.Errorf("%w: saved by model %x, this is %x", ErrSnapshotModel, h.Identity.Model[:6], want.Model[:6])
	}
	if h.Identity.Config != want.Config {
		return f, fmt.Errorf("%w: saved with config %x (model architecture or int8/float32 mode), this is %x", ErrSnapshotModel, h.Identity.Config[:6], want.Config[:6])
	}
	return f, nil
}
