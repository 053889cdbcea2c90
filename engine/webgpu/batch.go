package webgpu

import (
	"encoding/binary"
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/shaders"
)

// A batch of decode steps (Greedy, Sample, SubmitBatch) is one command
// list, submitted with one Run and read back with one Map: in a browser
// every Run is a crossing into JS, and a batch of k steps costs run + map
// + the wait's status, 3 crossings for k tokens. A session submits the next
// batch before it waits for this one's picks (engine.BatchPipeliner), so
// the GPU runs it through the host's round trip and the encoding of the
// list after it.
//
// A list's writes all land before its first command runs (the executors
// apply them with queue.writeBuffer ahead of the command buffer; see
// gpu.Encoder), so steps cannot each write the Step block and the RoPE
// rows they read. Instead every step's values are written once into a
// slot of their own in batchBufs.slots, and each step begins with copies
// from its slot into place: copies and dispatches run in list order.

// batchBufs are the buffers of decode batches, kept across batches so that
// a batch makes and frees nothing: each grows to the largest batch (and,
// for sampling, the longest history) seen so far.
type batchBufs struct {
	steps int           // steps the slots, ids and readbacks hold
	slots gpu.Buffer    // per step: the Step block, then the RoPE rows of each kind (slotBytes)
	out   gpu.Buffer    // the picks, a word per step
	back  [2]gpu.Buffer // their MapRead twins, one for each batch in flight
	next  int           // the twin the next batch reads back into

	// flight are the batches submitted and not collected, oldest first
	// (engine.BatchPipeliner): at most two. Only the oldest has its
	// readback asked for (see submitList). chainAt is the position after
	// the last submitted batch and chainP its draw, which a batch that
	// continues it must start at and share; histEnd is the history length
	// its sampling state then has on the device.
	flight  []*inflight
	chainAt int
	chainP  sample.Params
	histEnd int
	// retired are buffers and bind groups replaced while a batch in flight
	// still used them: freed once none is.
	retired       []gpu.Buffer
	retiredGroups []gpu.BindGroup

	// Sampling (Sample), made by its first batch: its parameters, its
	// state (step counter, history length, then histCap ids), scratch for
	// the logits and the kernels' sel and mass, bound with the sequence's
	// buffers in a group per kernel.
	sparams, state, scratch, sel, mass gpu.Buffer
	histCap                            int
	groups                             [samplingKernels]gpu.BindGroup

	data []byte // the slots' bytes, reused
}

// stepBlockBytes is the Step block's size in a slot (shaders.Step).
const stepBlockBytes = 16

// slotBytes is the size of one step's slot: the Step block and one head's
// RoPE row (cos|sin) per kind of layer.
func (s *Sequence) slotBytes() int64 {
	return stepBlockBytes + int64(len(s.m.rope)*s.m.cfg.HeadDim)*4
}

// inflight is a batch submitted and not collected: its readback, and its
// picks once they are back.
type inflight struct {
	steps int
	back  gpu.Buffer
	done  bool // its readback has come back (or failed)
	ids   []int32
	err   error
}

// retire frees buf, or keeps it for freeRetired while batches are in
// flight: their command lists may still use it.
func (s *Sequence) retire(buf gpu.Buffer) {
	switch b := &s.batch; {
	case buf == 0:
	case len(b.flight) > 0:
		b.retired = append(b.retired, buf)
	default:
		s.m.dev.FreeBuffer(buf)
	}
}

// freeRetired frees what retire kept.
func (s *Sequence) freeRetired() {
	b := &s.batch
	for _, buf := range b.retired {
		s.m.dev.FreeBuffer(buf)
	}
	for _, g := range b.retiredGroups {
		s.m.dev.FreeBindGroup(g)
	}
	b.retired, b.retiredGroups = nil, nil
}

