//go:build !js && !wasip1

package webgpu

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

var snapConfigs = []struct {
	name string
	cfg  *model.Config
}{
	{"cai-int8", testmodel.CAIShaped(testVocab, model.Int8)}, // rings of 8, shared KV
	{"cai-f32", testmodel.CAIShaped(testVocab, model.F32)},
	{"plain-int8", testmodel.Plain(testVocab, model.Int8)}, // all global, GQA
	{"plain-f32", testmodel.Plain(testVocab, model.F32)},
}

// randomArena returns an arena of lay filled with random bytes, and the
// GPU sequence s with the same bytes in its arena buffer.
func randomArena(t *testing.T, s *Sequence, seed uint64) *kv.Arena {
	t.Helper()
	a := kv.NewArena(s.lay)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range a.Buf {
		a.Buf[i] = byte(r.Uint32())
	}
	if err := s.m.dev.Write(s.arena, 0, a.Buf); err != nil {
		t.Fatal(err)
	}
	return a
}

func gpuArena(t *testing.T, s *Sequence) []byte {
	t.Helper()
	b, err := gpu.ReadSync(s.m.dev, s.arena, 0, s.lay.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSeqPair(t *testing.T, cfg *model.Config, ctx int) (*Sequence, *cpu.Sequence) {
	t.Helper()
	cs, _, gs := bothSequences(t, device(t), cfg, testmodel.Random(cfg, 7), Options{Chunk: 5}, ctx)
	return gs, cs
}

// TestSnapshotMatchesCapture fills the GPU arena and a host arena with the
// same random bytes: every snapshot the sequence's bookkeeping allows must
// equal kv.Arena.Capture's byte for byte (rings wrapped or not, ranges
// that start inside a ring's window or before it, empty ranges), and every
// other must be refused as engine/cpu refuses it.
func TestSnapshotMatchesCapture(t *testing.T) {
	const ctx = 40
	for _, sc := range snapConfigs {
		t.Run(sc.name, func(t *testing.T) {
			gs, _ := newSeqPair(t, sc.cfg, ctx)
			host := randomArena(t, gs, 1)
			for _, tc := range []struct{ end, from, to int }{
				{5, 0, 5}, {8, 0, 8}, {9, 0, 9}, {20, 0, 20}, {20, 13, 20}, {20, 16, 20}, {20, 20, 20},
				{23, 7, 23}, {ctx, 0, ctx}, {ctx, 33, ctx},
				{6, 0, 3}, {6, 2, 4}, // no ring has wrapped: earlier ends are fine
				// A ring of 8 + kv.RingRoom slots written to 26 no longer holds
				// 9..11: refused where there are rings; it still holds 12..15.
				{18 + kv.RingRoom, 8, 16}, {18 + kv.RingRoom, 12, 16},
				{17, 8, 16}, {17 + kv.RingRoom, 8, 16}, {21, 13, 16}, {21 + kv.RingRoom, 12, 16}, {20 + kv.RingRoom, 12, 16},
				{5, 0, 6}, {5, 4, 3}, {ctx, 0, ctx + 1}, {5, -1, 5},
			} {
				t.Run(fmt.Sprintf("end%d/%d-%d", tc.end, tc.from, tc.to), func(t *testing.T) {
					gs.end = tc.end
					got, err := gs.Snapshot(tc.from, tc.to)
					ok := tc.from >= 0 && tc.from <= tc.to && tc.to <= ctx && gs.lay.CanCapture(tc.end, tc.from, tc.to)
					if !ok {
						if err == nil {
							t.Fatalf("snapshot taken; the arena no longer holds it or it is outside the context")
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					want, err := host.Capture(tc.from, tc.to)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got.Data, want.Data) {
						t.Fatalf("data of %d bytes differs from the host capture's %d", len(got.Data), len(want.Data))
					}
					got.Data, want.Data = nil, nil
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("snapshot %+v, host capture %+v", got, want)
					}
				})
			}
		})
	}
}

// TestSnapshotsInOneReadback takes several spans with one Snapshots call,
// as a session does for the blocks a long prefill step completed: each
// must equal kv.Arena.Capture's byte for byte, blocks that ended before
// the last write included while the rings still hold them, and a span
// the rings no longer hold refuses the whole call.
func TestSnapshotsInOneReadback(t *testing.T) {
	const ctx, end = 40, 20
	for _, sc := range snapConfigs {
		t.Run(sc.name, func(t *testing.T) {
			gs, _ := newSeqPair(t, sc.cfg, ctx)
			host := randomArena(t, gs, 5)
			gs.end = end
			spans := []kv.Span{{From: 12, To: 16}, {From: 16, To: 20}, {From: 20, To: 20}, {From: 0, To: 20}, {From: 13, To: 17}}
			got, err := gs.Snapshots(spans)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(spans) {
				t.Fatalf("%d snapshots for %d spans", len(got), len(spans))
			}
			for i, sp := range spans {
				want, err := host.Capture(sp.From, sp.To)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got[i], want) {
					t.Errorf("span [%d, %d): the snapshot differs from the host capture", sp.From, sp.To)
				}
			}
			rings := false
			for _, r := range gs.lay.Regions {
				rings = rings || r.Ring
			}
			// The rings of 8 + kv.RingRoom slots hold positions 10..25 after
			// a write up to 26; the block [8, 16) keeps 9..15.
			gs.end = 18 + kv.RingRoom
			_, err = gs.Snapshots([]kv.Span{{From: 16, To: 20}, {From: 8, To: 16}})
			if (err != nil) != rings {
				t.Errorf("a span the rings no longer hold: error %v (rings %v)", err, rings)
			}
		})
	}
}

// TestSnapshotsCopyEachArrayOnce takes the blocks of a long step as the
// session does after it (consecutive spans, the last ending where the
// step did): each must equal kv.Arena.Capture's, and the readback must
// copy each array of the arena once, or twice where its ring wraps, not
// once per block, and keep its staging buffer for the next step's
// blocks: a second call makes and frees nothing.
func TestSnapshotsCopyEachArrayOnce(t *testing.T) {
	const ctx, block = 40, 4
	for _, sc := range snapConfigs {
		t.Run(sc.name, func(t *testing.T) {
			cd := &countingDevice{Device: device(t)}
			_, gs := gpuSequence(t, cd, sc.cfg, testmodel.Random(sc.cfg, 7), Options{Chunk: 16}, ctx)
			host := randomArena(t, gs, 9)
			arrays := 0
			for i := range gs.lay.Regions {
				arrays += len(arraysOf(gs.lay, &gs.lay.Regions[i]))
			}
			for try, end := range []int{28, 20} {
				gs.end = end
				var spans []kv.Span
				for b := end / block * block; b-block >= 0 && gs.lay.CanCapture(end, b-block, b); b -= block {
					spans = append([]kv.Span{{From: b - block, To: b}}, spans...)
				}
				if len(spans) < 2 {
					t.Fatalf("end %d: %d blocks the arena still holds; the test needs several", end, len(spans))
				}
				before := *cd
				got, err := gs.Snapshots(spans)
				if err != nil {
					t.Fatal(err)
				}
				for i, sp := range spans {
					want, err := host.Capture(sp.From, sp.To)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(got[i], want) {
						t.Errorf("end %d: block [%d, %d) differs from the host capture", end, sp.From, sp.To)
					}
				}
				if copies := cd.copies - before.copies; copies > 2*arrays {
					t.Errorf("end %d: %d blocks took %d copies for %d arrays; want one per array, two where a ring wraps", end, len(spans), copies, arrays)
				}
				if try > 0 && (cd.makes != before.makes || cd.frees != before.frees) {
					t.Errorf("end %d: a second call made %d objects and freed %d; want none", end, cd.makes-before.makes, cd.frees-before.frees)
				}
			}
		})
	}
}

// TestRestoreMatchesArenaRestore restores chains of snapshots into a GPU
// arena and a host arena that start with the same random bytes: the whole
// arenas must then be equal, and refused parts must leave the GPU arena
// untouched.
func TestRestoreMatchesArenaRestore(t *testing.T) {
	const ctx = 40
	for _, sc := range snapConfigs {
		t.Run(sc.name, func(t *testing.T) {
			gs, _ := newSeqPair(t, sc.cfg, ctx)
			src, _ := newSeqPair(t, sc.cfg, ctx)
			from := randomArena(t, src, 9)
			capture := func(a, b int) *kv.Snapshot {
				s, err := from.Capture(a, b)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			other := testmodel.Plain(testVocab, model.Int8)
			if sc.cfg.DType == model.Int8 {
				other = testmodel.Plain(testVocab, model.F32)
			}
			otherLay, err := kv.NewLayout(other, ctx)
			if err != nil {
				t.Fatal(err)
			}
			foreign, _ := kv.NewArena(otherLay).Capture(0, 8)
			big, _ := newSeqPair(t, sc.cfg, ctx+8)
			tooLong, _ := kv.NewArena(big.lay).Capture(0, ctx+8)
			for _, tc := range []struct {
				name   string
				parts  []*kv.Snapshot
				refuse string
			}{
				{"none", nil, ""},
				{"one short", []*kv.Snapshot{capture(0, 5)}, ""},
				{"one past the window", []*kv.Snapshot{capture(0, 19)}, ""},
				{"whole context", []*kv.Snapshot{capture(0, ctx)}, ""},
				{"blocks", []*kv.Snapshot{capture(0, 8), capture(8, 16), capture(16, 24), capture(24, 27)}, ""},
				{"blocks of 7", []*kv.Snapshot{capture(0, 7), capture(7, 14), capture(14, 21), capture(21, 28), capture(28, 35)}, ""},
				{"gap", []*kv.Snapshot{capture(0, 8), capture(9, 16)}, "start at 8"},
				{"other model", []*kv.Snapshot{foreign}, "snapshot is"},
				{"past the context", []*kv.Snapshot{tooLong}, "do not fit"},
				{"missing part", []*kv.Snapshot{capture(0, 8), nil}, "missing"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					host := randomArena(t, gs, 3)
					before := append([]byte(nil), host.Buf...)
					err := gs.Restore(tc.parts)
					if tc.refuse != "" {
						if err == nil || !strings.Contains(err.Error(), tc.refuse) {
							t.Fatalf("error %v, want one saying %q", err, tc.refuse)
						}
						if !bytes.Equal(gpuArena(t, gs), before) {
							t.Fatal("a refused restore wrote to the arena")
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					n, err := host.Restore(tc.parts)
					if err != nil {
						t.Fatal(err)
					}
					if gs.end != n {
						t.Errorf("sequence ends at %d after the restore, want %d", gs.end, n)
					}
					if got := gpuArena(t, gs); !bytes.Equal(got, host.Buf) {
						for i := range got {
							if got[i] != host.Buf[i] {
								t.Fatalf("arena byte %d is %d, the host arena's %d", i, got[i], host.Buf[i])
							}
						}
					}
				})
			}
		})
	}
}

// TestSnapshotAcrossBackends moves KV between engine/cpu and the GPU, taken
// as a session takes it (a block when a Forward ends on its boundary), and
// continues there: the logits of the rest must be those of computing it
// all on the backend that continues: bit for bit when the KV comes from the
// same backend and the same steps (the per-token arithmetic does not depend
// on where a position's KV came from), within TestMatchesCPU's tolerance
// across backends.
func TestSnapshotAcrossBackends(t *testing.T) {
	const ctx, B, prompt, rest = 48, 8, 27, 6
	toks := testmodel.Tokens(prompt+rest, testVocab, 11)
	for _, sc := range snapConfigs {
		t.Run(sc.name, func(t *testing.T) {
			V := sc.cfg.Vocab
			// blocks forwards toks[:prompt] in chunks ending on block
			// boundaries and snapshots each block as it ends.
			blocks := func(s interface {
				Forward([]int32, int, []float32) error
				Snapshot(int, int) (*kv.Snapshot, error)
			}) []*kv.Snapshot {
				var parts []*kv.Snapshot
				logits := make([]float32, V)
				for at := 0; at < prompt; {
					stop := min(prompt, (at/B+1)*B)
					if err := s.Forward(toks[at:stop], at, logits); err != nil {
						t.Fatal(err)
					}
					p, err := s.Snapshot(at, stop)
					if err != nil {
						t.Fatal(err)
					}
					parts = append(parts, p)
					at = stop
				}
				return parts
			}
			// continued restores parts into s and forwards the rest.
			continued := func(s interface {
				Forward([]int32, int, []float32) error
				Restore([]*kv.Snapshot) error
			}, parts []*kv.Snapshot) []float32 {
				if parts != nil {
					if err := s.Restore(parts); err != nil {
						t.Fatal(err)
					}
				}
				logits := make([]float32, rest*V)
				if err := s.Forward(toks[prompt:], prompt, logits); err != nil {
					t.Fatal(err)
				}
				return logits
			}
			gs, cs := newSeqPair(t, sc.cfg, ctx)
			gpuParts, cpuParts := blocks(gs), blocks(cs)
			gpuWant, cpuWant := continued(gs, nil), continued(cs, nil)
			for _, tc := range []struct {
				name  string
				onGPU bool
				parts []*kv.Snapshot
				exact bool
			}{
				{"gpu to gpu", true, gpuParts, true},
				{"cpu to gpu", true, cpuParts, false},
				{"gpu to cpu", false, gpuParts, false},
				// Forwarded in one call, not in blocks: float32 KV then
				// differs in rounding (products of more tokens take the
				// tiled kernel), int8 KV does not.
				{"gpu whole to gpu", true, []*kv.Snapshot{snapshot(t, gs, toks[:prompt])}, sc.cfg.DType == model.Int8},
			} {
				t.Run(tc.name, func(t *testing.T) {
					g, c := newSeqPair(t, sc.cfg, ctx)
					var got, want []float32
					if tc.onGPU {
						got, want = continued(g, tc.parts), gpuWant
					} else {
						got, want = continued(c, tc.parts), cpuWant
					}
					for i := 0; i < rest; i++ {
						what := fmt.Sprintf("position %d", prompt+i)
						if tc.exact {
							if !reflect.DeepEqual(got[i*V:(i+1)*V], want[i*V:(i+1)*V]) {
								t.Fatalf("%s: logits differ from computing everything on the GPU", what)
							}
							continue
						}
						closeLogits(t, what, got[i*V:(i+1)*V], want[i*V:(i+1)*V], 1e-3)
					}
				})
			}
		})
	}
}

// snapshot forwards toks in one call on a fresh sequence of s's model and
// takes the snapshot of all of them.
func snapshot(t *testing.T, s *Sequence, toks []int32) *kv.Snapshot {
	t.Helper()
	fresh, err := s.m.NewSequence(s.lay.Context)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Forward(toks, 0, make([]float32, s.m.cfg.Vocab)); err != nil {
		t.Fatal(err)
	}
	p, err := fresh.Snapshot(0, len(toks))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
