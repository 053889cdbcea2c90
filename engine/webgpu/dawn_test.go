//go:build !js && !wasip1

package webgpu

import (
	"math"
	"strconv"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/gputest"
	"github.com/wick-run/wick/internal/modeltest"
	"github.com/wick-run/wick/internal/testmodel"
	"github.com/wick-run/wick/shaders"
)

// TestModelMatchesCPUOnDawn runs testdata/cai-tiny on Dawn (Chrome's WebGPU
// and Tint) on both kernel tiers, the kernels' features given and withheld,
// against engine/cpu: as int8, greedy decoding on the GPU gives the CPU's
// tokens; in its float32 form every prompt position's and decode step's
// logits agree within 1e-3; with the decode plans of Options.Fuse and
// RowReread too, and (greedy int8) prefill attention's first variant
// (FlashFirst; the register one is the default) and the whole-step decode
// attention below and above its bound (AttnWhole). (TestMatchesCPU and
// TestGreedyOnGPU check wgpu-native on random models.)
func TestModelMatchesCPUOnDawn(t *testing.T) {
	f8, w8 := modeltest.Load(t, "../../testdata/cai-tiny")
	cfg8 := f8.Config()
	cfg32, w32 := model.ToF32(cfg8, w8)
	const prompt, steps, ctx = 40, 32, 128
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32(3 + (i*2654435761)%(cfg8.Vocab-3))
	}
	gputest.Run(t, gputest.Dawn(), func(t *testing.T, d gpu.Device) {
		// The all tier runs the packed-dot and subgroup kernels (lavapipe
		// under Dawn offers both, subgroups of 8), and subgroup matrices
		// where the host opts into them (WICK_DAWN_EXPERIMENTAL=1) on a GPU
		// that has them; the fallback tier none.
		want := shaders.Tier{}
		if d.Info().Has(shaders.FeatureSubgroups) {
			m := d.Info().Has(shaders.FeatureSubgroupMatrix)
			want = shaders.Tier{Dot4: true, Subgroups: true, Matrix: m, MatrixTile: m && d.Info().SubgroupMaxSize <= 32}
		}
		tierOf := func(t *testing.T, m *Model) {
			t.Helper()
			if m.Tier() != want {
				t.Fatalf("the model runs the %s tier on %s, want %s", m.Tier(), d.Info().Adapter, want)
			}
		}
		// The default plan, every fold with products over few workgroups,
		// the norm folds with gate|up's epilogue (its pre-norm too),
		// the row kernels that hold their row in registers, and the prefill
		// product's written-out 64x64 tile and its large tile on every
		// product (the default is the first 64x64 tile),
		// and every product split along its columns (slices of one pass or
		// more) on the large tile and on the written-out 64x64 one (MATRIX
		// where the tier has subgroup matrices), and the whole-step decode
		// attention's bound crossed within the greedy batch (its global
		// layers' spans from 40 to 71; the default's bound takes them all,
		// and the local layers' window of 8 keeps theirs below it).
		plans := []struct {
			name string
			opt  Options
		}{{"", Options{}}, {"-fused-g4", Options{Fuse: Fuse{Norm: true, Gated: true, Attention: true, Groups: 4}}}, {"-reread", Options{RowReread: true}},
			{"-norm-epi-g4", Options{Fuse: Fuse{Norm: true, Attention: true, Epilogue: true, Groups: 4}}}, {"-tile64", Options{Tile: 64}},
			{"-tile128", Options{Tile: shaders.TiledBig}}, {"-split", Options{Split: 1}}, {"-tile64-split", Options{Tile: 64, Split: 1}},
			{"-flash-first", Options{FlashFirst: true}}, {"-whole48", Options{AttnWhole: 48}}}
		for _, pl := range plans {
			t.Run("int8-greedy"+pl.name, func(t *testing.T) {
				cs, gm, gs := bothSequences(t, d, cfg8, w8, pl.opt, ctx)
				tierOf(t, gm)
				l := make([]float32, cfg8.Vocab)
				if err := gs.Forward(ids[:prompt-1], 0, l); err != nil {
					t.Fatal(err)
				}
				got, err := gs.Greedy(ids[prompt-1], prompt-1, steps)
				if err != nil {
					t.Fatal(err)
				}
				if err := cs.Forward(ids, 0, l); err != nil {
					t.Fatal(err)
				}
				for i := range steps {
					want := argmax(l)
					if got[i] != want {
						t.Fatalf("step %d: Dawn picked %d, the CPU %d (CPU top-2 margin %.4f); Dawn so far %v", i, got[i], want, testmodel.Margin(l), got[:i+1])
					}
					if err := cs.Forward([]int32{want}, prompt+i, l); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
		for _, pl := range plans[:2] {
			t.Run("f32-logits"+pl.name, func(t *testing.T) {
				cs, gm, gs := bothSequences(t, d, cfg32, w32, pl.opt, ctx)
				tierOf(t, gm)
				V := cfg32.Vocab
				want, got := make([]float32, prompt*V), make([]float32, prompt*V)
				for i := range got {
					got[i] = float32(math.NaN())
				}
				if err := cs.Forward(ids, 0, want); err != nil {
					t.Fatal(err)
				}
				if err := gs.Forward(ids, 0, got); err != nil {
					t.Fatal(err)
				}
				for p := range prompt {
					closeLogits(t, "prompt position "+strconv.Itoa(p), got[p*V:(p+1)*V], want[p*V:(p+1)*V], 1e-3)
				}
				g, c := got[(prompt-1)*V:], want[(prompt-1)*V:]
				for i := range steps {
					next := argmax(c)
					if argmax(g) != next {
						t.Fatalf("step %d: Dawn's argmax %d, the CPU's %d", i, argmax(g), next)
					}
					if err := cs.Forward([]int32{next}, prompt+i, c); err != nil {
						t.Fatal(err)
					}
					if err := gs.Forward([]int32{next}, prompt+i, g); err != nil {
						t.Fatal(err)
					}
					closeLogits(t, "decode step "+strconv.Itoa(i), g, c, 1e-3)
				}
			})
		}
	})
}
