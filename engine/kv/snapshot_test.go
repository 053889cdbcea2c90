package kv_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

const vocab = 97

var configs = []struct {
	name string
	cfg  *model.Config
}{
	{"cai-int8", testmodel.CAIShaped(vocab, model.Int8)}, // local window 8, shared KV
	{"cai-f32", testmodel.CAIShaped(vocab, model.F32)},
	{"plain-int8", testmodel.Plain(vocab, model.Int8)}, // all global, GQA
	{"plain-f32", testmodel.Plain(vocab, model.F32)},
}

func newModel(t testing.TB, c *model.Config) *cpu.Model {
	t.Helper()
	m, err := cpu.New(c, testmodel.Random(c, 7))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newSeq(t testing.TB, m *cpu.Model, ctx int) *cpu.Sequence {
	t.Helper()
	s, err := m.NewSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var id = kv.Identity{Model: [32]byte{1, 2, 3}, Config: [32]byte{4, 5, 6}}

// sameLogits demands bit-equal int8 logits (the per-token arithmetic is the
// same whether a position's KV was computed or restored) and float32 within
// 1e-6 relative.
func sameLogits(t *testing.T, dtype model.DType, got, want []float32, what string) {
	t.Helper()
	for i := range got {
		tol := float32(0)
		if dtype == model.F32 {
			tol = 1e-6 * max(1, float32(math.Abs(float64(want[i]))))
		}
		if d := float32(math.Abs(float64(got[i] - want[i]))); d > tol || got[i] != got[i] {
			t.Fatalf("%s: logit %d (token %d, id %d): restored %v, full prefill %v", what, i, i/vocab, i%vocab, got[i], want[i])
		}
	}
}

// TestRestoreThenPrefillMatchesFullPrefill saves the KV of a prefix to a
// file, restores it into a fresh sequence (of another context, too), prefills
// the rest there and compares every logit with one prefill of everything:
// prefixes inside the first local window, at it, ending inside a later
// window, and much longer than it.
func TestRestoreThenPrefillMatchesFullPrefill(t *testing.T) {
	const n = 45
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, tc.cfg)
			ids := testmodel.Tokens(n, vocab, 3)
			want := make([]float32, n*vocab)
			if err := newSeq(t, m, 64).Forward(ids, 0, want); err != nil {
				t.Fatal(err)
			}
			for _, prefix := range []int{1, 3, 7, 8, 9, 13, 16, 30, 44} {
				for _, ctx := range []int{64, 48} {
					t.Run(fmt.Sprintf("prefix%d/ctx%d", prefix, ctx), func(t *testing.T) {
						a := newSeq(t, m, 64)
						if err := a.Forward(ids[:prefix], 0, make([]float32, vocab)); err != nil {
							t.Fatal(err)
						}
						snap, err := a.Snapshot(0, prefix)
						if err != nil {
							t.Fatal(err)
						}
						if got, want := snap.Bytes(), liveKVBytes(tc.cfg, prefix); got != want {
							t.Errorf("snapshot of %d positions holds %d bytes of KV, the model's live KV is %d", prefix, got, want)
						}
						data, err := (&kv.File{Identity: id, Tokens: ids[:prefix], KV: snap}).Encode()
						if err != nil {
							t.Fatal(err)
						}
						f, err := kv.DecodeFile(data, id)
						if err != nil {
							t.Fatal(err)
						}
						b := newSeq(t, m, ctx)
						if err := b.Restore([]*kv.Snapshot{f.KV}); err != nil {
							t.Fatal(err)
						}
						got := make([]float32, (n-prefix)*vocab)
						if err := b.Forward(ids[prefix:], prefix, got); err != nil {
							t.Fatal(err)
						}
						sameLogits(t, tc.cfg.DType, got, want[prefix*vocab:], "after restore")
					})
				}
			}
		})
	}
}

// TestRestoreBlockChain captures the KV block by block as a prefix cache
// does, restores chains of blocks, and checks the continuation, with blocks
// shorter and longer than the local window.
func TestRestoreBlockChain(t *testing.T) {
	const n = 45
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, tc.cfg)
			ids := testmodel.Tokens(n, vocab, 5)
			want := make([]float32, n*vocab)
			if err := newSeq(t, m, 64).Forward(ids, 0, want); err != nil {
				t.Fatal(err)
			}
			for _, block := range []int{3, 5, 8, 16} {
				t.Run(fmt.Sprintf("block%d", block), func(t *testing.T) {
					a := newSeq(t, m, 64)
					var chain []*kv.Snapshot
					for e := block; e < n; e += block {
						if err := a.Forward(ids[e-block:e], e-block, make([]float32, vocab)); err != nil {
							t.Fatal(err)
						}
						s, err := a.Snapshot(e-block, e)
						if err != nil {
							t.Fatal(err)
						}
						chain = append(chain, s)
					}
					for k := 1; k <= len(chain); k++ {
						b := newSeq(t, m, 64)
						if err := b.Restore(chain[:k]); err != nil {
							t.Fatal(err)
						}
						p := k * block
						got := make([]float32, (n-p)*vocab)
						if err := b.Forward(ids[p:], p, got); err != nil {
							t.Fatal(err)
						}
						sameLogits(t, tc.cfg.DType, got, want[p*vocab:], fmt.Sprintf("%d blocks restored", k))
					}
				})
			}
		})
	}
}

