//go:build !js && !wasip1

package shaders

import (
	"slices"
	"strconv"
	"testing"

	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestPrefillAttention compares attend_flash (prefill's flash attention)
// with engine/cpu's attention of every query head of every chunk token:
// token counts that leave the last block of query rows and the last tile
// of keys partial, MQA and GQA with groups of 1, 3, 4 and 8 (more heads
// than a block of width 256 has rows), head widths of 12, 16, 256
// (Gemma 3's, whose blocks shrink to fit 16 KiB) and 520,
// local layers whose ring has wrapped and chunks wider than the window,
// a soft-cap, over poisoned outputs with a poisoned tail that must stay;
// each for the first variant and the register one (Key.Regs), also with
// FlashTiles keys a tile (Key.Tile).
func TestPrefillAttention(t *testing.T) {
	dawn := []string{"global-odd-int8", "local-chunk-wider-than-window-int8", "gqa-int8", "group-of-3-int8", "softcap-int8", "gemma-heads-int8", "group-of-8-int8"}
	for _, c := range slices.Clone(dawn) {
		dawn = append(dawn, c+"-regs", c+"-regs"+strconv.Itoa(FlashTiles))
	}
	onDevices(t, testPrefillAttention, append(dawn, "wide-heads-f32-regs")...)
}

func testPrefillAttention(t *testing.T) {
	type tcase struct {
		name     string
		cfg      *model.Config
		layer    int
		start, n int
	}
	var cases []tcase
	for _, dtype := range []model.DType{model.Int8, model.F32} {
		cai := testmodel.CAIShaped(97, dtype) // 4 query heads on 1 KV head, width 16, windows of 8
		plain := testmodel.Plain(97, dtype)   // 4 on 2, width 12
		groups3 := testmodel.Plain(97, dtype)
		groups3.Heads, groups3.KVHeads = 6, 2
		mha := testmodel.Plain(97, dtype)
		mha.KVHeads = 4
		capped := testmodel.Plain(97, dtype)
		capped.AttnSoftcap = 5
		gemma := testmodel.CAIShaped(97, dtype)
		gemma.HeadDim = 256
		wide := testmodel.CAIShaped(97, dtype)
		wide.HeadDim = 520
		eight := testmodel.CAIShaped(97, dtype) // 8 query heads on 1: more than a block's rows at width 256
		eight.HeadDim, eight.Heads = 256, 8
		d := dtype.String()
		cases = append(cases,
			tcase{"global-odd-" + d, cai, 11, 0, 37},
			tcase{"global-after-history-" + d, cai, 5, 150, 13},
			tcase{"local-ring-wrapped-" + d, cai, 1, 21, 5},
			tcase{"local-chunk-wider-than-window-" + d, cai, 0, 13, 19},
			tcase{"gqa-" + d, plain, 2, 40, 9},
			tcase{"group-of-3-" + d, groups3, 1, 7, 11},
			tcase{"mha-" + d, mha, 0, 3, 6},
			tcase{"softcap-" + d, capped, 3, 17, 4},
			tcase{"gemma-heads-" + d, gemma, 11, 30, 21},
			tcase{"wide-heads-" + d, wide, 0, 9, 5},
			tcase{"group-of-8-" + d, eight, 11, 3, 7},
		)
	}
	for _, tc := range cases {
		// The first variant, the register one and the register one with
		// FlashTiles keys a tile (where rows fit beside them).
		for _, v := range []struct {
			suffix string
			regs   int
			tile   int
		}{{"", 0, 0}, {"-regs", FlashRegs, 0}, {"-regs" + strconv.Itoa(FlashTiles), FlashRegs, FlashTiles}} {
			k := Key{Family: "attn", Entry: FlashEntry, Int8: tc.cfg.DType == model.Int8, WG: RowWG, HD: tc.cfg.HeadDim, Regs: v.regs, Tile: v.tile}
			if !FlashFits(k) {
				continue
			}
			runCase(t, tc.name+v.suffix, func(t *testing.T) {
				c := tc.cfg
				in := attnInputs(t, c, tc.layer, tc.start, tc.n)
				const tail = 37
				out := buffer(t, nil, len(in.want)+tail)
				dispatch(t, k, in.step, in.p, FlashGrid(k, tc.n, c.Heads, c.KVHeads), in.q, out, in.kv, in.chunk)
				got := read(t, out, len(in.want)+tail)
				closeTo(t, "flash attention "+k.Label(), bytesF32(got), in.want, rel)
				for i, w := range bytesU32(got)[len(in.want):] {
					if w != poison {
						t.Fatalf("word %d past the output overwritten: %#x", len(in.want)+i, w)
					}
				}
			})
		}
	}
}

// TestFlashShape checks that every flash attention variant fits WebGPU's
// default workgroup memory and shares each K/V tile among several query
// rows wherever a row fits several times (beside the tile of keys a
// variant names).
func TestFlashShape(t *testing.T) {
	for _, k := range Variants() {
		if k.Entry != FlashEntry {
			continue
		}
		fq, fk := FlashShape(k)
		if b := 4 * flashWords(k, fq, fk); b > WorkgroupBytes {
			t.Errorf("%s: %d rows by %d keys take %d bytes of workgroup memory, more than %d", k.Label(), fq, fk, b, WorkgroupBytes)
		}
		if fq < 8 && flashFits(k, 8, max(k.Tile, 1)) {
			t.Errorf("%s: blocks of %d query rows where 8 fit", k.Label(), fq)
		}
		t.Logf("%s: %d query rows, %d keys a tile", k.Label(), fq, fk)
	}
	// The register variant gives each invocation a quad of a row: a head
	// of more quads than invocations has no shape, so the plan takes the
	// first variant there.
	wide := Key{Family: "attn", Entry: FlashEntry, WG: RowWG, HD: 4*RowWG + 4, Regs: FlashRegs}
	if FlashFits(wide) {
		fq, fk := FlashShape(wide)
		t.Errorf("%s: the register variant fits (%d rows by %d keys) a head of %d quads on %d invocations", wide.Label(), fq, fk, wide.HD/4, RowWG)
	}
	if wide.Regs = 0; !FlashFits(wide) {
		t.Errorf("%s: the first variant does not fit", wide.Label())
	}
}
