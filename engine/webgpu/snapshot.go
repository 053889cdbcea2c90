package webgpu

import (
	"fmt"

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
// into one staging buffer already in the snapshots' order (each array of a
// region is at most two runs of slots, split where its ring wraps), which
// is mapped once. A prefill step that completed several prefix cache
// blocks so costs one round trip, not one per block. If any span is
// refused, none is taken.
func (s *Sequence) Snapshots(spans []kv.Span) ([]*kv.Snapshot, error) {
	lay := s.lay
	for _, sp := range spans {
		if sp.From < 0 || sp.From > sp.To || sp.To > lay.Context {
			return nil, fmt.Errorf("snapshot: positions [%d, %d) outside the KV arena's context of %d", sp.From, sp.To, lay.Context)
		}
		if !lay.CanCapture(s.end, sp.From, sp.To) {
			return nil, fmt.Errorf("snapshot of positions [%d, %d): the KV holds positions up to %d, and its rings no longer hold all of these", sp.From, sp.To, s.end)
		}
	}
	snaps := make([]*kv.Snapshot, len(spans))
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
		snap.Data = make([]byte, n)
		snaps[i] = snap
		size += n
	}
	if size == 0 {
		return snaps, nil
	}
	mapped := (size + 7) &^ 7 // Map takes whole 8-byte units
	what := fmt.Sprintf("snapshot of positions [%d, %d)", spans[0].From, spans[len(spans)-1].To)
	back, err := s.m.dev.NewBuffer(mapped, gpu.MapRead, "kv_snapshot")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer s.m.dev.FreeBuffer(back)
	e := &s.enc
	e.Reset()
	var at int64
	dsts := make([][]byte, len(snaps))
	for k, snap := range snaps {
		for i := range lay.Regions {
			r := &lay.Regions[i]
			for _, a := range arraysOf(lay, r) {
				eachRun(r, snap.Regions[i].From, snap.End, func(_, slot, n int) {
					e.Copy(s.arena, a.base+int64(slot)*a.width, back, at, int64(n)*a.width)
					at += int64(n) * a.width
				})
			}
		}
		dsts[k] = snap.Data
	}
	if err := s.readBack(dsts, back, mapped); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return snaps, nil
}

// readBack runs the copies recorded in s.enc, which fill back, then maps
// back and copies its bytes to dsts, one after another. Map completes
// inside Poll; in the wasm module Poll(true) hands control to the host
// until the GPU is done, as Greedy's readback does.
func (s *Sequence) readBack(dsts [][]byte, back gpu.Buffer, mapped int64) error {
	if err := s.enc.Err(); err != nil {
		return err
	}
	if err := s.m.dev.Run(s.enc.Bytes()); err != nil {
		return err
	}
	var mapErr error
	done := false
	if err := s.m.dev.Map(back, 0, mapped, func(data []byte, err error) {
		done, mapErr = true, err
		if err == nil {
			for _, dst := range dsts {
				data = data[copy(dst, data):]
			}
		}
	}); err != nil {
		return err
	}
	if err := s.m.dev.Poll(true); err != nil {
		return err
	}
	if !done {
		return fmt.Errorf("KV readback did not complete")
	}
	return mapErr
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