// growBatch makes the batch buffers hold steps steps.
func (s *Sequence) growBatch(steps int) error {
	b, dev := &s.batch, s.m.dev
	if steps <= b.steps {
		return nil
	}
	for _, buf := range []gpu.Buffer{b.slots, b.out, b.back[0], b.back[1]} {
		s.retire(buf)
	}
	b.slots, b.out, b.back, b.steps = 0, 0, [2]gpu.Buffer{}, 0
	var err error
	if b.slots, err = s.m.newBuffer(int64(steps)*s.slotBytes(), gpu.Storage, "batch_slots"); err != nil {
		return err
	}
	if b.out, err = s.m.newBuffer(int64(steps)*4, gpu.Storage, "batch_ids"); err != nil {
		return err
	}
	for i := range b.back {
		if b.back[i], err = dev.NewBuffer(readbackBytes(steps), gpu.MapRead, "batch_readback"); err != nil {
			return err
		}
	}
	b.steps = steps
	return nil
}

// readbackBytes is the mapped size of steps ids: maps take multiples of 8.
func readbackBytes(steps int) int64 { return (int64(steps)*4 + 7) &^ 7 }

// growSampling makes the sampling buffers and their bind group, with room
// for a history of histCap ids.
//
// keep > 0 copies the old state's step, length and first keep ids into a
// new buffer on the GPU, for a batch that continues the one before it.
func (s *Sequence) growSampling(kern [samplingKernels]gpu.Kernel, histCap, keep int) error {
	b, dev := &s.batch, s.m.dev
	var err error
	if b.sparams == 0 {
		if b.sparams, err = s.m.newBuffer(int64(binary.Size(samplingParams{})), gpu.Uniform, "sample_params"); err != nil {
			return err
		}
	}
	if b.scratch == 0 {
		if b.scratch, err = s.m.newBuffer(int64(s.m.cfg.Vocab)*4, gpu.Storage, "sample_logits"); err != nil {
			return err
		}
	}
	if b.sel == 0 {
		if b.sel, err = s.m.newBuffer(selBytes(s.m.cfg.Vocab), gpu.Storage, "sample_sel"); err != nil {
			return err
		}
	}
	if b.mass == 0 {
		if b.mass, err = s.m.newBuffer(massBytes, gpu.Storage, "sample_mass"); err != nil {
			return err
		}
	}
	if histCap > b.histCap {
		// Doubling: a conversation's history grows by a batch at a time.
		// (Taken before the old buffer goes: computed after it, from a
		// histCap of 0, every batch past 256 ids made the buffer and its
		// bind groups afresh, ~14 crossings into JS a batch in a browser.)
		histCap = max(histCap, 2*b.histCap, 256)
		s.freeSamplingGroups()
		old := b.state
		b.state, b.histCap = 0, 0
		if b.state, err = s.m.newBuffer(int64(4*(2+histCap)), gpu.Storage, "sample_state"); err != nil {
			s.retire(old)
			return err
		}
		b.histCap = histCap
		if keep > 0 && old != 0 {
			// A batch that continues one in flight draws on from the state
			// that batch leaves: the step, the length and keep ids, copied
			// in a list of its own (a list's writes come before its
			// commands, and the batch's list writes its parameters).
			var e gpu.Encoder
			e.Copy(old, 0, b.state, 0, int64(4*(2+keep)))
			if err := dev.Run(e.Bytes()); err != nil {
				s.retire(old)
				return fmt.Errorf("grow the sampling state: %w", err)
			}
		}
		s.retire(old)
	}
	if b.groups[0] == 0 {
		b.groups, err = bindSampling(dev, kern, samplingBufs{step: s.stepBuf, params: b.sparams, logits: s.logits,
			ids: s.ids, state: b.state, x: b.scratch, sel: b.sel, mass: b.mass})
		if err != nil {
			return err
		}
	}
	return nil
}

