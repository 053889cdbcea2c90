package cpu

import "github.com/wick-run/wick/engine/kv"

// AttendChunk is the reference attention for other backends' kernel tests:
// the n query tokens at start.. of layer l (q and out are [n*QDim]) attend
// to positions before start in arena and to the chunk's own K/V, given as
// [n*KVDim] float32 rows (k, v) or int8 rows with a scale per (token, KV
// head) (kq, vq, kScale, vScale).
func (m *Model) AttendChunk(out, q []float32, a *kv.Arena, l, start, n int, k, v []float32, kq, vq []int8, kScale, vScale []float32) {
	ck := &chunkKV{k: k, v: v, kq: kq, vq: vq, kScale: kScale, vScale: vScale}
	m.attend(out, q, a, a.Region(l), ck, l, start, n)
}
