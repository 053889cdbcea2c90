package shaders

import "slices"

// The parameters the engine plans kernels with. engine/webgpu and package
// bench take them from here, and Variants enumerates every variant they
// give, so a kernel cannot be planned that the enumeration (and the checks
// that compile it through each browser's compiler) does not know:
// engine/webgpu's TestPlannedKernelsAreEnumerated records the keys planned
// for real model shapes on each device profile and checks that.
const (
	// WG is the workgroup size of the kernels that have no size of their
	// own: embedding, QKV preparation, attention, the plain product.
	WG = 64
	// RowWG is the workgroup size of the kernels that give one workgroup
	// to a whole token row (pre-norm, quantisation, activation, a decode
	// step's attention merge) or to a block of the vocabulary (the greedy
	// and sampled picks).
	RowWG = 256
	// TiledWG is tiled.wgsl's workgroup size, fixed in its source.
	TiledWG = 256
	// TiledBig is the side of tiled.wgsl's large tile (Key.Tile): 128 rows
	// by 128 tokens, the DOT4 and MATRIX products'.
	TiledBig = 128
	// TiledPassWords is how many words (4 int8 columns each) a pass of the
	// large tile takes: its split product slices the columns by passes.
	TiledPassWords = 8
	// StreamWG is the workgroup size of wick bench's streaming read.
	StreamWG = 256
)

// GemvWGs are the workgroup sizes of the decode product (gemv.wgsl). Its
// invocations per row may be any power of two up to the workgroup size:
// the planner doubles a variant's for matrices of few rows.
var GemvWGs = []int{64, 128, 256}

// StreamUnrolls are the loads in flight per invocation of wick bench's
// streaming read (stream.wgsl's TPR).
var StreamUnrolls = []int{4, 8, 16}

// HeadDims are the head widths attention has variants for: the test
// models' 12 and 16, and those of Llama and Gemma checkpoints. A model of
// another width gets an error naming it rather than an unchecked kernel.
var HeadDims = []int{12, 16, 32, 64, 96, 128, 256}

