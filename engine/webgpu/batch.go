package webgpu

import (
	"encoding/binary"
	"fmt"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/shaders"
)

// A batch of decode steps (Greedy, Sample) is one command list, submitted
// with one Run and read back with one Map: in a browser every Run is a
// crossing into JS, and a batch of k steps costs run + map + the wait's
// status, 3 crossings for k tokens.
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
	steps int        // steps the slots, ids and readback hold
	slots gpu.Buffer // per step: the Step block, then the RoPE rows of each kind (slotBytes)
	out   gpu.Buffer // the picks, a word per step
	back  gpu.Buffer // their MapRead twin

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

// growBatch makes the batch buffers hold steps steps.
func (s *Sequence) growBatch(steps int) error {
	b, dev := &s.batch, s.m.dev
	if steps <= b.steps {
		return nil
	}
	for _, buf := range []gpu.Buffer{b.slots, b.out, b.back} {
		if buf != 0 {
			dev.FreeBuffer(buf)
		}
	}
	b.slots, b.out, b.back, b.steps = 0, 0, 0, 0
	var err error
	if b.slots, err = s.m.newBuffer(int64(steps)*s.slotBytes(), gpu.Storage, "batch_slots"); err != nil {
		return err
	}
	if b.out, err = s.m.newBuffer(int64(steps)*4, gpu.Storage, "batch_ids"); err != nil {
		return err
	}
	if b.back, err = dev.NewBuffer(readbackBytes(steps), gpu.MapRead, "batch_readback"); err != nil {
		return err
	}
	b.steps = steps
	return nil
}

// readbackBytes is the mapped size of steps ids: maps take multiples of 8.
func readbackBytes(steps int) int64 { return (int64(steps)*4 + 7) &^ 7 }

// growSampling makes the sampling buffers and their bind group, with room
// for a history of histCap ids.
func (s *Sequence) growSampling(kern [samplingKernels]gpu.Kernel, histCap int) error {
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
		if b.state != 0 {
			dev.FreeBuffer(b.state)
			b.state, b.histCap = 0, 0
		}
		if b.state, err = s.m.newBuffer(int64(4*(2+histCap)), gpu.Storage, "sample_state"); err != nil {
			return err
		}
		b.histCap = histCap
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

// freeSamplingGroups frees the sampling kernels' bind groups.
func (s *Sequence) freeSamplingGroups() {
	b := &s.batch
	for i, g := range b.groups {
		if g != 0 {
			s.m.dev.FreeBindGroup(g)
		}
		b.groups[i] = 0
	}
}

// freeBatch frees the batch buffers.
func (s *Sequence) freeBatch() {
	b, dev := &s.batch, s.m.dev
	s.freeSamplingGroups()
	for _, buf := range []gpu.Buffer{b.slots, b.out, b.back, b.sparams, b.state, b.scratch, b.sel, b.mass} {
		if buf != 0 {
			dev.FreeBuffer(buf)
		}
	}
	*b = batchBufs{}
}

// runBatch records and runs steps decode steps of token at position start
// and of each pick after it, as one command list, and reads the picks back
// once. pick are the sites that take a step's logits to its pick in ids[0];
// writes records the caller's own writes (they come first in a list).
// The batch buffers must hold steps.
func (s *Sequence) runBatch(token int32, start, steps int, pick []site, writes func(e *gpu.Encoder)) ([]int32, error) {
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
	e.Reset()
	e.Write(s.ids, 0, binary.LittleEndian.AppendUint32(nil, uint32(token)))
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
	return s.readPicks(steps)
}

// readPicks ends the list in s.enc with the copy of the first steps picks
// (batch ids) into their readback buffer, runs it, and reads them back.
func (s *Sequence) readPicks(steps int) ([]int32, error) {
	m, b, e := s.m, &s.batch, &s.enc
	size := readbackBytes(steps)
	e.Copy(b.out, 0, b.back, 0, size)
	if err := e.Err(); err != nil {
		return nil, err
	}
	if err := m.dev.Run(e.Bytes()); err != nil {
		return nil, err
	}
	ids := make([]int32, steps)
	var mapErr error
	done := false
	if err := m.dev.Map(b.back, 0, size, func(data []byte, err error) {
		done, mapErr = true, err
		for i := range ids {
			if err == nil {
				ids[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
			}
		}
	}); err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	if err := m.dev.Poll(true); err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	if !done {
		return nil, fmt.Errorf("read ids: the readback did not complete")
	}
	return ids, mapErr
}
