package shaders

// FlashEntry is the attn family's flash-style prefill attention (attend_flash, attn_flash.wgsl):
// a workgroup per block of query rows of one KV head, every K/V tile shared
// through workgroup memory by the block's rows.
const FlashEntry = "attend_flash"

// flashWords is attend_flash's workgroup memory in words for blocks of fq
// query rows and tiles of fk keys: the query rows, a tile of K or V rows
// (odd stride), the scores, each key's row, chunk flag and V scale, and
// each row's max, sum and rescale.
func flashWords(k Key, fq, fk int) int {
	return fq*k.HD + fk*(attnRowWords(k)+1) + fq*fk + 3*fk + 3*fq
}

// FlashShape is the block of query rows and the tile of keys attend_flash
// variant k takes: as many rows as fit WebGPU's default workgroup memory
// (up to 16: more rows share each K/V tile), then as many keys (up to 16:
// the 256 scores of 16 rows by 16 keys are one per invocation).
func FlashShape(k Key) (rows, keys int) {
	for fq := 16; fq >= 1; fq /= 2 {
		for fk := 16; fk >= 1; fk /= 2 {
			if 4*flashWords(k, fq, fk) <= WorkgroupBytes {
				return fq, fk
			}
		}
	}
	return 1, 1
}

// FlashGrid is attend_flash's grid for n tokens: blocks of query rows by
// KV heads.
func FlashGrid(k Key, n, heads, kvHeads int) [3]int {
	fq, _ := FlashShape(k)
	return [3]int{(n*(heads/kvHeads) + fq - 1) / fq, kvHeads, 1}
}
