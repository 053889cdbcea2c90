package shaders

import (
	"testing"

	"github.com/wick-run/wick/engine/gpu"
)

// TestTierOf checks which adapters get the subgroup-matrix tier: the H200's
// Dawn with experimental features (i8 -> i32 at 16x16x32 and 16x8x32,
// subgroups of 32) does; one without that configuration, without subgroups,
// or with subgroups larger than tiled's workgroup does not.
func TestTierOf(t *testing.T) {
	h200 := gpu.Info{
		Features:        []string{FeatureSubgroups, FeatureSubgroupMatrix},
		WGSL:            []string{WGSLPackedDot, WGSLSubgroupID},
		SubgroupMinSize: 32, SubgroupMaxSize: 32,
		SubgroupMatrix: []gpu.SubgroupMatrixConfig{
			{M: 16, N: 8, K: 32, Component: "i8", Result: "i32"},
			{M: 16, N: 16, K: 32, Component: "i8", Result: "i32"},
			{M: 16, N: 16, K: 32, Component: "u8", Result: "u32"},
		},
	}
	tiled := Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG}
	for _, tc := range []struct {
		name   string
		edit   func(i *gpu.Info)
		matrix bool
	}{
		{"h200", func(*gpu.Info) {}, true},
		{"no-16x16x32", func(i *gpu.Info) { i.SubgroupMatrix = i.SubgroupMatrix[:1] }, false},
		{"no-feature", func(i *gpu.Info) { i.Features = i.Features[:1] }, false},
		{"no-subgroups", func(i *gpu.Info) { i.Features = i.Features[1:] }, false},
		{"subgroup-size-unknown", func(i *gpu.Info) { i.SubgroupMaxSize = 0 }, false},
		{"subgroups-of-64", func(i *gpu.Info) { i.SubgroupMaxSize = 64 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := h200
			info.Features = append([]string(nil), h200.Features...)
			tc.edit(&info)
			tier := TierOf(info)
			if tier.Matrix != tc.matrix {
				t.Fatalf("TierOf(%+v).Matrix = %v, want %v", info, tier.Matrix, tc.matrix)
			}
			// The 64x64 tiles stay DOT4 (faster on the H200).
			if k := tier.Apply(tiled); k.Matrix || !k.Dot4 {
				t.Errorf("tier %s runs tiled as %s", tier, k.Label())
			}
			f32 := tier.Apply(Key{Family: "tiled", Entry: "tiled", WG: TiledWG})
			if f32.Matrix || f32.Dot4 {
				t.Errorf("tier %s runs float32 tiled as %s", tier, f32.Label())
			}
			// The large tile: the MATRIX product's with subgroups of at
			// most 32, else the DOT4 product's.
			big := tier.Apply(Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Tile: TiledBig})
			wantMatrix := tc.matrix && info.SubgroupMaxSize <= 32
			if TiledTile(big) != TiledBig || big.Matrix != wantMatrix || big.Dot4 == wantMatrix {
				t.Errorf("tier %s runs the large tile as %s", tier, big.Label())
			}
			if g := tier.Apply(Key{Family: "gemv", Entry: "gemv", Int8: true, WG: 256, TPR: 8}); g.Matrix {
				t.Errorf("tier %s runs the GEMV as %s", tier, g.Label())
			}
		})
	}
}
