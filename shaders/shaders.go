// Package shaders holds wick's WGSL kernels, embedded into the binary, and
// the small preprocessor that specialises them. There is one source per
// kernel family (matmul, norm, rope, attn, ...); a Key names a variant
// (dtype, workgroup size, activation, head width, packed-dot support) and
// expands to the WGSL of exactly that variant, so dispatch code and shader
// cannot disagree on the parameters a variant was compiled with.
//
// Preprocessor: `#include "file"` pastes a file; `#if NAME`, `#if !NAME`,
// `#else`, `#endif` keep or drop lines by a flag; `{{NAME}}` is replaced by
// a value. Dropped lines stay as empty lines, and every output line
// remembers its file and line, so compile errors point at the source.
package shaders

import (
	"embed"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wick-run/wick/engine/gpu"
)

//go:embed *.wgsl
var files embed.FS

// Key names one kernel variant. It is comparable: backends key their
// pipeline caches with it.
type Key struct {
	Family string // source file without .wgsl
	Entry  string // entry point
	Int8   bool   // int8 (W8A8, int8 KV) rather than float32
	WG     int    // workgroup size, a power of two
	SiLU   bool   // act: SwiGLU rather than GeGLU
	HD     int    // attn: head width
	Dot4   bool   // use dot4I8Packed (front ends with packed_4x8_integer_dot_product)
	TPR    int    // gemv: invocations per row; stream: loads per invocation
	FMA    bool   // gemv: int8 products through exact float32 FMA
	// In is gemv's prologue, which makes its input row in workgroup
	// memory from the previous step's outputs instead of reading it
	// ready-made: "" (none), "norm" (residual add, RMSNorm, quantisation:
	// prenorm.wgsl's work) or "gated" (gated activation and quantisation:
	// act.wgsl's gated_quant). It saves a dispatch per product. "quant"
	// (int8) only quantises the float32 row that a gated epilogue (Out)
	// made, by the max |x| that the epilogue left in a word per token.
	In string
	// Out is gemv's epilogue: "" (none) or "gated", where the gate|up
	// product writes act(gate)*up (and in int8 mode takes its max |x| into
	// a word per token) instead of gate and up: act.wgsl's gated_quant
	// then has nothing left to do. Its rows per workgroup must be even
	// (TPR at most WG/2). attend_group's "quant" is below.
	Out string
	// For attn's attend_group, In "qkv" folds rope.wgsl's qkv_prep in: the
	// kernel reads the raw Q|K|V product row and prepares the query heads
	// (and the token's K/V) itself, which saves a dispatch. Out "quant"
	// (int8) makes it the whole step's attention in one workgroup: every
	// tile of the span, then combine_quant's work (each head's division by
	// its sum, the int8 quantisation of the row of all heads into the
	// output product's input), so the merge's dispatch is not needed.
	// Only for models of one KV head: the row's scale is one workgroup's.
	//
	// Group is attn's query heads per KV head, for the decode kernel that
	// takes all of them in one workgroup (attend_group).
	Group int
	// Regs makes a one-workgroup row kernel (prenorm, act's gated_quant)
	// load its row once into registers, Regs quads of 4 values per
	// invocation (one of RowQuadCounts), instead of rereading it from
	// memory in each pass: rows of up to 4*Regs*WG values (RowQuadsFor).
	// gemv's prologues always hold their row so, StageQuads quads each.
	Regs int
	// Subgroups makes the workgroup reductions (common.wgsl's wg_sum,
	// wg_max, wg_sum_i) subgroup operations: the subgroups feature and
	// WGSL's subgroup_id (see Tier).
	Subgroups bool
	// Matrix makes tiled's int8 product a subgroup-matrix one (tensor
	// cores): chromium-experimental-subgroup-matrix with the i8 -> i32
	// configuration Tier.Matrix requires.
	Matrix bool
	// Tile is tiled's tile side (rows = tokens): 0, the 64x64 tile as
	// written first; 64, the DOT4 product's 64x64 tile with its loops
	// written out (constant indices into its sums); TiledBig, the DOT4
	// and MATRIX products' 128x128 tile. Tiled says which runs. For
	// attend_flash's Regs variant it is the keys per tile (a power of two
	// up to 64; 0 for FlashShape's choice), the rows shrinking to fit.
	Tile int
	// Split makes the large DOT4 tile add its sums over a slice of the
	// columns (the grid's z) into an int32 scratch buffer with atomics,
	// which tiled_merge's merge then dequantises: products of few rows
	// get workgroups for the whole GPU.
	Split bool
}