// Variants lists every kernel variant the engine can compile: each entry
// point of each source with every value of the parameters it varies by,
// drawn from the tables above. Entries the engine no longer plans
// (norm.rmsnorm and norm.residual, rope.headprep, act.gated,
// sample.argmax: the package's tests keep them as references) are listed
// once, at WG. Dot4 variants are listed for the int8 products that use
// the packed dot product (they need WGSL's packed_4x8_integer_dot_product).
func Variants() []Key {
	var ks []Key
	dtypes := []bool{false, true}
	for _, i8 := range dtypes {
		ks = append(ks,
			Key{Family: "embed", Entry: "embed", Int8: i8, WG: WG},
			Key{Family: "prenorm", Entry: "prenorm", Int8: i8, WG: RowWG},
			Key{Family: "quant", Entry: "quantize", Int8: i8, WG: RowWG},
			Key{Family: "rope", Entry: "qkv_prep", Int8: i8, WG: WG},
			Key{Family: "act", Entry: "gated_quant", Int8: i8, WG: RowWG},
			Key{Family: "act", Entry: "gated_quant", Int8: i8, WG: RowWG, SiLU: true},
			Key{Family: "matmul", Entry: "matmul", Int8: i8, WG: WG},
			Key{Family: "tiled", Entry: "tiled", Int8: i8, WG: TiledWG},
			// The picks take the model's dtype in their key, not in their code.
			Key{Family: "sample", Entry: "argmax_part", Int8: i8, WG: RowWG},
			Key{Family: "sample", Entry: "argmax_merge", Int8: i8, WG: RowWG},
		)
		for _, n := range RowQuadCounts {
			ks = append(ks, Key{Family: "prenorm", Entry: "prenorm", Int8: i8, WG: RowWG, Regs: n})
		}
		for _, hd := range HeadDims {
			for _, e := range []string{"attend", "attend_split", "combine"} {
				ks = append(ks, Key{Family: "attn", Entry: e, Int8: i8, WG: WG, HD: hd})
			}
			// Prefill's flash attention (no workgroup reductions, so no
			// subgroup form), and its register variant.
			ks = append(ks, Key{Family: "attn", Entry: FlashEntry, Int8: i8, WG: RowWG, HD: hd},
				Key{Family: "attn", Entry: FlashEntry, Int8: i8, WG: RowWG, HD: hd, Regs: FlashRegs})
			// The register variant with FlashTiles keys a tile, where rows fit
			// beside them.
			if k := (Key{Family: "attn", Entry: FlashEntry, Int8: i8, WG: RowWG, HD: hd, Regs: FlashRegs, Tile: FlashTiles}); FlashFits(k) {
				ks = append(ks, k)
			}
			if i8 {
				ks = append(ks, Key{Family: "attn", Entry: "combine_quant", Int8: true, WG: RowWG, HD: hd})
			}
			for _, g := range GroupSizes {
				// Each group at the workgroup size it runs with (none where it
				// fits no WebGPU's default workgroup memory), with qkv_prep
				// folded in and without; int8 also as the whole step with
				// the merge's quantisation (Out "quant").
				outs := []string{""}
				if i8 {
					outs = append(outs, "quant")
				}
				for _, in := range []string{"", "qkv"} {
					for _, out := range outs {
						k := Key{Family: "attn", Entry: "attend_group", Int8: i8, HD: hd, Group: g, In: in, Out: out}
						if k.WG = GroupWG(k); k.WG > 0 {
							ks = append(ks, k)
						}
					}
				}
			}
		}
		if i8 {
			ks = append(ks,
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Dot4: true},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Dot4: true, Tile: 64},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Dot4: true, Tile: TiledBig},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Dot4: true, Tile: TiledBig, Split: true},
				Key{Family: "tiled_merge", Entry: "merge", Int8: true, WG: TiledWG},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Matrix: true},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Matrix: true, Tile: TiledBig},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Dot4: true, Tile: 64, Split: true},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Matrix: true, Tile: 64},
				Key{Family: "tiled", Entry: "tiled", Int8: true, WG: TiledWG, Matrix: true, Tile: 64, Split: true},
				Key{Family: "act", Entry: "gated_quant", Int8: true, WG: RowWG, Regs: RowQuads},
				Key{Family: "act", Entry: "gated_quant", Int8: true, WG: RowWG, SiLU: true, Regs: RowQuads})
		}
		for _, wg := range GemvWGs {
			for tpr := 1; tpr <= wg; tpr *= 2 {
				// Without a prologue, and with each (gemv.wgsl's STAGED
				// variants); the gated epilogue (at most WG/2 per row) and
				// the int8 prologue that quantises its rows.
				forms := []Key{{}, {In: "norm"}, {In: "gated"}, {In: "gated", SiLU: true}}
				if tpr <= wg/2 {
					forms = append(forms, Key{Out: "gated"}, Key{Out: "gated", SiLU: true})
				}
				if i8 {
					forms = append(forms, Key{In: "quant"})
				}
				for _, in := range forms {
					k := Key{Family: "gemv", Entry: "gemv", Int8: i8, WG: wg, TPR: tpr, In: in.In, Out: in.Out, SiLU: in.SiLU}
					ks = append(ks, k)
					if i8 && in.Out != "" {
						// The epilogue with the norm prologue: integer sums only.
						np, npd := k, k
						np.In, npd.In, npd.Dot4 = "norm", "norm", true
						ks = append(ks, np, npd)
					}
					if i8 {
						fma, dot4 := k, k
						fma.FMA, dot4.Dot4 = true, true
						ks = append(ks, fma, dot4)
					}
				}
			}
		}
	}
	ks = append(ks,
		Key{Family: "matmul", Entry: "matmul", Int8: true, WG: WG, Dot4: true},
		Key{Family: "sampling", Entry: "prep_part", WG: RowWG},
		Key{Family: "sampling", Entry: "prep_merge", WG: RowWG},
		Key{Family: "sampling", Entry: "mass_part0", WG: RowWG},
		Key{Family: "sampling", Entry: "mass_part1", WG: RowWG},
		Key{Family: "sampling", Entry: "mass_part2", WG: RowWG},
		Key{Family: "sampling", Entry: "mass_part3", WG: RowWG},
		Key{Family: "sampling", Entry: "draw_part", WG: RowWG},
		Key{Family: "sampling", Entry: "draw_pick", WG: RowWG},
		Key{Family: "norm", Entry: "rmsnorm", WG: WG},
		Key{Family: "norm", Entry: "residual", WG: WG},
		Key{Family: "rope", Entry: "headprep", WG: WG},
		Key{Family: "act", Entry: "gated", WG: WG},
		Key{Family: "act", Entry: "gated", WG: WG, SiLU: true},
		Key{Family: "sample", Entry: "argmax", WG: WG},
	)
	for _, u := range StreamUnrolls {
		ks = append(ks, Key{Family: "stream", Entry: "stream", WG: StreamWG, TPR: u})
	}
	// Every reducing variant has a subgroup form (Tier.Subgroups). The
	// float32-FMA products are left out: a tier with subgroups replaces
	// them wherever it also has the packed dot product, which every
	// browser with subgroups has.
	for _, k := range ks {
		if reduces(k) && !k.FMA {
			k.Subgroups = true
			ks = append(ks, k)
		}
	}
	return ks
}

