package webgpu

import (
	"sync"

	"github.com/wick-run/wick/engine/model"
)

// ropeRows keeps the RoPE table rows (model.Rope.CosSin: HeadDim float32s)
// of the positions steps have used, by kind, so that a long step writes
// them instead of computing them: a 512-token step of a Gemma 3 shape
// takes 131,072 sine-cosine pairs, which in the wasm module cost as much
// as 40-90 ms of a step on a 2-core machine (the step's GPU work on an
// H200 is ~40 ms). The rows are CosSin's own, so the kernels see the same
// bytes. Sessions of one model share it, concurrently.
type ropeRows struct {
	mu   sync.Mutex
	rope *[2]model.Rope
	hd   int
	max  int          // the most positions kept (ropeCacheBytes)
	rows [2][]float32 // positions [0, len/hd) of each kind
}

// ropeCacheBytes bounds the rows kept per model: 8,192 positions of a
// Gemma 3 shape (two kinds of 256-wide rows); positions past it are
// computed at every step, as they all were before.
const ropeCacheBytes = 16 << 20

func newRopeRows(rope *[2]model.Rope, headDim int) *ropeRows {
	return &ropeRows{rope: rope, hd: headDim, max: ropeCacheBytes / (len(rope) * headDim * 4)}
}

// table returns the rows of kind for positions [start, start+n), one after
// another (n*HeadDim values); scratch holds them where they are not kept,
// and the result may be scratch. The caller must not modify it.
func (r *ropeRows) table(kind, start, n int, scratch []float32) []float32 {
	hd := r.hd
	if end := start + n; end <= r.max {
		r.mu.Lock()
		rows := r.rows[kind]
		if have := len(rows) / hd; have < end {
			// Grow to a power of two of positions, so that a chat's steps
			// grow it a few times, not at every step.
			want := min(r.max, max(end, 2*have, 64))
			grown := make([]float32, want*hd, want*hd)
			copy(grown, rows)
			for p := have; p < want; p++ {
				r.rope[kind].CosSin(grown[p*hd:(p+1)*hd], p)
			}
			r.rows[kind], rows = grown, grown
		}
		r.mu.Unlock()
		return rows[start*hd : end*hd]
	}
	for t := 0; t < n; t++ {
		r.rope[kind].CosSin(scratch[t*hd:(t+1)*hd], start+t)
	}
	return scratch[:n*hd]
}
