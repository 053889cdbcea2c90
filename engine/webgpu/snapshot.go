package webgpu

import (
	"fmt"
	"slices"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
)

// Snapshot copies the KV of positions [from, to) out of the GPU arena: the
// same kv.Snapshot, byte for byte, that kv.Arena.Capture gives for an arena
// of the same bytes, so snapshots move freely between backends (the prefix
// cache and saved files do not say which backend made them). The arena
// must still hold them (kv.Layout.CanCapture): to is usually the end of
// the last Forward, Greedy or Restore, since a ring keeps only the last
// window positions written (kv.Region.Live).
func (s *Sequence) Snapshot(from, to int) (*kv.Snapshot, error) {
	snaps, err := s.Snapshots([]kv.Span{{From: from, To: to}})
	if err != nil {
		return nil, err
	}
	return snaps[0], nil
}

// Snapshots takes the snapshots of several spans, each as Snapshot would,
// with one readback: the live rows of every span are copied on the GPU
// into one staging buffer, which is mapped once, and then handed out to
// the snapshots. A prefill step that completed several prefix cache
// blocks so costs one round trip, not one per block. The copies are laid
// out by array (K, V, and their scales, of each region), not by span:
// consecutive blocks are consecutive slots of every array, so one copy
// takes an array's rows of all of them (two where a ring wraps), where a
// copy per block and array (1,664 for 16 blocks of a Gemma-3-1B shape)
// cost a WebGPU call each in a browser and a barrier each on the GPU. If
// any span is refused, none is taken.
func (s *Sequence) Snapshots(spans []kv.Span) ([]*kv.Snapshot, error) {
	var snaps []*kv.Snapshot
	var snapErr error
	if err := s.StartSnapshots(spans, func(got []*kv.Snapshot, err error) { snaps, snapErr = got, err }); err != nil {
		return nil, err
	}
	if err := s.FinishSnapshots(); err != nil {
		return nil, err
	}
	return snaps, snapErr
}

// StartSnapshots is Snapshots without the wait (engine.SnapshotStarter):
// the copies are submitted at once, behind the work that wrote the KV, so
// later steps may overwrite the arena (a ring's slots) freely; the staging
// buffer's map is asked for, and done runs when the bytes are back, in
// whichever wait for the device comes first (the next step's readback, a
// decode batch's, FinishSnapshots). A prompt's first token so waits for
// its logits alone: the blocks the prefix cache takes come back while the
// host has the token. Snapshots started one after another are all out at
// once (a long prompt's steps are not waited for): the first takes the
// staging buffer Snapshots keeps, the others one of their own each
// (WebGPU maps a buffer once at a time), freed when they are finished.
func (s *Sequence) StartSnapshots(spans []kv.Span, done func([]*kv.Snapshot, error)) error {
	lay := s.lay
	for _, sp := range spans {
		if sp.From < 0 || sp.From > sp.To || sp.To > lay.Context {
			return fmt.Errorf("snapshot: positions [%d, %d) outside the KV arena's context of %d", sp.From, sp.To, lay.Context)
		}
		if !lay.CanCapture(s.end, sp.From, sp.To) {
			return fmt.Errorf("snapshot of positions [%d, %d): the KV holds positions up to %d, and its rings no longer hold all of these", sp.From, sp.To, s.end)
		}
	}
	snaps := make([]*kv.Snapshot, len(spans))
	sizes := make([]int64, len(spans))
	var size int64
	for i, sp := range spans {
		snap := &kv.Snapshot{Start: sp.From, End: sp.To, DType: lay.DType, KVHeads: lay.KVHeads, HeadDim: lay.HeadDim}
		var n int64
		for j := range lay.Regions {
			r := &lay.Regions[j]
			sr := kv.SnapRegion{Layer: r.Layer, Ring: r.Ring, From: r.Live(sp.From, sp.To)}
			snap.Regions = append(snap.Regions, sr)
			for _, a := range arraysOf(lay, r) {
				n += int64(sp.To-sr.From) * a.width
			}
		}
		// Data is made when the bytes are back (sizes keeps its length):
		// megabytes of zeroed memory (and the GC work it brings) that
		// would otherwise stand before a prompt's first token.
		sizes[i] = n
		snaps[i] = snap
		size += n
	}
	alloc := func() {
		for i, snap := range snaps {
			snap.Data = make([]byte, sizes[i])
		}
	}
	if size == 0 {
		alloc()
		done(snaps, nil)
		return nil
	}
	mapped := (size + 7) &^ 7 // Map takes whole 8-byte units
	what := fmt.Sprintf("snapshot of positions [%d, %d)", spans[0].From, spans[len(spans)-1].To)
	back, temp, err := s.snapshotBuffer(mapped)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	e := &s.enc
	e.Reset()
	// The staging buffer holds each array's rows of every span in turn;
	// a span's rows that continue the last copy's in the arena (the next
	// position in the next slot) extend that copy. pieces say where each
	// span's rows of each array land in its snapshot's Data.
	var pieces []snapPiece
	dstAt := make([]int64, len(snaps)) // each snapshot's Data filled so far
	var at int64
	for i := range lay.Regions {
		r := &lay.Regions[i]
		for _, a := range arraysOf(lay, r) {
			var run struct{ pos, slot, n int } // the copy being gathered
			var runAt int64
			flush := func() {
				if run.n > 0 {
					e.Copy(s.arena, a.base+int64(run.slot)*a.width, back, runAt, int64(run.n)*a.width)
				}
			}
			for k, snap := range snaps {
				eachRun(r, snap.Regions[i].From, snap.End, func(pos, slot, n int) {
					if run.n == 0 || pos != run.pos+run.n || slot != run.slot+run.n {
						flush()
						run.pos, run.slot, run.n, runAt = pos, slot, 0, at
					}
					run.n += n
					bytes := int64(n) * a.width
					pieces = append(pieces, snapPiece{snap: k, dst: dstAt[k], src: at, n: bytes})
					dstAt[k] += bytes
					at += bytes
				})
			}
			flush()
		}
	}
	p := &pendingSnap{back: back, temp: temp}
	err = s.readBack(back, mapped, func(data []byte, err error) {
		p.done = true
		if err != nil {
			p.failed = true
			done(nil, fmt.Errorf("%s: %w", what, err))
			return
		}
		alloc()
		for _, p := range pieces {
			copy(snaps[p.snap].Data[p.dst:p.dst+p.n], data[p.src:p.src+p.n])
		}
		done(snaps, nil)
	})
	if err != nil {
		s.dropSnapshotBuffer(p)
		return fmt.Errorf("%s: %w", what, err)
	}
	s.snapPending = append(s.snapPending, p)
	return nil
}