// freeSamplingGroups frees the sampling kernels' bind groups (once no
// batch in flight uses them).
func (s *Sequence) freeSamplingGroups() {
	b := &s.batch
	for i, g := range b.groups {
		switch {
		case g == 0:
		case len(b.flight) > 0:
			b.retiredGroups = append(b.retiredGroups, g)
		default:
			s.m.dev.FreeBindGroup(g)
		}
		b.groups[i] = 0
	}
}

// freeBatch frees the batch buffers. Batches in flight are waited for.
func (s *Sequence) freeBatch() {
	b, dev := &s.batch, s.m.dev
	for len(b.flight) > 0 {
		s.CollectBatch() // their picks and errors go with the sequence
	}
	s.freeSamplingGroups()
	for _, buf := range []gpu.Buffer{b.slots, b.out, b.back[0], b.back[1], b.sparams, b.state, b.scratch, b.sel, b.mass} {
		if buf != 0 {
			dev.FreeBuffer(buf)
		}
	}
	*b = batchBufs{}
}

// SubmitBatch submits a batch of decode steps (engine.BatchPipeliner): as
// Greedy (b.Params greedy) or Sample would run it, one command list,
// whose picks CollectBatch returns. A batch that continues the one before
// it embeds that batch's last pick, still in ids[0], and draws on from the
// sampling state that batch left; it writes neither.
func (s *Sequence) SubmitBatch(b engine.Batch) error {
	c, bb := s.m.cfg, &s.batch
	if b.Steps <= 0 {
		return fmt.Errorf("submit batch: %d steps", b.Steps)
	}
	if err := b.Params.Validate(); err != nil {
		return fmt.Errorf("submit batch: %w", err)
	}
	if b.Start < 0 || b.Start+b.Steps > s.lay.Context {
		return fmt.Errorf("submit batch: positions %d..%d outside the KV arena's context of %d", b.Start, b.Start+b.Steps-1, s.lay.Context)
	}
	if len(bb.flight) == 2 {
		return fmt.Errorf("submit batch: two batches are in flight already")
	}
	if b.Continues {
		if len(bb.flight) == 0 || b.Start != bb.chainAt || b.Params != bb.chainP {
			return fmt.Errorf("submit batch at %d: it continues no batch in flight (the last ends at %d)", b.Start, bb.chainAt)
		}
	} else if b.Token < 0 || int(b.Token) >= c.Vocab {
		return fmt.Errorf("submit batch: token %d outside the vocabulary of %d", b.Token, c.Vocab)
	}
	s.enc.Reset()
	if err := s.growBatch(b.Steps); err != nil {
		return fmt.Errorf("submit batch: %w", err)
	}
	var pick []site
	var writes func(*gpu.Encoder)
	var err error
	switch {
	case b.Params.Argmax():
		pick = s.pick
	case b.Continues:
		pick, writes, err = s.continueSampling(b.Params, b.Steps)
	default:
		pick, writes, err = s.samplingSites(b.Params, b.Step, b.History, b.Steps)
	}
	if err != nil {
		return fmt.Errorf("submit batch: %w", err)
	}
	token := b.Token
	if b.Continues {
		token = -1
	}
	s.recordBatch(token, b.Start, b.Steps, pick, writes)
	if err := s.submitList(b.Steps); err != nil {
		return fmt.Errorf("submit batch: positions %d..%d: %w", b.Start, b.Start+b.Steps-1, err)
	}
	bb.chainAt, bb.chainP = b.Start+b.Steps, b.Params
	return nil
}