// Label names the variant in errors and debuggers.
func (k Key) Label() string {
	s := fmt.Sprintf("%s.%s/wg%d", k.Family, k.Entry, k.WG)
	if k.Int8 {
		s += "/int8"
	} else {
		s += "/f32"
	}
	if k.SiLU {
		s += "/silu"
	}
	if k.HD != 0 {
		s += fmt.Sprintf("/hd%d", k.HD)
	}
	if k.Dot4 {
		s += "/dot4"
	}
	if k.TPR != 0 {
		s += fmt.Sprintf("/tpr%d", k.TPR)
	}
	if k.FMA {
		s += "/fma"
	}
	if k.In != "" {
		s += "/in-" + k.In
	}
	if k.Out != "" {
		s += "/out-" + k.Out
	}
	if k.Group != 0 {
		s += fmt.Sprintf("/g%d", k.Group)
	}
	if k.Regs != 0 {
		s += fmt.Sprintf("/regs%d", k.Regs)
	}
	if k.Subgroups {
		s += "/sg"
	}
	if k.Matrix {
		s += "/sm"
	}
	if k.Tile != 0 {
		s += fmt.Sprintf("/t%d", k.Tile)
	}
	if k.Split {
		s += "/split"
	}
	return s
}

func (k Key) defines() (map[string]bool, map[string]string, error) {
	if k.WG <= 0 || k.WG&(k.WG-1) != 0 || k.WG > 256 {
		return nil, nil, fmt.Errorf("shader %s: workgroup size %d is not a power of two up to 256", k.Label(), k.WG)
	}
	if k.TPR < 0 || k.TPR&(k.TPR-1) != 0 || k.TPR > k.WG {
		return nil, nil, fmt.Errorf("shader %s: %d invocations per row is not a power of two up to the workgroup size", k.Label(), k.TPR)
	}
	switch k.In {
	case "", "norm", "gated":
	case "quant":
		if k.Family != "gemv" || !k.Int8 {
			return nil, nil, fmt.Errorf("shader %s: prologue quant is int8 gemv's", k.Label())
		}
	case "qkv":
		if k.Entry != "attend_group" {
			return nil, nil, fmt.Errorf("shader %s: prologue qkv is attend_group's", k.Label())
		}
	default:
		return nil, nil, fmt.Errorf("shader %s: unknown prologue %q", k.Label(), k.In)
	}
	switch k.Out {
	case "":
	case "quant":
		if k.Entry != "attend_group" || !k.Int8 {
			return nil, nil, fmt.Errorf("shader %s: the quant epilogue is int8 attend_group's", k.Label())
		}
	case "gated":
		if k.Family != "gemv" || !(k.In == "" || k.In == "norm" && k.Int8 && !k.FMA) || k.TPR > k.WG/2 {
			return nil, nil, fmt.Errorf("shader %s: the gated epilogue is gemv's without a prologue or (int8, integer sums) with the norm prologue, at most WG/2 invocations per row", k.Label())
		}
	default:
		return nil, nil, fmt.Errorf("shader %s: unknown epilogue %q", k.Label(), k.Out)
	}
	flags := map[string]bool{"INT8": k.Int8, "SILU": k.SiLU, "DOT4": k.Dot4, "FMA": k.FMA,
		"STAGED": k.In != "", "NORM_IN": k.In == "norm", "GATED_IN": k.In == "gated", "QUANT_IN": k.In == "quant",
		"GATED_OUT": k.Out == "gated", "QUANT_OUT": k.Out == "quant", "GATED_ACT": k.In == "gated" || k.Out == "gated", "GEMV_PARAMS": k.In != "" || k.Out != "", "GROUP": k.Group > 0, "PREP": k.In == "qkv",
		"SUBGROUPS": k.Subgroups, "MATRIX": k.Matrix, "FLASH": k.Entry == FlashEntry, "REGS": k.Regs != 0,
		"BIG": k.Tile == TiledBig, "SPLIT": k.Split, "UNROLL": k.Tile == 64}
	if k.Matrix && (k.Family != "tiled" || !k.Int8 || k.Dot4) {
		return nil, nil, fmt.Errorf("shader %s: only tiled's int8 product without Dot4 has a subgroup-matrix variant", k.Label())
	}
	switch {
	case k.Tile == 0:
	case k.Entry == FlashEntry:
		if k.Regs == 0 || k.Tile&(k.Tile-1) != 0 || k.Tile > 64 {
			return nil, nil, fmt.Errorf("shader %s: only attend_flash's register variant names its keys per tile, a power of two up to 64", k.Label())
		}
	case k.Family != "tiled" || !k.Int8:
		return nil, nil, fmt.Errorf("shader %s: only tiled's int8 products name a tile", k.Label())
	case k.Tile == 64 && !k.Dot4 && !k.Matrix:
		return nil, nil, fmt.Errorf("shader %s: only the DOT4 and MATRIX products have the written-out 64x64 tile", k.Label())
	case k.Tile == TiledBig && !k.Dot4 && !k.Matrix:
		return nil, nil, fmt.Errorf("shader %s: only the DOT4 and MATRIX products have the %dx%[2]d tile", k.Label(), TiledBig)
	case k.Tile != 64 && k.Tile != TiledBig:
		return nil, nil, fmt.Errorf("shader %s: tile %d is none of 64, %d", k.Label(), k.Tile, TiledBig)
	}
	if k.Split && !(k.Tile == TiledBig && k.Dot4) && k.Tile != 64 {
		return nil, nil, fmt.Errorf("shader %s: only tiled's large DOT4 tile and written-out 64x64 tiles have a split form", k.Label())
	}
	vals := map[string]string{"WG": strconv.Itoa(k.WG), "SG_ARGS": "", "SG_BEGIN": ""}
	if k.Tile == TiledBig && k.Dot4 {
		vals["BIG_DOTS"], vals["BIG_OUT"] = bigDots()
	}
	if k.Tile == 64 && k.Dot4 {
		vals["SMALL_DOTS"], vals["SMALL_OUT"] = smallDots()
	}
	if k.Subgroups {
		if !reduces(k) {
			return nil, nil, fmt.Errorf("shader %s: family %s has no subgroup variants", k.Label(), k.Family)
		}
		vals["SG_ARGS"] = ", @builtin(subgroup_invocation_id) sg_l: u32, @builtin(subgroup_id) sg_i: u32, @builtin(num_subgroups) sg_n: u32"
		vals["SG_BEGIN"] = "sg_begin(sg_l, sg_i, sg_n);"
	}
	if k.Entry == FlashEntry {
		if k.Regs != 0 && k.Regs != FlashRegs {
			return nil, nil, fmt.Errorf("shader %s: attend_flash's register variant is Regs %d", k.Label(), FlashRegs)
		}
	} else if k.Regs != 0 && !slices.Contains(RowQuadCounts, k.Regs) {
		return nil, nil, fmt.Errorf("shader %s: %d quads an invocation is none of %v", k.Label(), k.Regs, RowQuadCounts)
	}
	if k.Regs != 0 && k.Family != "prenorm" && !(k.Family == "act" && k.Entry == "gated_quant" && k.Int8) && k.Entry != FlashEntry {
		return nil, nil, fmt.Errorf("shader %s: only prenorm, int8 gated_quant and attend_flash have a register variant", k.Label())
	}
	if k.In != "" {
		vals["XV"] = strconv.Itoa(StagedVecs)
		vals["XVI"] = strconv.Itoa((StagedVecs + k.WG - 1) / k.WG)
	}
	switch {
	case k.Regs != 0:
		vals["RQ"] = strconv.Itoa(k.Regs)
		vals["RS"] = strconv.Itoa(4 * k.Regs) // prenorm holds values, not quads
	case k.In != "":
		rq := StageQuads(k.In)
		vals["RQ"] = strconv.Itoa(rq)
		vals["RV"] = strconv.Itoa(max(rq/4, 1)) // int8: whole 16-value vectors, 4 quads each
	}
	if k.Group > 0 {
		if k.HD <= 0 || k.HD%4 != 0 {
			return nil, nil, fmt.Errorf("shader %s: a group of heads needs a head width of whole quads", k.Label())
		}
		kt := AttnTile(k)
		if kt*(attnRowWords(k)+1) < k.HD {
			return nil, nil, fmt.Errorf("shader %s: a tile of %d keys cannot stage the new K row", k.Label(), kt)
		}
		quads := k.Group * k.HD / 4
		vals["G"] = strconv.Itoa(k.Group)
		vals["SPL"] = strconv.Itoa(k.WG / kt)
		vals["GQ"] = strconv.Itoa(quads)
		vals["GP"] = strconv.Itoa(k.Group * kt * (k.WG/kt + 1))
		vals["GKT"] = strconv.Itoa(k.Group * kt)
		vals["VPT"] = strconv.Itoa((quads + k.WG - 1) / k.WG)
	}
	if k.TPR > 0 {
		vals["TPR"] = strconv.Itoa(k.TPR)
		vals["RPW"] = strconv.Itoa(k.WG / k.TPR)
	}
	if k.HD > 0 {
		vals["HD"] = strconv.Itoa(k.HD)
		vals["HPT"] = strconv.Itoa((k.HD + k.WG - 1) / k.WG)
		kt := AttnTile(k)
		vals["KT"] = strconv.Itoa(kt)
		vals["TILE"] = strconv.Itoa(kt * (attnRowWords(k) + 1))
	}
	if k.Entry == FlashEntry {
		if k.HD <= 0 || (k.Int8 && k.HD%4 != 0) {
			return nil, nil, fmt.Errorf("shader %s: flash attention needs a head width (of whole int8 words)", k.Label())
		}
		fq, fk := FlashShape(k)
		if fq == 0 {
			return nil, nil, fmt.Errorf("shader %s: no block of query rows fits beside tiles of %d keys", k.Label(), fk)
		}
		vals["FQ"], vals["FK"] = strconv.Itoa(fq), strconv.Itoa(fk)
		vals["FQHD"], vals["FQFK"] = strconv.Itoa(fq*k.HD), strconv.Itoa(fq*fk)
		vals["FTILE"] = strconv.Itoa(fk * (attnRowWords(k) + 1))
		if k.Regs != 0 {
			if k.HD%4 != 0 || k.WG != RowWG {
				return nil, nil, fmt.Errorf("shader %s: the register flash attention needs a head width of whole quads and %d invocations", k.Label(), RowWG)
			}
			vals["FDS"] = strconv.Itoa(flashSlices(k, fq, fk))
			vals["FPR"] = strconv.Itoa(flashRowsPer(k, fq))
			vals["FW"] = strconv.Itoa((fk*attnRowWords(k) + k.WG - 1) / k.WG)
			vals["FQV"] = strconv.Itoa(fq * (k.HD/4 + 1))
			vals["FSW"] = strconv.Itoa(max(flashSlices(k, fq, fk), 2) * fq * fk)
		}
	}
	return flags, vals, nil
}