// pendingSnap is a started snapshot's readback: its staging buffer (temp:
// one of its own, freed once it is finished), whether its bytes are in,
// and whether its map failed.
type pendingSnap struct {
	back         gpu.Buffer
	temp         bool
	done, failed bool
}

// FinishSnapshots waits for the snapshots StartSnapshots started that are
// still out, and so runs their done (engine.SnapshotStarter).
func (s *Sequence) FinishSnapshots() error {
	out := func() bool {
		return slices.ContainsFunc(s.snapPending, func(p *pendingSnap) bool { return !p.done })
	}
	if len(s.snapPending) == 0 {
		return nil
	}
	var err error
	if out() {
		err = s.m.dev.Poll(true)
		if err == nil && out() {
			err = fmt.Errorf("KV readback did not complete")
		}
	}
	for _, p := range s.snapPending {
		if p.failed || !p.done {
			s.dropSnapshotBuffer(p)
		} else if p.temp {
			s.m.dev.FreeBuffer(p.back)
		}
	}
	s.snapPending = nil
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// dropSnapshotBuffer frees the staging buffer of a readback that failed:
// its map may still be pending, so the kept one is not reused either (the
// next snapshot makes another).
func (s *Sequence) dropSnapshotBuffer(p *pendingSnap) {
	if p.temp {
		s.m.dev.FreeBuffer(p.back)
	} else if p.back == s.snapBack {
		s.freeSnapshotBuffer()
	}
}

// snapPiece is n bytes of the staging buffer at src that belong in
// snapshot snap's Data at dst.
type snapPiece struct {
	snap        int
	dst, src, n int64
}

// snapshotBuffer returns a MapRead buffer of at least size bytes for
// Snapshots: the sequence's own, made once and kept, when size is what the
// blocks of a prefill step take (the prefix cache's snapshots after every
// step, which would otherwise make and free a buffer of megabytes each
// time); a buffer of its own (temp), for the caller to free, for larger
// ones (a saved chat's whole KV), which are rare and would hold memory for
// good, and while the kept one is still out.
func (s *Sequence) snapshotBuffer(size int64) (b gpu.Buffer, temp bool, err error) {
	// The kept buffer is out while its map is (or failed: FinishSnapshots
	// frees it); once its bytes are back it serves again.
	if slices.ContainsFunc(s.snapPending, func(p *pendingSnap) bool { return !p.temp && (!p.done || p.failed) }) {
		b, err = s.m.dev.NewBuffer(size, gpu.MapRead, "kv_snapshot")
		return b, true, err
	}
	if size <= s.snapSize {
		return s.snapBack, false, nil
	}
	var perPos int64
	for i := range s.lay.Regions {
		for _, a := range arraysOf(s.lay, &s.lay.Regions[i]) {
			perPos += a.width
		}
	}
	// A step's blocks: its C positions and the part of a block before it.
	if keep := 2 * int64(s.C) * perPos; size > keep {
		b, err = s.m.dev.NewBuffer(size, gpu.MapRead, "kv_snapshot")
		return b, true, err
	}
	if b, err = s.m.dev.NewBuffer(size, gpu.MapRead, "kv_snapshot"); err != nil {
		return 0, false, err
	}
	s.freeSnapshotBuffer()
	s.snapBack, s.snapSize = b, size
	return b, false, nil
}

// freeSnapshotBuffer frees the buffer snapshotBuffer keeps, if any.
func (s *Sequence) freeSnapshotBuffer() {
	if s.snapSize > 0 {
		s.m.dev.FreeBuffer(s.snapBack)
	}
	s.snapBack, s.snapSize = 0, 0
}

// readBack runs the copies recorded in s.enc, which fill back, and asks
// for back's map: deliver gets its bytes, or the error that lost them,
// inside a later Poll (in the wasm module, Poll(true) hands control to the
// host until the GPU is done, as Greedy's readback does).
func (s *Sequence) readBack(back gpu.Buffer, mapped int64, deliver func([]byte, error)) error {
	if err := s.enc.Err(); err != nil {
		return err
	}
	if err := s.m.dev.Run(s.enc.Bytes()); err != nil {
		return err
	}
	return s.m.dev.Map(back, 0, mapped, deliver)
}

// Restore loads the KV of positions [0, n) from parts (see
// kv.Arena.Restore); the next Forward continues at n. kv.Arena.Restore
// itself checks the parts and puts each position in place, in a host arena
// laid out for just n positions (no bigger than the parts); the rows the
// sequence's arena needs (every position for a global region, the last
// window for a ring) are then written to their slots of the GPU arena, at
// most two runs per array. Nothing is written unless every part fits.
func (s *Sequence) Restore(parts []*kv.Snapshot) error {
	n := 1
	for _, p := range parts {
		if p != nil {
			n = max(n, p.End)
		}
	}
	for i, p := range parts {
		if p == nil {
			return fmt.Errorf("kv restore: part %d is missing", i)
		}
	}
	lay, err := kv.NewLayout(s.m.cfg, min(n, s.lay.Context))
	if err != nil {
		return fmt.Errorf("kv restore: %w", err)
	}
	host := kv.NewArena(lay)
	if n, err = host.Restore(parts); err != nil {
		return err
	}
	var buf []byte
	for i := range s.lay.Regions {
		r, hr := &s.lay.Regions[i], &host.Regions[i]
		lo := r.Live(0, n)
		hostArrays := arraysOf(lay, hr)
		for j, a := range arraysOf(s.lay, r) {
			ha := hostArrays[j]
			var werr error
			eachRun(r, lo, n, func(pos, slot, cnt int) {
				buf = buf[:0]
				for p := pos; p < pos+cnt; p++ {
					at := ha.base + int64(hr.Slot(p))*ha.width
					buf = append(buf, host.Buf[at:at+ha.width]...)
				}
				if werr == nil {
					werr = s.m.dev.Write(s.arena, a.base+int64(slot)*a.width, buf)
				}
			})
			if werr != nil {
				return fmt.Errorf("kv restore: layer %d: %w", r.Layer, werr)
			}
		}
	}
	s.end = n
	return nil
}

// kvArray is one array of a region: K rows, V rows, K scales or V scales,
// each position's width bytes at base+slot*width.
type kvArray struct{ base, width int64 }

// arraysOf lists r's arrays in the order kv.Snapshot holds them.
func arraysOf(lay *kv.Layout, r *kv.Region) []kvArray {
	rows := int64(lay.KVHeads)
	arr := []kvArray{{r.K, rows * lay.RowBytes}, {r.V, rows * lay.RowBytes}}
	if lay.DType == model.Int8 {
		arr = append(arr, kvArray{r.KScale, rows * 4}, kvArray{r.VScale, rows * 4})
	}
	return arr
}

// eachRun walks positions [from, to) of r as runs of consecutive slots, in
// position order, calling f with each run's first position, first slot
// and length. A ring's positions wrap to slot 0 once, as long as they are
// no more than its slots (every caller's are).
func eachRun(r *kv.Region, from, to int, f func(pos, slot, n int)) {
	for p := from; p < to; {
		slot := r.Slot(p)
		n := to - p
		if r.Ring {
			n = min(n, r.Slots-slot)
		}
		f(p, slot, n)
		p += n
	}
}
