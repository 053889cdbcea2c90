package webgpu

import (
	"fmt"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// Sequence is one sequence's KV arena on the GPU, with the scratch buffers,
// bind groups and kernel parameters of its forward pass, all made once.
// A Forward call records one command list per step of at most C tokens
// and replays it as one command buffer.
type Sequence struct {
	m   *Model
	lay *kv.Layout
	C   int // tokens per step (stepTokens)
	L   int // logits rows: the most tokens a step computes logits of (logitRows)

	arena   gpu.Buffer
	chunk   gpu.Buffer    // the chunk KV of every producer: regions of C slots
	chunkAt []chunkRegion // by arena region
	// directKV: a one-token step's attention writes the token's K/V into
	// the arena itself (attend_group with qkv_prep folded in), so commit
	// has nothing to copy for it.
	directKV bool

	// Run state, shapes per step of C tokens: x residual [2][C][Hidden]
	// (it alternates between the halves);
	// h normed [C][Hidden]; qkv [C][QDim+2*KVDim] (Q|K|V, or Q alone on
	// layers that read another's KV); q [C][QDim]; att [C][QDim];
	// out [C][Hidden]; gu [C][2*FFNHidden] (gate then up); gate
	// [C][FFNHidden]; logits [L][Vocab]; parts holds decode attention's
	// partial softmax states. The *q buffers hold int8 forms: values, then
	// a scale per token at qScale.
	stepBuf, params, ids, rope             gpu.Buffer
	x, h, hq, qkv, q, att, attq, out, gate gpu.Buffer
	gu, gateq, logits, staging, parts      gpu.Buffer
	pickParts                              gpu.Buffer         // argmax_part's (value, index) per block of logits
	gmax, gmaxZero                         gpu.Buffer         // int8 gated epilogue: max |h| words [layer][gemvMaxTokens], and zeros to clear them (clearMaxima)
	qScale                                 map[gpu.Buffer]int // word offset of the scales in an int8 buffer
	buffers                                []gpu.Buffer
	groups                                 []gpu.BindGroup

	// part holds the split prefill product's int32 sums (Options.Split),
	// partBytes long (0 without it).
	part      gpu.Buffer
	partBytes int64

	body, head []site // dispatches of every step; of steps that compute logits
	pick       []site // the greedy pick of the last token, into ids[0]
	paramData  []byte
	plans      []pending // while building
	inHead     bool      // while building: sites being added compute logits
	enc        gpu.Encoder
	batch      batchBufs // decode batches' buffers (batch.go)
	ropeTab    []float32
	end        int // one past the last position written (Forward, Greedy, Restore): what Snapshot can still read

	snapBack gpu.Buffer // Snapshots' staging buffer, snapSize bytes (0: none yet; see snapshotBuffer)
	snapSize int64
	// snapPending are the snapshots StartSnapshots started whose
	// FinishSnapshots has not run, in order.
	snapPending []*pendingSnap
}

// chunkRegion is where one producer's chunk KV lives in Sequence.chunk:
// byte offsets of its K, V, K scales and V scales, and its end.
type chunkRegion struct{ k, v, ks, vs, end int64 }

// site is one dispatch of a step: its kernel and bind group are fixed; the
// workgroup grid follows the step.
type site struct {
	kernel gpu.Kernel
	group  gpu.BindGroup
	grid   gridFunc
	label  string // the kernel variant, for profiles
}

// gridFunc gives a site's workgroup grid for a step of n tokens at
// positions start.., whose logits are computed from token first on. A zero
// x skips the site: kernels with variants for decode and prefill plan both,
// and each step runs the one that fits it.
type gridFunc func(n, first, start int) (x, y, z int)

// NewSequence allocates a KV arena for context positions and prepares the
// forward pass over it.
func (m *Model) NewSequence(context int) (*Sequence, error) {
	lay, err := kv.NewLayout(m.cfg, context)
	if err != nil {
		return nil, err
	}
	s := &Sequence{m: m, lay: lay, qScale: map[gpu.Buffer]int{}}
	s.C = s.stepTokens()
	s.L = s.logitRows()
	if err := s.build(); err != nil {
		s.Close()
		return nil, fmt.Errorf("webgpu sequence of %d positions: %w", context, err)
	}
	return s, nil
}

// stepTokens is the most tokens one step runs: Options.Chunk, no more than
// the context, and no more than every step buffer (activations, the chunk
// KV) can hold within one storage binding, so that the WebGPU default of
// 128 MiB (phones, browsers that grant no more) still takes the model.
// The logits, a row of the vocabulary per token, are sized apart
// (logitRows).
func (s *Sequence) stepTokens() int {
	c := s.m.cfg
	limit := s.m.dev.Info().Limits.MaxStorageBufferBindingSize
	perToken := int64(max(2*c.Hidden, 2*c.FFNHidden, c.QDim()+2*c.KVDim(), 2*c.HeadDim)) * 4
	var slot int64 // chunk KV bytes per token: every producer's K and V rows, and scales
	for range s.lay.Regions {
		slot += 2 * int64(c.KVHeads) * s.lay.RowBytes
		if c.DType == model.Int8 {
			slot += 2 * int64(c.KVHeads) * 4
		}
	}
	fit := limit / perToken
	if slot > 0 {
		fit = min(fit, (limit-int64(4*len(s.lay.Regions))*kv.Align)/slot) // each array is aligned
	}
	return int(max(1, min(int64(s.m.opt.Chunk), int64(s.lay.Context), fit)))
}

// logitRows is how many tokens' logits a step can compute: at most
// maxLogitRows, and what fits a binding. Sessions read only the last
// token's (a prompt's reading, a decode step); a Forward that asks for
// every token's (tests, evaluation) runs in steps of this many tokens.
// Sized by C instead, the logits would bound every step: a vocabulary of
// 262,144 fills a 128 MiB binding with 128 rows, and the buffer and its
// readback twin would take 256 MiB of a phone's memory at C = 128.
func (s *Sequence) logitRows() int {
	lim := s.m.dev.Info().Limits
	row := 4 * int64(s.m.cfg.Vocab)
	return int(max(1, min(int64(s.C), maxLogitRows, lim.MaxStorageBufferBindingSize/row, lim.MaxBufferSize/row)))
}

// maxLogitRows bounds logitRows: enough that the steps of a Forward of
// every token's logits run the tiled product (more than gemvMaxTokens
// tokens) but for a short last one.
const maxLogitRows = 16

// PrefillStep is the tokens of one step (engine.PrefillStepper): a
// session reading a prompt with its progress reported forwards this many
// at a time.
func (s *Sequence) PrefillStep() int { return s.C }

// Context is the most positions the sequence holds.
func (s *Sequence) Context() int { return s.lay.Context }

// Close frees the sequence's buffers and bind groups.
func (s *Sequence) Close() error {
	s.freeBatch()
	// A started snapshot still out is given up (sessions finish theirs at
	// the end of each turn): its done sees its map fail, or never runs.
	for _, p := range s.snapPending {
		if p.temp {
			s.m.dev.FreeBuffer(p.back)
		}
	}
	s.snapPending = nil
	s.freeSnapshotBuffer()
	for _, g := range s.groups {
		s.m.dev.FreeBindGroup(g)
	}
	for _, b := range s.buffers {
		s.m.dev.FreeBuffer(b)
	}
	s.groups, s.buffers = nil, nil
	return nil
}

func (s *Sequence) buffer(size int64, usage gpu.Usage, label string) (gpu.Buffer, error) {
	b, err := s.m.newBuffer(size, usage, label)
	if err == nil {
		s.buffers = append(s.buffers, b)
	}
	return b, err
}

func align(n int64) int64 { return (n + kv.Align - 1) / kv.Align * kv.Align }

// grid2 spreads count workgroups over x and y (each at most 65535).
func grid2(count int) (int, int) {
	x := min(count, 65535)
	return x, (count + x - 1) / x
}

func (s *Sequence) build() error {
	c, C := s.m.cfg, s.C
	int8Mode := c.DType == model.Int8
	var err error
	mk := func(dst *gpu.Buffer, size int64, usage gpu.Usage, label string) {
		if err == nil {
			*dst, err = s.buffer(size, usage, label)
		}
	}
	// A float32 activation buffer and, in int8 mode, its quantised twin.
	act := func(dst, dstQ *gpu.Buffer, cols int, label string) {
		mk(dst, int64(C*cols)*4, gpu.Storage, label)
		if int8Mode && dstQ != nil {
			mk(dstQ, int64(C*cols)+int64(C)*4, gpu.Storage, label+"_q")
			s.qScale[*dstQ] = C * cols / 4
		}
	}
	mk(&s.arena, s.lay.Bytes, gpu.Storage, "kv_arena")
	mk(&s.stepBuf, 256, gpu.Uniform, "step")
	mk(&s.ids, int64(C)*4, gpu.Storage, "ids")
	mk(&s.rope, int64(2*C*c.HeadDim)*4, gpu.Storage, "rope")
	act(&s.x, nil, 2*c.Hidden, "x") // two halves: see plan
	act(&s.h, &s.hq, c.Hidden, "h")
	act(&s.q, nil, c.QDim(), "q")
	act(&s.att, &s.attq, c.QDim(), "att")
	act(&s.qkv, nil, c.QDim()+2*c.KVDim(), "qkv")
	act(&s.out, nil, c.Hidden, "out")
	act(&s.gate, &s.gateq, c.FFNHidden, "gate")
	act(&s.gu, nil, 2*c.FFNHidden, "gate_up")
	mk(&s.parts, int64(c.Heads*s.maxSplits()*(c.HeadDim+2))*4, gpu.Storage, "attn_parts")
	mk(&s.logits, int64(s.L)*int64(c.Vocab)*4, gpu.Storage, "logits")
	if s.m.opt.Split > 0 && int8Mode {
		// The split product's int32 sums: a step of the widest layer
		// product, within one binding (a wider part does not split).
		rows := int64(max(c.QDim()+2*c.KVDim(), c.Hidden, 2*c.FFNHidden))
		s.partBytes = min(int64(C)*rows*4, s.m.dev.Info().Limits.MaxStorageBufferBindingSize&^255)
		mk(&s.part, s.partBytes, gpu.Storage, "tiled_split_sums")
	}
	mk(&s.pickParts, int64((c.Vocab+argmaxBlock-1)/argmaxBlock)*8, gpu.Storage, "argmax_parts")
	if int8Mode && s.m.opt.Fuse.Epilogue {
		mk(&s.gmax, s.maximaBytes(), gpu.Storage, "gated_max")
		mk(&s.gmaxZero, s.maximaBytes(), gpu.Storage, "gated_max_zero")
	}
	mk(&s.staging, int64(s.L)*int64(c.Vocab)*4, gpu.MapRead, "logits_readback")
	// Chunk KV: every producer's region mirrors the arena's, with C slots.
	var off int64
	rows := int64(C * c.KVHeads)
	for range s.lay.Regions {
		var r chunkRegion
		r.k = off
		r.v = align(r.k + rows*s.lay.RowBytes)
		r.end = r.v + rows*s.lay.RowBytes
		if int8Mode {
			r.ks = align(r.end)
			r.vs = align(r.ks + rows*4)
			r.end = r.vs + rows*4
		}
		off = align(r.end)
		s.chunkAt = append(s.chunkAt, r)
	}
	mk(&s.chunk, max(off, 4), gpu.Storage, "chunk_kv")
	if err != nil {
		return err
	}
	s.ropeTab = make([]float32, C*c.HeadDim)
	if err := s.plan(); err != nil {
		return err
	}
	mk(&s.params, int64(len(s.paramData)), gpu.Uniform, "params")
	if err != nil {
		return err
	}
	// Bind groups name the params buffer, so they are made after it.
	return s.bindAll()
}

// maximaBytes is the size of the gated epilogue's max |h| words: one per
// (layer, token of a decode step).
func (s *Sequence) maximaBytes() int64 { return int64(len(s.m.cfg.Layers)*gemvMaxTokens) * 4 }

// clearMaxima records, ahead of a step's dispatches, the copy that zeroes
// the gated epilogue's max |h| words (the gate|up products take their max
// into them with atomicMax). One copy per step, not per layer: each layer
// has words of its own, which its gate|up writes and its down reads, and
// nothing else. Steps of a decode batch run in one command list, so the
// clear is recorded among each step's own copies (a write would land
// before the whole list); it costs no extra compute pass there, nor ahead
// of the first dispatch of a lone step.
func (s *Sequence) clearMaxima(e *gpu.Encoder) {
	if s.gmax != 0 {
		e.Copy(s.gmaxZero, 0, s.gmax, 0, s.maximaBytes())
	}
}

// Planned dispatches are collected first (their params need a buffer of
// known size), then bound.
type pending struct {
	key      shaders.Key
	slot     int64
	bindings []gpu.Binding
	grid     gridFunc
	logits   bool
	pick     bool
}

func (s *Sequence) bindAll() error {
	if err := s.m.dev.Write(s.params, 0, s.paramData); err != nil {
		return err
	}
	for _, p := range s.plans {
		kern, err := s.m.kernel(p.key)
		if err != nil {
			return err
		}
		binds := append([]gpu.Binding{{Slot: 0, Buffer: s.stepBuf, Size: 16}, {Slot: 1, Buffer: s.params, Offset: p.slot, Size: 256}}, p.bindings...)
		for i := range binds[2:] {
			binds[2+i].Slot = uint32(2 + i)
		}
		g, err := s.m.dev.NewBindGroup(kern, binds)
		if err != nil {
			return fmt.Errorf("bind %s: %w", p.key.Label(), err)
		}
		s.groups = append(s.groups, g)
		// The label of the variant that runs: the tier may replace the
		// planned one (packed dot products, subgroups).
		st := site{kernel: kern, group: g, grid: p.grid, label: s.m.tier.Apply(p.key).Label()}
		if p.pick {
			s.pick = append(s.pick, st)
		} else if p.logits {
			s.head = append(s.head, st)
		} else {
			s.body = append(s.body, st)
		}
	}
	s.plans = nil
	return nil
}

// add plans one dispatch of the kernel family/entry with its params and
// its buffers at @binding(2)...
func (s *Sequence) add(family, entry string, params any, grid gridFunc, bufs ...gpu.Binding) {
	s.addKey(s.m.key(family, entry), params, grid, bufs...)
}

// addKey is add for a variant other than the model's default one.
func (s *Sequence) addKey(key shaders.Key, params any, grid gridFunc, bufs ...gpu.Binding) {
	slot := int64(len(s.paramData))
	b := shaders.Bytes(params)
	s.paramData = append(s.paramData, b...)
	s.paramData = append(s.paramData, make([]byte, 256-len(b))...)
	s.plans = append(s.plans, pending{key: key, slot: slot, bindings: bufs, grid: grid, logits: s.inHead})
}

func whole(b gpu.Buffer) gpu.Binding { return gpu.Binding{Buffer: b} }

func at(b gpu.Buffer, off, size int64) gpu.Binding {
	return gpu.Binding{Buffer: b, Offset: off, Size: size}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Dispatches counts the kernel runs of a step of n tokens at position
// start that computes the last token's logits and picks its successor:
// what a decode step costs in dispatches.
func (s *Sequence) Dispatches(n, start int) int {
	count := 0
	for _, st := range s.decodeSites() {
		if x, _, _ := st.grid(n, n-1, start); x > 0 {
			count++
		}
	}
	return count
}