// WorkgroupBytes is WebGPU's default maxComputeWorkgroupStorageSize, which
// every adapter offers: kernels that stage rows in workgroup memory are
// planned within it, so they run on any device (phones included).
const WorkgroupBytes = 16384

// StagedVecs is how many 16-byte vectors of input row the gemv variants
// with a prologue stage in workgroup memory (12 KiB: with their reductions,
// within WorkgroupBytes at 256 invocations): rows of up to 12288 int8 or
// 3072 float32 values. A product of a wider row keeps a separate dispatch
// for its prologue. A fixed size rather than the model's width keeps the
// variants few (Variants lists them all).
const StagedVecs = 768

// RowQuads is how many quads (4 values) of a row each invocation of
// gemv's prologues keeps in registers: 32 values, so rows of up to 8192
// values at 256 invocations (a 1B model's FFN width, 6912, included). A
// fixed count keeps the variants few; wider rows take the kernels that
// reread memory.
const RowQuads = 8

// RowQuadCounts are the quads an invocation of a register-held row kernel
// (Key.Regs) may hold: the row's own count rounded up to one of these, so
// that a 1B model's 1152-wide row takes 2 at 256 invocations, not 8 (every
// quad held costs registers and loads whether the row reaches it or not).
var RowQuadCounts = []int{1, 2, 4, 8}

