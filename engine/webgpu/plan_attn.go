package webgpu

import (
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// attention plans layer l's attention: for a step of one token,
// flash-decoding (workgroups over tiles of keys, then the merge of their
// partial states, fused with the output's quantisation where it can be):
// by default a workgroup per (run of tiles, KV head) for all its query
// heads, with qkv_prep's work folded in (attend_group; qp holds that
// work's parameters), or as Options.Attention chooses; where the step's
// span of keys on the layer is short (Options.AttnWhole, int8 models of
// one KV head), one workgroup for all of it that also does the merge's
// quantisation, and no merge (attend_group's whole-step variant); for
// longer steps, a workgroup per (head, token).
func (s *Sequence) attention(l int, qp shaders.QKVParams) {
	c := s.m.cfg
	int8Mode := c.DType == model.Int8
	ri := s.lay.OfLayer[l]
	cr := s.chunkAt[ri]
	r := &s.lay.Regions[ri]
	regEnd := r.V + int64(r.Slots*c.KVHeads)*s.lay.RowBytes
	if int8Mode {
		regEnd = r.VScale + int64(r.Slots*c.KVHeads)*4
	}
	word := func(off int64) uint32 { return uint32((off - r.K) / 4) }
	window := c.Layers[l].Window
	kt, room := s.attnTile(), s.maxSplits()
	ap := shaders.AttnParams{Heads: uint32(c.Heads), KVHeads: uint32(c.KVHeads), Window: uint32(window),
		Slots: uint32(r.Slots), Ring: b2u(r.Ring), Scale: c.Scale(), Softcap: float32(c.AttnSoftcap), Splits: uint32(room),
		Tile: uint32(kt), KWord: 0, VWord: word(r.V), CKWord: 0, CVWord: uint32((cr.v - cr.k) / 4)}
	if int8Mode {
		ap.KSWord, ap.VSWord = word(r.KScale), word(r.VScale)
		ap.CKSWord, ap.CVSWord = uint32((cr.ks-cr.k)/4), uint32((cr.vs-cr.k)/4)
	}
	kv, chunk := at(s.arena, r.K, regEnd-r.K), at(s.chunk, cr.k, cr.end-cr.k)
	// Prefill: flash attention, a workgroup per block of query rows of one
	// KV head sharing each K/V tile (attend_flash, attn_flash.wgsl: its
	// register variant where it fits the head, its first one with
	// Options.FlashFirst), or with
	// Options.RowAttention a workgroup per (query head, token).
	if s.m.opt.RowAttention {
		s.add("attn", "attend", ap, func(n, _, _ int) (int, int, int) {
			if n == 1 {
				return 0, 0, 0
			}
			return c.Heads, n, 1
		}, whole(s.q), whole(s.att), kv, chunk)
	} else {
		flash := s.m.key("attn", shaders.FlashEntry)
		flash.WG = shaders.RowWG
		if !s.m.opt.FlashFirst {
			regs := flash
			regs.Regs, regs.Tile = shaders.FlashRegs, s.m.opt.FlashTile
			if !shaders.FlashFits(regs) {
				regs.Tile = 0 // no rows fit beside that many keys: the shape's own
			}
			if shaders.FlashFits(regs) {
				flash = regs
			} // else a head too wide for it: the first variant
		}
		s.addKey(flash, ap, func(n, _, _ int) (int, int, int) {
			if n == 1 {
				return 0, 0, 0
			}
			g := shaders.FlashGrid(flash, n, c.Heads, c.KVHeads)
			return g[0], g[1], g[2]
		}, whole(s.q), whole(s.att), kv, chunk)
	}
	// span is the keys a decode step at start attends to on this layer.
	span := func(start int) int {
		if window > 0 {
			return min(start+1, window)
		}
		return start + 1
	}
	// parts is how many partial states a decode step at start leaves: its
	// keys' tiles in at most room runs of equally many (attn.wgsl's
	// parts_of).
	parts := func(start int) int {
		tiles := (span(start) + kt - 1) / kt
		per := (tiles + room - 1) / room
		return (tiles + per - 1) / per
	}
	// A decode step whose span is at most bound runs the whole-step
	// variant alone (one workgroup over every tile, the merge's
	// quantisation at its end); longer ones the pair (runs of tiles, then
	// the merge). Both are
	// planned, and each step's grids pick one, so a decode batch that
	// crosses the bound switches at the step that does.
	bound := s.attnWhole()
	wholeStep := func(n, start int) bool { return n == 1 && span(start) <= bound }
	decode := func(rows int) gridFunc {
		return func(n, _, start int) (int, int, int) {
			if n != 1 || wholeStep(n, start) {
				return 0, 0, 0
			}
			return parts(start), rows, 1
		}
	}
	wholeGrid := func(n, _, start int) (int, int, int) {
		if !wholeStep(n, start) {
			return 0, 0, 0
		}
		return 1, c.KVHeads, 1
	}
	ap.OutScaleWord = uint32(s.qScale[s.attq]) // the whole step's and combine_quant's
	wk := s.groupKey()
	wk.Out = "quant"
	switch {
	case s.groupPrep():
		gp := ap
		gp.Norm, gp.OnePlus, gp.Eps, gp.Table, gp.QNorm, gp.KNorm = qp.Norm, qp.OnePlus, qp.Eps, qp.Table, qp.QNorm, qp.KNorm
		gp.PrepKV, gp.Bias, gp.BiasWord, gp.RotHalf = b2u(qp.KVHeads > 0), qp.Bias, qp.BiasWord, qp.RotHalf
		// The token's K/V go straight to the arena: no chunk (see commit).
		arena := at(s.arena, r.K, regEnd-r.K)
		s.addKey(s.groupKey(), gp, decode(c.KVHeads), whole(s.qkv), whole(s.parts), arena, whole(s.m.norms), whole(s.rope))
		if bound > 0 {
			s.addKey(wk, gp, wholeGrid, whole(s.qkv), whole(s.attq), arena, whole(s.m.norms), whole(s.rope))
		}
	case s.groupAttention():
		s.addKey(s.groupKey(), ap, decode(c.KVHeads), whole(s.q), whole(s.parts), kv, chunk)
		if bound > 0 {
			s.addKey(wk, ap, wholeGrid, whole(s.q), whole(s.attq), kv, chunk)
		}
	default:
		s.add("attn", "attend_split", ap, decode(c.Heads), whole(s.q), whole(s.parts), kv, chunk)
	}
	if s.fusedCombine() {
		key := s.m.key("attn", "combine_quant")
		key.WG = shaders.RowWG
		s.addKey(key, ap, func(n, _, start int) (int, int, int) {
			if n != 1 || wholeStep(n, start) {
				return 0, 0, 0
			}
			return 1, 1, 1
		}, whole(s.parts), whole(s.attq))
		return
	}
	s.add("attn", "combine", ap, func(n, _, _ int) (int, int, int) {
		if n != 1 {
			return 0, 0, 0
		}
		return c.Heads, 1, 1
	}, whole(s.parts), whole(s.att))
}

// The decode attention paths Options.Attention names.
const (
	AttnGroupPrep = "group-prep" // attend_group with qkv_prep folded in (the default)
	AttnGroup     = "group"      // attend_group after qkv_prep's own dispatch
	AttnSplit     = "split"      // attend_split: a workgroup per (tile, query head)
)

// AttnPaths lists the decode attention paths, the default first.
var AttnPaths = []string{AttnGroupPrep, AttnGroup, AttnSplit}

// defaultAttnRoom is how many partial states a grouped decode step leaves
// per head at most (Options.AttnRoom): 16-key tiles up to 1024 keys each
// get a workgroup, longer spans run several tiles per workgroup, and the
// merge weighs at most this many states.
const defaultAttnRoom = 64

// defaultAttnWhole is Options.AttnWhole's default: the longest span of
// keys a decode step runs in one workgroup without the merge, 0: none.
// The merge is mostly a dispatch's fixed cost at short positions (7.4 us
// of combine_quant on the H200 under Dawn, against 13.1 us of
// attend_group), but one workgroup over a span's tiles in turn gave that
// back: on the H200 (2026-12-03, tg128, medians of 5 after 2 s of
// warm-up) bounds of 128-512 read 1B 497-528 tok/s against 514 without,
// 270M 875-890 against 837 on Dawn's dot4+subgroups tier, but 8-11%
// slower natively (1B 485 against 525, 270M 843 against 950) and 2-4%
// on Dawn's fallback tier, and a bound past the window (512) halved
// decode from 4096, whose global layers then run 4,096 keys in one
// workgroup. bench/BROWSER.md has the table.
const defaultAttnWhole = 0

// attnWhole is the longest span of keys whose decode step runs
// attend_group's whole-step variant (Options.AttnWhole, defaultAttnWhole
// for 0), or 0 where none does: Options.AttnWhole is negative, or the
// model has no such variant. The variant quantises the attention row of
// every head by one max in one workgroup, so it takes int8 models whose
// merge is fused with the quantisation (fusedCombine) and whose one KV
// head puts every query head in that workgroup (Gemma 3 1B and 270M), on
// the grouped path.
func (s *Sequence) attnWhole() int {
	o := s.m.opt
	if o.AttnWhole < 0 || !s.groupAttention() || !s.fusedCombine() || s.m.cfg.KVHeads != 1 {
		return 0
	}
	if o.AttnWhole == 0 {
		return defaultAttnWhole
	}
	return o.AttnWhole
}

// groupKey is attend_group's variant for this model, with qkv_prep folded
// in or not as Options.Attention says, at the workgroup size its group
// fits (0 where none).
func (s *Sequence) groupKey() shaders.Key {
	c := s.m.cfg
	k := s.m.key("attn", "attend_group")
	k.Group = c.Heads / c.KVHeads
	if o := s.m.opt; o.Attention == "" || o.Attention == AttnGroupPrep || o.Fuse.Attention {
		k.In = "qkv"
	}
	k.WG = shaders.GroupWG(k)
	return k
}

// groupAttention reports whether a decode step's attention runs as
// attend_group: Options.Attention asks for it (the default does; so does
// Fuse.Attention, with qkv_prep folded in, whatever Attention says) and the
// model's group of query heads has a variant that fits WebGPU's default
// workgroup memory. Others run attend_split.
func (s *Sequence) groupAttention() bool {
	return (s.m.opt.Attention != AttnSplit || s.m.opt.Fuse.Attention) && s.groupKey().WG > 0
}

// groupPrep reports whether the grouped attention also does qkv_prep's
// work for a decode step (qkv_prep then dispatches nothing).
func (s *Sequence) groupPrep() bool {
	return s.groupAttention() && s.groupKey().In == "qkv"
}

// fusedCombine reports whether a decode step's attention merge also
// quantises its output for the output product (attn.wgsl's combine_quant):
// int8 models whose heads are whole int8 words.
func (s *Sequence) fusedCombine() bool {
	c := s.m.cfg
	return c.DType == model.Int8 && c.HeadDim%4 == 0
}

// maxSplits is the room for partial states per head of a decode step's
// attention (AttnParams.Splits): every tile of the longest span of keys
// (a window's worth on local layers, the whole context on global ones)
// for attend_split; for attend_group at most Options.AttnRoom, its runs
// of tiles longer where the span has more.
func (s *Sequence) maxSplits() int {
	keys := 0
	for _, l := range s.m.cfg.Layers {
		k := s.lay.Context
		if l.Window > 0 {
			k = min(k, l.Window)
		}
		keys = max(keys, k)
	}
	tiles := (keys + s.attnTile() - 1) / s.attnTile()
	if s.groupAttention() {
		room := s.m.opt.AttnRoom
		if room <= 0 {
			room = defaultAttnRoom
		}
		return min(tiles, room)
	}
	return tiles
}

// attnTile is the keys per tile of the decode step's attention kernel.
func (s *Sequence) attnTile() int {
	if s.groupAttention() {
		return shaders.AttnTile(s.groupKey())
	}
	return shaders.AttnTile(s.m.key("attn", "attend_split"))
}