// recordBatch records into s.enc (after what it holds: a state copy of
// growSampling) steps decode steps of token at position start and of
// each pick after it; token -1 leaves ids[0] as the last batch left it.
// pick are the sites that take a step's logits to its pick in ids[0];
// writes records the caller's own writes (a list's writes all land before
// its commands). The batch buffers must hold steps.
func (s *Sequence) recordBatch(token int32, start, steps int, pick []site, writes func(e *gpu.Encoder)) {
	m, hd := s.m, s.m.cfg.HeadDim
	b, e := &s.batch, &s.enc
	slot := s.slotBytes()
	b.data = b.data[:0]
	for i := range steps {
		pos := start + i
		b.data = append(b.data, shaders.Bytes(shaders.Step{Start: uint32(pos), N: 1, First: 0})...)
		for kind := range m.rope {
			m.rope[kind].CosSin(s.ropeTab[:hd], pos)
			b.data = append(b.data, f32bytes(s.ropeTab[:hd])...)
		}
	}
	if token >= 0 {
		e.Write(s.ids, 0, binary.LittleEndian.AppendUint32(nil, uint32(token)))
	}
	e.Write(b.slots, 0, b.data)
	if writes != nil {
		writes(e)
	}
	sites := append(s.body[:len(s.body):len(s.body)], s.head...)
	sites = append(sites, pick...)
	for i := range steps {
		pos := start + i
		at := int64(i) * slot
		e.Copy(b.slots, at, s.stepBuf, 0, stepBlockBytes)
		for kind := range m.rope {
			e.Copy(b.slots, at+stepBlockBytes+int64(kind*hd)*4, s.rope, int64(kind*s.C*hd)*4, int64(hd)*4)
		}
		s.clearMaxima(e)
		for _, st := range sites {
			if x, y, z := st.grid(1, 0, pos); x > 0 {
				e.Dispatch(st.kernel, st.group, x, y, z)
			}
		}
		s.commit(pos, 1)
		e.Copy(s.ids, 0, b.out, int64(i)*4, 4)
	}
}

// submitList ends the list in s.enc with the copy of the first steps
// picks (batch ids) into a readback buffer of its own, submits it, and
// puts it in flight. Only the oldest batch in flight has its readback
// asked for: a map resolves once all work submitted before it is done,
// and a host's wait delivers every readback asked for, so asking for the
// next batch's before this one's picks are back would wait for both.
func (s *Sequence) submitList(steps int) error {
	m, b, e := s.m, &s.batch, &s.enc
	f := &inflight{steps: steps, back: b.back[b.next]}
	e.Copy(b.out, 0, f.back, 0, readbackBytes(steps))
	if err := e.Err(); err != nil {
		return err
	}
	if err := m.dev.Run(e.Bytes()); err != nil {
		return err
	}
	b.next ^= 1
	b.flight = append(b.flight, f)
	if len(b.flight) == 1 {
		return s.mapPicks(f)
	}
	return nil
}

// mapPicks asks for batch f's readback: the oldest batch in flight always
// has it asked for (submitList, CollectBatch).
func (s *Sequence) mapPicks(f *inflight) error {
	err := s.m.dev.Map(f.back, 0, readbackBytes(f.steps), func(data []byte, err error) {
		f.done, f.err = true, err
		if err == nil {
			f.ids = make([]int32, f.steps)
			for i := range f.ids {
				f.ids[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
			}
		}
	})
	if err != nil {
		f.done, f.err = true, err
	}
	return err
}

// CollectBatch waits for the oldest batch in flight and returns its picks
// (engine.BatchPipeliner), then asks for the next one's readback.
func (s *Sequence) CollectBatch() ([]int32, error) {
	b := &s.batch
	if len(b.flight) == 0 {
		return nil, fmt.Errorf("collect batch: no batch in flight")
	}
	f := b.flight[0]
	var err error
	if !f.done {
		err = s.m.dev.Poll(true)
	}
	if err == nil && !f.done {
		err = fmt.Errorf("the readback did not complete")
	}
	b.flight = b.flight[1:]
	if len(b.flight) > 0 {
		if merr := s.mapPicks(b.flight[0]); err == nil {
			err = merr
		}
	} else {
		s.freeRetired()
	}
	if err == nil {
		err = f.err
	}
	if err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	return f.ids, nil
}