// RowQuadsFor is the Key.Regs a row kernel of wg invocations takes for
// rows of cols values, or 0 where the row is too wide for registers.
func RowQuadsFor(cols, wg int) int {
	for _, n := range RowQuadCounts {
		if cols <= 4*n*wg {
			return n
		}
	}
	return 0
}

// RowFits reports whether a row of cols values fits the registers of
// gemv's gated prologue at wg invocations.
func RowFits(cols, wg int) bool { return cols <= 4*RowQuads*wg }

// NormQuads is how many quads each invocation of gemv's NORM_IN prologue
// keeps in registers: 16 values, rows of up to 4096 at 256 invocations
// (every hidden width up to Llama 8B's). Half the gated prologue's, because
// the prologue holds four arrays of them (residual, branch output, both
// norms' weights) and a kernel takes registers for its largest part: at 8
// quads the product's loop ran with the prologue's 128 registers an
// invocation, so fewer workgroups per multiprocessor.
const NormQuads = 4

// StageQuads is the quads an invocation of gemv's prologue in holds.
func StageQuads(in string) int {
	if in == "norm" {
		return NormQuads
	}
	return RowQuads
}

// StageFits reports whether a row of cols values fits the registers of
// gemv's prologue in at wg invocations.
func StageFits(in string, cols, wg int) bool { return cols <= 4*StageQuads(in)*wg }