// HasHeadDim reports whether attention has variants for heads of width hd.
func HasHeadDim(hd int) bool { return slices.Contains(HeadDims, hd) }

// TiledTile is the side of the tile (rows and tokens) that tiled variant k
// computes per workgroup: its grid is ceil(rows/side) by ceil(tokens/side).
func TiledTile(k Key) int {
	if k.Tile != 0 {
		return k.Tile
	}
	return 64
}

// TiledMinGroups is how many workgroups a prefill product should have to
// fill the GPU: two per multiprocessor of an H200 (132). The split product
// slices a product of few rows (the Q|K|V, output and down products of a
// 1B model at 512 tokens have 36-48 large tiles) into as many.
const TiledMinGroups = 264

// TiledMinGroupsFor is TiledMinGroups for split variant k: twice as many
// for the 64x64 tiles (144-192 tiles on those products), whose workgroups
// hold a quarter of the large tile's sums and fit several to a
// multiprocessor.
func TiledMinGroupsFor(k Key) int {
	if TiledTile(k) == 64 {
		return 2 * TiledMinGroups
	}
	return TiledMinGroups
}

// TiledPass is how many words (4 int8 columns each) a pass of int8 tiled
// variant k takes: its split form slices the columns by passes.
func TiledPass(k Key) int {
	switch {
	case k.Tile == TiledBig:
		return TiledPassWords
	case k.Matrix && k.Tile == 64:
		return 24
	}
	return 16 // the 64x64 DOT4 and first MATRIX tiles
}

// Tiled is the tiled variant that tier runs for tile: 0, the first 64x64
// tile (the default); 64, the DOT4 product's 64x64 tile with its loops
// written out; TiledBig, the large tile. Each where the tier has it, the
// first 64x64 tile elsewhere. The default is the first tile because the
// large DOT4 tile measured slower on the H200 (2026-12-02, 1B pp512 in
// 512-token steps: 6,850 tok/s with it on every product, 9,450 with it
// where its grid had 264 workgroups or more, 12,066 with 64x64
// everywhere), before its loops were written out too.
func Tiled(tier Tier, int8 bool, tile int) Key {
	return tier.Apply(Key{Family: "tiled", Entry: "tiled", Int8: int8, WG: TiledWG, Tile: tile})
}
