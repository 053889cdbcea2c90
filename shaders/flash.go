package shaders

// FlashEntry is the attn family's flash-style prefill attention (attend_flash, attn_flash.wgsl):
// a workgroup per block of query rows of one KV head, every K/V tile shared
// through workgroup memory by the block's rows. Its Regs variant
// (attn_flash_regs.wgsl) spreads each tile's scores, softmax and P.V over
// the invocations with their sums in registers.
const FlashEntry = "attend_flash"

// FlashRegs is the Key.Regs of attend_flash's register variant (its
// blocks and tiles are FlashShape's, not a count of quads).
const FlashRegs = 1

// flashWords is attend_flash's workgroup memory in words for blocks of fq
// query rows and tiles of fk keys. The first variant: the query rows, a
// tile of K or V rows (odd stride), the scores, each key's row, chunk flag
// and V scale, and each row's max, sum and rescale. The Regs variant: the
// query rows as quads (a quad more a row), the tile, the partial scores
// (then the scores and the exponentials), each key's K and V scales and
// each row's rescale.
func flashWords(k Key, fq, fk int) int {
	if k.Regs != 0 {
		return fq*(k.HD/4+1)*4 + fk*(attnRowWords(k)+1) + max(flashSlices(k, fq, fk), 2)*fq*fk + 2*fk + fq
	}
	return fq*k.HD + fk*(attnRowWords(k)+1) + fq*fk + 3*fk + 3*fq
}

// flashLoads is the most words of a K/V tile each invocation of the Regs
// variant loads ahead into registers (its w0..w7).
const flashLoads = 8

// flashSlices is how many slices of the head the Regs variant splits each
// score over (attn_flash_regs.wgsl's FDS): as many as keep every
// invocation busy where the (row, key) pairs are fewer than the
// invocations, each a whole number of quads.
func flashSlices(k Key, fq, fk int) int {
	ds := 1
	for 2*ds*fq*fk <= k.WG && (k.HD/4)%(2*ds) == 0 {
		ds *= 2
	}
	return ds
}

// flashRowsPer is how many rows each invocation of the Regs variant keeps
// in its P.V (FPR: 1, 2 or 4), so that the (rows, quad) items are at most
// the invocations; 0 where even 4 leave too many.
func flashRowsPer(k Key, fq int) int {
	for pr := 1; pr <= 4 && pr <= fq; pr *= 2 {
		if fq%pr == 0 && fq/pr*(k.HD/4) <= k.WG {
			return pr
		}
	}
	return 0
}

// flashFits reports whether variant k runs blocks of fq rows by tiles of
// fk keys within WebGPU's default workgroup memory; for the Regs variant
// also its pairs and P.V items at most one an invocation and its loads
// ahead within flashLoads words an invocation.
func flashFits(k Key, fq, fk int) bool {
	if 4*flashWords(k, fq, fk) > WorkgroupBytes {
		return false
	}
	if k.Regs == 0 {
		return true
	}
	return fq*fk <= k.WG && fk*attnRowWords(k) <= flashLoads*k.WG && flashRowsPer(k, fq) > 0
}

// FlashShape is the block of query rows and the tile of keys attend_flash
// variant k takes: as many rows as fit WebGPU's default workgroup memory
// (up to 16: more rows share each K/V tile), then as many keys (up to 16:
// the 256 scores of 16 rows by 16 keys are one per invocation); or, where
// k names its keys per tile (Key.Tile), as many rows as fit beside them
// (0 rows where none does, as for the register variant of a head too wide
// for it).
func FlashShape(k Key) (rows, keys int) {
	if k.Tile > 0 {
		for fq := 16; fq >= 1; fq /= 2 {
			if flashFits(k, fq, k.Tile) {
				return fq, k.Tile
			}
		}
		return 0, k.Tile
	}
	for fq := 16; fq >= 1; fq /= 2 {
		for fk := 16; fk >= 1; fk /= 2 {
			if flashFits(k, fq, fk) {
				return fq, fk
			}
		}
	}
	if k.Regs != 0 {
		return 0, 1 // a head too wide for the register variant: FlashFits is false
	}
	return 1, 1
}

// FlashTiles is the keys per tile of the register variant's second
// shape (Key.Tile): twice the 16 that Gemma 3's head width of 256 leaves
// beside 8 query rows, for 4 rows (one token's heads) and half the tiles
// in sequence per workgroup.
const FlashTiles = 32

// FlashFits reports whether attend_flash variant k has a shape: false
// where it names a tile of keys that no block of rows fits beside, or is
// the register variant of a head too wide for it (more quads than
// invocations).
func FlashFits(k Key) bool {
	fq, _ := FlashShape(k)
	return fq > 0
}

// FlashGrid is attend_flash's grid for n tokens: blocks of query rows by
// KV heads.
func FlashGrid(k Key, n, heads, kvHeads int) [3]int {
	fq, _ := FlashShape(k)
	return [3]int{(n*(heads/kvHeads) + fq - 1) / fq, kvHeads, 1}
}