// GroupSizes are the query heads per KV head that attend_group has
// variants for: MQA and GQA checkpoints' (Gemma 3, Llama 3, Qwen 2.5 and
// 3) and the test models'. Other groups use the per-head decode kernels.
var GroupSizes = []int{1, 2, 3, 4, 6, 7, 8}

// GroupWGs are attend_group's workgroup sizes, largest first: a group
// runs at the largest whose workgroup memory fits WorkgroupBytes
// (GroupWG).
var GroupWGs = []int{256, 128, 64}

// groupTileKeys is attend_group's keys per tile (fewer where the rows are
// wide): few enough that short positions give several workgroups, with
// WG / groupTileKeys invocations sharing each key's score.
const groupTileKeys = 16

// GroupBytes is the workgroup memory of attend_group (variant k): the
// query rows of its group of heads, a tile of K or V rows, the partial
// scores, the scores and their exponentials, the tile's rows and scales,
// the reductions' slots. A model whose group fits no GroupWGs gets the
// per-head decode kernels instead. The whole-step variant (Out "quant")
// takes no more: its sums reuse gm, its max |x| the reductions' slots.
func GroupBytes(k Key) int {
	kt := AttnTile(k)
	words := k.Group*k.HD + // gq
		kt*(attnRowWords(k)+1) + // tile
		k.Group*kt*(k.WG/kt+1) + // gpart
		2*k.Group*kt + // ges, gev
		4*kt + // rows, chunks, gks, gvs
		2*k.Group + // gm, gc
		k.WG // red_f (or the subgroup slots, fewer)
	return 4 * words
}

// GroupWG is the workgroup size attend_group runs with for variant k (its
// WG ignored): the largest of GroupWGs whose workgroup memory fits
// WorkgroupBytes, or 0 where none does or k's group has no variant.
func GroupWG(k Key) int {
	if !slices.Contains(GroupSizes, k.Group) || k.HD%4 != 0 {
		return 0
	}
	for _, wg := range GroupWGs {
		k.WG = wg
		if GroupBytes(k) <= WorkgroupBytes {
			return wg
		}
	}
	return 0
}

// attnTileWords is the most words of K or V rows that attention stages in
// workgroup memory at once (8 KiB: with the rest, within WebGPU's default
// 16 KiB of workgroup storage).
const attnTileWords = 2048

func attnRowWords(k Key) int {
	if k.Int8 {
		return (k.HD + 3) / 4
	}
	return k.HD
}

// AttnTile is how many keys a tile of attention variant k holds (attn.wgsl's
// KT): what a decode step's attention splits the keys by. attend_group's
// tiles are smaller (groupTileKeys).
func AttnTile(k Key) int {
	kt := max(1, min(k.WG, attnTileWords/attnRowWords(k)))
	if k.Group > 0 {
		kt = min(kt, groupTileKeys)
	}
	return kt
}

// Source is an expanded variant: its WGSL and, for each of its lines, the
// file and line it came from.
type Source struct {
	WGSL  string
	Lines []string // Lines[i] is "file.wgsl:N" of output line i+1
}