func TestSnapshotRefusesOverwrittenRing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    *model.Config
		ok     bool
		wrote  int
		prefix int
	}{
		{"ring wrapped past the prefix", configs[0].cfg, false, 40, 12},
		{"ring never wrapped", configs[0].cfg, true, 7, 3},
		{"all global", configs[2].cfg, true, 20, 12},
		{"beyond what was written", configs[2].cfg, false, 20, 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSeq(t, newModel(t, tc.cfg), 64)
			if err := s.Forward(testmodel.Tokens(tc.wrote, vocab, 1), 0, make([]float32, vocab)); err != nil {
				t.Fatal(err)
			}
			_, err := s.Snapshot(0, tc.prefix)
			if (err == nil) != tc.ok {
				t.Fatalf("snapshot of %d positions after writing %d: err %v, want ok=%v", tc.prefix, tc.wrote, err, tc.ok)
			}
		})
	}
}

func TestRestoreRejectsMismatch(t *testing.T) {
	cai := newModel(t, configs[0].cfg)
	plain := newModel(t, configs[2].cfg)
	snap := func(m *cpu.Model, from, to int) *kv.Snapshot {
		s := newSeq(t, m, 64)
		if err := s.Forward(testmodel.Tokens(to, vocab, 1), 0, make([]float32, vocab)); err != nil {
			t.Fatal(err)
		}
		x, err := s.Snapshot(from, to)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	short := snap(cai, 0, 10)
	short.Data = short.Data[:len(short.Data)-1]
	for _, tc := range []struct {
		name  string
		parts []*kv.Snapshot
		ctx   int
		want  string
	}{
		{"another model's shape", []*kv.Snapshot{snap(plain, 0, 10)}, 64, "KV heads"},
		{"not from position 0", []*kv.Snapshot{snap(cai, 5, 10)}, 64, "start at 0"},
		{"gap between parts", []*kv.Snapshot{snap(cai, 0, 10), snap(cai, 12, 14)}, 64, "start at 10"},
		{"longer than the context", []*kv.Snapshot{snap(cai, 0, 40)}, 32, "context"},
		{"data cut short", []*kv.Snapshot{short}, 64, "bytes of KV"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newSeq(t, cai, tc.ctx).Restore(tc.parts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestDecodeFileRejects checks that every damaged, truncated, foreign or
// future snapshot file is refused with the right error, never a panic.
func TestDecodeFileRejects(t *testing.T) {
	s := newSeq(t, newModel(t, configs[0].cfg), 64)
	ids := testmodel.Tokens(20, vocab, 2)
	if err := s.Forward(ids, 0, make([]float32, vocab)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(0, 20)
	if err != nil {
		t.Fatal(err)
	}
	good, err := (&kv.File{Identity: id, Tokens: ids, Meta: []byte(`{"x":1}`), KV: snap}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	other := id
	other.Model[0] ^= 1
	otherCfg := id
	otherCfg.Config[31] ^= 1
	for _, tc := range []struct {
		name string
		data []byte
		want kv.Identity
		err  error
	}{
		{"empty", nil, id, kv.ErrSnapshotCorrupt},
		{"not a snapshot", []byte("PK\x03\x04 a zip file, say"), id, kv.ErrSnapshotCorrupt},
		{"truncated header", good[:40], id, kv.ErrSnapshotCorrupt},
		{"truncated data", good[:len(good)-100], id, kv.ErrSnapshotCorrupt},
		{"one byte short", good[:len(good)-1], id, kv.ErrSnapshotCorrupt},
		{"trailing bytes", append(bytes.Clone(good), 0), id, kv.ErrSnapshotCorrupt},
		{"flipped KV byte", edit(func(b []byte) []byte { b[len(b)-50] ^= 0x10; return b }), id, kv.ErrSnapshotCorrupt},
		{"flipped token", edit(func(b []byte) []byte { b[len(b)-len(snap.Data)-20] ^= 1; return b }), id, kv.ErrSnapshotCorrupt},
		{"huge token count", edit(func(b []byte) []byte { b[8+4+64+12+3] = 0x7f; return b }), id, kv.ErrSnapshotCorrupt},
		{"future version", edit(func(b []byte) []byte { b[8] = 2; return b }), id, kv.ErrSnapshotVersion},
		{"another model", good, other, kv.ErrSnapshotModel},
		{"another config or mode", good, otherCfg, kv.ErrSnapshotModel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kv.DecodeFile(tc.data, tc.want)
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
		})
	}
	f, err := kv.DecodeFile(good, id)
	if err != nil {
		t.Fatal(err)
	}
	if string(f.Meta) != `{"x":1}` || len(f.Tokens) != 20 || f.Tokens[7] != ids[7] || !bytes.Equal(f.KV.Data, snap.Data) {
		t.Errorf("round trip lost data: meta %q, %d tokens", f.Meta, len(f.Tokens))
	}
}

// FuzzDecodeFile checks that no input makes DecodeFile panic or return a
// file whose KV does not restore cleanly or fail with an error.
func FuzzDecodeFile(f *testing.F) {
	m := newModel(f, configs[0].cfg)
	s := newSeq(f, m, 64)
	ids := testmodel.Tokens(12, vocab, 2)
	if err := s.Forward(ids, 0, make([]float32, vocab)); err != nil {
		f.Fatal(err)
	}
	snap, _ := s.Snapshot(0, 12)
	good, _ := (&kv.File{Identity: id, Tokens: ids, KV: snap}).Encode()
	f.Add(good)
	f.Add(good[:50])
	withMeta, _ := (&kv.File{Identity: id, Tokens: ids, Meta: []byte(`{"messages":[]}`), KV: snap}).Encode()
	f.Add(withMeta)
	other := id
	other.Model[0] ^= 1
	foreign, _ := (&kv.File{Identity: other, Tokens: ids, KV: snap}).Encode()
	f.Add(foreign)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := kv.DecodeFile(data, id)
		if errors.Is(err, kv.ErrSnapshotModel) && file == nil {
			t.Fatal("another model's file came back without its messages")
		}
		if err != nil {
			return
		}
		// What is accepted is exactly what Encode writes for it.
		again, err := file.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted file does not re-encode to itself (err %v)", err)
		}
		_ = newSeq(t, m, 64).Restore([]*kv.Snapshot{file.KV})
	})
}

// liveKVBytes is the KV a continuation after n positions reads: the KV
// cache's size with every local window one shorter (the next position's own
// row is not stored yet).
func liveKVBytes(c *model.Config, n int) int64 {
	short := *c
	short.Layers = append([]model.Layer(nil), c.Layers...)
	for i := range short.Layers {
		if short.Layers[i].Kind == model.Local {
			short.Layers[i].Window--
		}
	}
	return short.KVBytes(n)
}

// TestCanCapture states when a span can still be copied out: a ring of
// window 8 has S = 8 + RingRoom slots and holds positions [end-S, end) after
// a write up to end, and a snapshot of [from, to) keeps its live part, from
// max(from, to-7); a global region holds everything written.
func TestCanCapture(t *testing.T) {
	const ctx = 64
	const S = 8 + kv.RingRoom
	cai, err := kv.NewLayout(configs[0].cfg, ctx) // rings of 8 and a global region
	if err != nil {
		t.Fatal(err)
	}
	plain, err := kv.NewLayout(configs[2].cfg, ctx) // all global
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		lay           *kv.Layout
		end, from, to int
		ok            bool
	}{
		{"block at the write's end", cai, 16, 8, 16, true},
		{"one past the block", cai, 17, 8, 16, true},
		{"as far past the block as the ring allows", cai, 9 + S, 8, 16, true},
		{"one further", cai, 10 + S, 8, 16, false},
		{"short span, ring still holding it", cai, 12 + S, 12, 16, true},
		{"short span, overwritten", cai, 13 + S, 12, 16, false},
		{"ring not wrapped", cai, S, 0, 3, true},
		{"first position overwritten", cai, S + 1, 0, 3, false},
		{"whole context written", cai, ctx, 0, ctx, true},
		{"global, long after", plain, ctx, 0, 16, true},
		{"past the write", plain, 16, 0, 17, false},
		{"reversed", plain, 16, 9, 8, false},
		{"negative", plain, 16, -1, 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.lay.CanCapture(tc.end, tc.from, tc.to); got != tc.ok {
				t.Errorf("CanCapture(%d, %d, %d) = %v, want %v", tc.end, tc.from, tc.to, got, tc.ok)
			}
			if tc.from >= 0 && tc.from <= tc.to && tc.to <= tc.end {
				if bound := tc.lay.CaptureBound(tc.from, tc.to); (tc.end <= bound) != tc.ok {
					t.Errorf("CaptureBound(%d, %d) = %d, and a write to %d leaves it capturable: %v", tc.from, tc.to, bound, tc.end, tc.ok)
				}
			}
		})
	}
}
