package webgpu

import (
	"sync"

	"github.com/wick-run/wick/engine/gpu"
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

// ropeDevice holds ropeRows' rows on the GPU as well, for the positions
// ropeRows keeps, so that a step copies its positions' rows into its rope
// buffer on the GPU (one copy per kind) instead of carrying them in its
// command list: a 512-token step's rows are 1 MB, which the module copied
// into the list and the browser into a staging buffer before the step,
// and so before a prompt's first token. Rows are written as steps first
// need them, growing by powers of two as ropeRows does. Sessions of one
// model share it.
type ropeDevice struct {
	mu      sync.Mutex
	buf     gpu.Buffer
	rows    int // positions the buffer holds of each kind (-1: none can be made)
	written int // positions written, [0, written) of each kind
}

// copyRope records in e the copies of the RoPE rows of positions
// [start, start+n) into dst, kind k's at byte k*stride, and reports whether
// it did: positions past the rows kept are not held on the GPU (the
// caller writes them, as before), nor are any where the buffer could not
// be made or written.
func (m *Model) copyRope(e *gpu.Encoder, dst gpu.Buffer, stride int64, start, n int) bool {
	r := &m.ropeDev
	r.mu.Lock()
	defer r.mu.Unlock()
	hd := m.cfg.HeadDim
	end := start + n
	if r.rows == 0 {
		r.rows = min(m.ropeRows.max, m.cfg.ContextLen)
		b, err := m.dev.NewBuffer(int64(len(m.rope)*r.rows*hd)*4, gpu.Storage, "rope_rows")
		if err != nil {
			r.rows = -1
			return false
		}
		r.buf = b
	}
	if end > r.rows {
		return false
	}
	if end > r.written {
		want := min(r.rows, max(end, 2*r.written, 64))
		for kind := range m.rope {
			rows := m.ropeRows.table(kind, r.written, want-r.written, nil)
			if err := m.dev.Write(r.buf, int64((kind*r.rows+r.written)*hd)*4, f32bytes(rows)); err != nil {
				return false
			}
		}
		r.written = want
	}
	for kind := range m.rope {
		e.Copy(r.buf, int64((kind*r.rows+start)*hd)*4, dst, int64(kind)*stride, int64(n*hd)*4)
	}
	return true
}

// freeRope frees the rows on the GPU.
func (m *Model) freeRope() {
	if m.ropeDev.rows > 0 {
		m.dev.FreeBuffer(m.ropeDev.buf)
	}
	m.ropeDev = ropeDevice{}
}