// Expand returns the WGSL of variant k.
func Expand(k Key) (*Source, error) {
	flags, vals, err := k.defines()
	if err != nil {
		return nil, err
	}
	src := &Source{}
	var b strings.Builder
	if err := expand(&b, src, k.Family+".wgsl", flags, vals, 0); err != nil {
		return nil, fmt.Errorf("shader %s: %w", k.Label(), err)
	}
	src.WGSL = b.String()
	return src, nil
}

var valueRef = regexp.MustCompile(`\{\{([A-Z0-9_]+)\}\}`)

func expand(b *strings.Builder, src *Source, file string, flags map[string]bool, vals map[string]string, depth int) error {
	if depth > 4 {
		return fmt.Errorf("%s: includes nest too deep", file)
	}
	text, err := files.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	return expandLines(b, src, file, strings.Split(strings.TrimSuffix(string(text), "\n"), "\n"), 0, flags, vals, depth)
}

// expandLines expands lines first+1.. of file (their numbers in errors and
// Source.Lines). Besides #include and #if/#else/#endif it takes
// "#unroll NAME COUNT" ... "#end": the lines between, COUNT times (COUNT a
// number or a value's name), with {{NAME}} the iteration's index as a u32
// literal. WGSL has no unrolling, and a loop the driver leaves rolled
// indexes its function-scope arrays at run time, which moves them from
// registers to memory: written out, every index is a constant.
func expandLines(b *strings.Builder, src *Source, file string, lines []string, first int, flags map[string]bool, vals map[string]string, depth int) error {
	type cond struct{ keep, parentKeep, sawElse bool }
	var stack []cond
	keep := true
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		where := fmt.Sprintf("%s:%d", file, first+i+1)
		trim := strings.TrimSpace(line)
		emit := func(s string) {
			b.WriteString(s)
			b.WriteByte('\n')
			src.Lines = append(src.Lines, where)
		}
		switch {
		case strings.HasPrefix(trim, "#unroll "):
			f := strings.Fields(trim)
			end := unrollEnd(lines, i)
			if len(f) != 3 || !valueRef.MatchString("{{"+f[1]+"}}") || end < 0 {
				return fmt.Errorf("%s: want #unroll NAME COUNT ... #end", where)
			}
			emit("")
			if keep {
				count, err := strconv.Atoi(f[2])
				if v, ok := vals[f[2]]; ok {
					count, err = strconv.Atoi(v)
				}
				if err != nil || count < 0 {
					return fmt.Errorf("%s: #unroll count %q is not a count", where, f[2])
				}
				for n := range count {
					inner := maps.Clone(vals)
					inner[f[1]] = fmt.Sprintf("%du", n)
					if err := expandLines(b, src, file, lines[i+1:end], first+i+1, flags, inner, depth); err != nil {
						return err
					}
				}
			} else {
				for range lines[i+1 : end] {
					emit("")
				}
			}
			i = end
			emit("")
			continue
		case trim == "#end":
			return fmt.Errorf("%s: #end without #unroll", where)
		case strings.HasPrefix(trim, "#include "):
			if keep {
				name, err := strconv.Unquote(strings.TrimSpace(strings.TrimPrefix(trim, "#include")))
				if err != nil {
					return fmt.Errorf("%s: bad #include: %v", where, err)
				}
				if err := expand(b, src, name, flags, vals, depth+1); err != nil {
					return err
				}
			}
			continue
		case strings.HasPrefix(trim, "#if "):
			name := strings.TrimSpace(strings.TrimPrefix(trim, "#if"))
			want := true
			if strings.HasPrefix(name, "!") {
				name, want = name[1:], false
			}
			v, ok := flags[name]
			if !ok {
				return fmt.Errorf("%s: #if on unknown flag %q", where, name)
			}
			stack = append(stack, cond{keep: v == want, parentKeep: keep})
			keep = keep && v == want
			emit("")
			continue
		case trim == "#else":
			if len(stack) == 0 || stack[len(stack)-1].sawElse {
				return fmt.Errorf("%s: #else without #if", where)
			}
			c := &stack[len(stack)-1]
			c.sawElse = true
			keep = c.parentKeep && !c.keep
			emit("")
			continue
		case trim == "#endif":
			if len(stack) == 0 {
				return fmt.Errorf("%s: #endif without #if", where)
			}
			keep = stack[len(stack)-1].parentKeep
			stack = stack[:len(stack)-1]
			emit("")
			continue
		case strings.HasPrefix(trim, "#"):
			return fmt.Errorf("%s: unknown directive %q", where, trim)
		}
		if !keep {
			emit("")
			continue
		}
		var missing string
		line = valueRef.ReplaceAllStringFunc(line, func(m string) string {
			name := m[2 : len(m)-2]
			v, ok := vals[name]
			if !ok {
				missing = name
			}
			return v
		})
		if missing != "" {
			return fmt.Errorf("%s: {{%s}} has no value in this variant", where, missing)
		}
		emit(line)
	}
	if len(stack) != 0 {
		return fmt.Errorf("%s:%d: #if without #endif", file, first)
	}
	return nil
}

