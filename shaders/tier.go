package shaders

import (
	"slices"
	"strings"

	"github.com/wick-run/wick/engine/gpu"
)

// Tier is what a device's kernels may use beyond core WebGPU, chosen from
// its adapter (gpu.Info). The zero Tier is the fallback that every WebGPU
// runs (wgpu-native's old naga included); browsers with the features get
// faster variants of the same sources, selected through Key's flags.
type Tier struct {
	// Dot4 is WGSL's packed_4x8_integer_dot_product: int8 products through
	// dot4I8Packed, one instruction per four products (Dawn/Chrome).
	Dot4 bool
	// Subgroups is the subgroups feature with WGSL's subgroup_id: the
	// workgroup reductions of norms, quantisation scans, softmax and
	// attention merges go through subgroup operations (Key.Subgroups).
	Subgroups bool
	// Matrix is chromium-experimental-subgroup-matrix with int8 products into
	// int32 at 16x16x32 (MatrixConfig): the tiled prefill product on tensor
	// cores (Key.Matrix), its written-out 64x64 and large tiles where
	// MatrixTile (Apply). Only hosts
	// that opt into experimental features offer it (dawn.Options.Experimental,
	// node/host.mjs -experimental; Chrome behind its unsafe-WebGPU flag).
	Matrix bool
	// MatrixTile is the MATRIX product's 128x128 tile (Key.Tile), which
	// gives 2x4 blocks of 16x16 to each of 8 subgroups, and its written-out
	// 64x64 tile (1x2 blocks each): subgroups of at most 32 invocations
	// (the H200's are 32), so that a workgroup of 256 has 8 or more.
	MatrixTile bool
}

// FeatureSubgroupMatrix is the WebGPU feature Tier.Matrix needs.
const FeatureSubgroupMatrix = "chromium-experimental-subgroup-matrix"

// MatrixConfig is the subgroup-matrix shape tiled.wgsl's MATRIX variant is
// written for: a 16x32 int8 left by a 32x16 int8 right into a 16x16 int32
// result, exact (the H200's Dawn offers it).
var MatrixConfig = gpu.SubgroupMatrixConfig{M: 16, N: 16, K: 32, Component: "i8", Result: "i32"}

// WGSLPackedDot is the WGSL language feature Tier.Dot4 needs.
const WGSLPackedDot = "packed_4x8_integer_dot_product"

// FeatureSubgroups and WGSLSubgroupID are what Tier.Subgroups needs.
const (
	FeatureSubgroups = "subgroups"
	WGSLSubgroupID   = "subgroup_id"
)

// TierOf is the fastest tier info's device can run.
func TierOf(info gpu.Info) Tier {
	t := Tier{
		Dot4:      info.HasWGSL(WGSLPackedDot),
		Subgroups: info.Has(FeatureSubgroups) && info.HasWGSL(WGSLSubgroupID),
	}
	// The MATRIX variant also uses subgroup_id and a workgroup of 256,
	// which must be a multiple of the largest subgroup size.
	t.Matrix = t.Subgroups && info.Has(FeatureSubgroupMatrix) && slices.Contains(info.SubgroupMatrix, MatrixConfig) &&
		info.SubgroupMaxSize > 0 && TiledWG%info.SubgroupMaxSize == 0
	t.MatrixTile = t.Matrix && info.SubgroupMaxSize <= 32
	return t
}

// String names the tier in benchmarks and notices: "fallback", or what it
// adds ("dot4+subgroups").
func (t Tier) String() string {
	var s []string
	if t.Dot4 {
		s = append(s, "dot4")
	}
	if t.Subgroups {
		s = append(s, "subgroups")
	}
	if t.Matrix {
		s = append(s, "matrix")
	}
	if len(s) == 0 {
		return "fallback"
	}
	return strings.Join(s, "+")
}

// Apply returns k as tier t runs it: the int8 products (gemv, tiled,
// matmul) take the packed dot product where t has it, which also replaces
// gemv's float32-FMA path (both are exact; the packed one issues a
// quarter of the instructions), and the reducing families their subgroup
// form. The tiled product's large and written-out 64x64 tiles (Tile
// TiledBig, 64) take subgroup matrices where t has MatrixTile (engine/webgpu
// plans the written-out one there by default); its first 64x64 tile stays
// DOT4, which the H200 measured faster than the first 64x64 MATRIX tile
// (2026-12-02: 12,066 against 8,308 tok/s at 1B pp512, and 13,028 against
// 9,233 in an earlier call).
// A key that asks for Matrix keeps it (tests run the first MATRIX tile so).
func (t Tier) Apply(k Key) Key {
	switch k.Family {
	case "gemv", "tiled", "matmul":
		if k.Int8 && t.Dot4 && !k.Matrix {
			k.Dot4, k.FMA = true, false
		}
	}
	if k.Family == "tiled" && k.Int8 && t.MatrixTile && (k.Tile == TiledBig && !k.Split || k.Tile == 64) {
		k.Matrix, k.Dot4 = true, false
	}
	if k.Family == "tiled" {
		// The tiles other than the first 64x64 one are the DOT4 product's,
		// and with MatrixTile the MATRIX product's (the written-out 64x64
		// and the large one); the split form is the large DOT4 tile's and
		// the written-out 64x64 tiles'.
		if !k.Dot4 && !(k.Matrix && t.MatrixTile && (k.Tile == TiledBig || k.Tile == 64)) {
			k.Tile = 0
		}
		if k.Tile != TiledBig && k.Tile != 64 {
			k.Split = false
		}
	}
	if t.Subgroups && reduces(k) {
		k.Subgroups = true
	}
	return k
}

// reduces reports whether variant k reduces over its workgroup or its
// subgroups: the variants that have a Subgroups form (common.wgsl's
// wg_sum, wg_max and wg_sum_i; gemv also sums each row's invocations in
// subgroups where they are full).
func reduces(k Key) bool {
	if k.Entry == FlashEntry {
		return false // its softmax is one invocation per row
	}
	switch k.Family {
	case "prenorm", "quant", "act", "rope", "attn", "norm", "matmul":
		return true
	case "gemv":
		// Every product sums each row's invocations; the float32-FMA
		// products are left plain (Variants).
		return k.In != "" || k.Out != "" || !k.FMA
	}
	return false
}