// unrollEnd is the index of the #end that closes the #unroll at lines[at],
// or -1.
func unrollEnd(lines []string, at int) int {
	depth := 0
	for i := at + 1; i < len(lines); i++ {
		switch trim := strings.TrimSpace(lines[i]); {
		case strings.HasPrefix(trim, "#unroll "):
			depth++
		case trim == "#end":
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}

var errLine = regexp.MustCompile(`:(\d+):(\d+)`)

// Compile expands variant k and makes its kernel on d. A compile error is
// returned with the source file and line of the WGSL line it names.
func Compile(d gpu.Device, k Key) (gpu.Kernel, error) {
	src, err := Expand(k)
	if err != nil {
		return 0, err
	}
	kern, err := d.NewKernel(gpu.KernelSource{Label: k.Label(), WGSL: src.WGSL, Entry: k.Entry})
	if err != nil {
		if m := errLine.FindStringSubmatch(err.Error()); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(src.Lines) {
				line := strings.Split(src.WGSL, "\n")[n-1]
				return 0, fmt.Errorf("%w\n(WGSL line %d is %s: %s)", err, n, src.Lines[n-1], strings.TrimSpace(line))
			}
		}
		return 0, err
	}
	return kern, nil
}

// bigDots writes out the inner products of tiled.wgsl's large DOT4 tile
// and its epilogue, one line each, with constant indices into its 8x8
// accumulators: WGSL has no unrolling, and a loop the driver leaves
// rolled indexes the accumulators at run time, which moves them from
// registers to memory (suspected where the tile ran at half the 64x64
// tile's speed on the H200).
func bigDots() (dots, out string) {
	var d, o strings.Builder
	for j := range 8 {
		fmt.Fprintf(&d, "let b%d = xb[o + %du + ly]; ", j, 16*j)
	}
	for i := range 8 {
		fmt.Fprintf(&d, "{ let a = wb[o + %du + lx]; ", 16*i)
		for j := range 8 {
			fmt.Fprintf(&d, "acc[%d][%d] += dot4I8Packed(a.x, b%d.x) + dot4I8Packed(a.y, b%d.y) + dot4I8Packed(a.z, b%d.z) + dot4I8Packed(a.w, b%d.w); ", i, j, j, j, j, j)
		}
		d.WriteString("} ")
		for j := range 8 {
			fmt.Fprintf(&o, "big_out(%du, %du, acc[%d][%d], row0, tok0, t0, lx, ly); ", i, j, i, j)
		}
	}
	return strings.TrimSpace(d.String()), strings.TrimSpace(o.String())
}

// smallDots writes out the inner products of the 64x64 DOT4 tile for one
// vector of the pass (at o in its buffers), and its epilogue, as bigDots
// does the large tile's.
func smallDots() (dots, out string) {
	var d, o strings.Builder
	for i := range 4 {
		fmt.Fprintf(&d, "let a%d = wp[o + %du + ty]; let b%d = xp[o + %du + tx]; ", i, 16*i, i, 16*i)
	}
	for j := range 4 {
		for i := range 4 {
			fmt.Fprintf(&d, "iacc[%d][%d] += dot4I8Packed(a%d.x, b%d.x) + dot4I8Packed(a%d.y, b%d.y) + dot4I8Packed(a%d.z, b%d.z) + dot4I8Packed(a%d.w, b%d.w); ",
				j, i, i, j, i, j, i, j, i, j)
			fmt.Fprintf(&o, "small_out(%du, %du, iacc[%d][%d], row0, tok0, t0, tx, ty); ", i, j, j, i)
		}
	}
	return strings.TrimSpace(d.String()), strings.TrimSpace(o.String())
}
