package webgpu

import (
	"fmt"
	"unsafe"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/shaders"
)

// Forward runs tokens at positions start.. like engine/cpu's Forward: it
// reads the KV of earlier positions from the arena, writes the KV of these
// tokens into it, and fills logits with the last token's logits (len Vocab)
// or every token's (len(tokens)*Vocab). Each step of at most C tokens (L
// when every token's logits are asked for) is one command buffer; logits
// are read back once, at the end of the step that produces them.
func (s *Sequence) Forward(tokens []int32, start int, logits []float32) error {
	c := s.m.cfg
	n := len(tokens)
	if err := s.checkTokens(tokens, start); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	all := len(logits) == n*c.Vocab
	if !all && len(logits) != c.Vocab {
		return fmt.Errorf("forward: logits buffer has %d values, want %d or %d", len(logits), c.Vocab, n*c.Vocab)
	}
	step := s.C
	if all {
		step = s.L
	}
	for lo := 0; lo < n; lo += step {
		hi := min(lo+step, n)
		k := hi - lo
		first := k // no logits from this chunk
		var dst []float32
		switch {
		case all:
			first, dst = 0, logits[lo*c.Vocab:hi*c.Vocab]
		case hi == n:
			first, dst = k-1, logits
		}
		if err := s.step(tokens[lo:hi], start+lo, first, dst); err != nil {
			return fmt.Errorf("forward: positions %d..%d: %w", start+lo, start+hi-1, err)
		}
	}
	return nil
}

// Fill runs tokens at positions start.. like Forward, without logits
// (engine.KVFiller): each step is submitted and not waited for, so a long
// prompt's steps before its last run back to back on the GPU.
func (s *Sequence) Fill(tokens []int32, start int) error {
	n := len(tokens)
	if err := s.checkTokens(tokens, start); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	for lo := 0; lo < n; lo += s.C {
		hi := min(lo+s.C, n)
		if err := s.step(tokens[lo:hi], start+lo, hi-lo, nil); err != nil {
			return fmt.Errorf("fill: positions %d..%d: %w", start+lo, start+hi-1, err)
		}
	}
	return nil
}

// step records and runs one step of n <= C tokens, computing the logits of
// tokens first.. (at most L of them).
func (s *Sequence) step(tokens []int32, start, first int, logits []float32) error {
	m, c := s.m, s.m.cfg
	n := len(tokens)
	e := &s.enc
	s.recordStep(tokens, start, first, nil, nil)
	if first < n {
		e.Copy(s.logits, 0, s.staging, 0, int64((n-first)*c.Vocab)*4)
	}
	if err := e.Err(); err != nil {
		return err
	}
	if err := m.dev.Run(e.Bytes()); err != nil {
		return err
	}
	if first >= n {
		return nil
	}
	var mapErr error
	done := false
	if err := m.dev.Map(s.staging, 0, int64(len(logits))*4, func(data []byte, err error) {
		done, mapErr = true, err
		if err == nil {
			// One copy: the buffer's little-endian float32s are the host's
			// (f32bytes writes them the same way). A loop over 262,144
			// values, four bytes each, cost a millisecond or more of a
			// first token in the wasm module.
			copy(f32bytes(logits), data)
		}
	}); err != nil {
		return err
	}
	if err := m.dev.Poll(true); err != nil {
		return err
	}
	if !done {
		return fmt.Errorf("logits readback did not complete")
	}
	return mapErr
}

// recordStep records into s.enc one step of n <= C tokens, computing the
// logits of tokens first.. (none when first is n), then the sites of pick
// (after writes, the caller's own writes: a list's writes come first), and
// the KV commit.
func (s *Sequence) recordStep(tokens []int32, start, first int, pick []site, writes func(e *gpu.Encoder)) {
	m, c := s.m, s.m.cfg
	n, hd := len(tokens), c.HeadDim
	e := &s.enc
	e.Reset()
	// Writes: the Step block, token ids and the RoPE table of both kinds.
	e.Write(s.stepBuf, 0, shaders.Bytes(shaders.Step{Start: uint32(start), N: uint32(n), First: uint32(first)}))
	e.Write(s.ids, 0, unsafe.Slice((*byte)(unsafe.Pointer(&tokens[0])), 4*n))
	if writes != nil {
		writes(e)
	}
	// The RoPE rows: copies where the device keeps them, which must follow
	// every write.
	if !m.copyRope(e, s.rope, int64(s.C*hd)*4, start, n) {
		for kind := range m.rope {
			e.Write(s.rope, int64(kind*s.C*hd)*4, f32bytes(m.ropeRows.table(kind, start, n, s.ropeTab)))
		}
	}
	s.clearMaxima(e)
	sites := s.body
	if first < n {
		sites = append(sites[:len(sites):len(sites)], s.head...)
		sites = append(sites, pick...)
	}
	for _, st := range sites {
		if x, y, z := st.grid(n, first, start); x > 0 {
			e.Dispatch(st.kernel, st.group, x, y, z)
		}
	}
	s.commit(start, n)
}

// ForwardPick runs tokens at positions start.. like Forward and draws the
// token after them on the GPU (engine.FirstPicker): SubmitPick, then
// CollectBatch.
func (s *Sequence) ForwardPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) (int32, error) {
	if err := s.SubmitPick(tokens, start, p, step, history); err != nil {
		return -1, err
	}
	ids, err := s.CollectBatch()
	if err != nil {
		return -1, fmt.Errorf("forward: positions ..%d: %w", start+len(tokens)-1, err)
	}
	return ids[0], nil
}

// SubmitPick submits ForwardPick's work as a batch of one pick
// (engine.PickSubmitter): the last step's logits row stays on the device,
// where the sites of a pick (Greedy's argmax, or Sample's kernels with p)
// follow the head in the same command list, and one id is read back, as a
// decode batch reads its picks. A batch that continues it
// (engine.Batch.Continues) starts from the pick where the GPU left it.
func (s *Sequence) SubmitPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) error {
	n := len(tokens)
	if err := s.checkTokens(tokens, start); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	b := &s.batch
	if len(b.flight) > 0 {
		return fmt.Errorf("forward: %d batches in flight", len(b.flight))
	}
	pick, writes, err := s.pickSites(p, step, history, 1)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	if err := s.growBatch(1); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	last := (n - 1) / s.C * s.C // where the last step starts: Forward's steps
	if last > 0 {
		if err := s.Fill(tokens[:last], start); err != nil {
			return fmt.Errorf("forward: %w", err)
		}
	}
	k := n - last
	s.recordStep(tokens[last:], start+last, k-1, pick, writes)
	s.enc.Copy(s.ids, 0, b.out, 0, 4)
	if err := s.submitList(1); err != nil {
		return fmt.Errorf("forward: positions %d..%d: %w", start+last, start+n-1, err)
	}
	b.chainAt, b.chainP = start+n, p
	return nil
}

// checkTokens checks a step's input: tokens at positions start.. within the
// arena's context, each in the vocabulary.
func (s *Sequence) checkTokens(tokens []int32, start int) error {
	n, vocab := len(tokens), s.m.cfg.Vocab
	if n == 0 {
		return fmt.Errorf("no tokens")
	}
	if start < 0 || start+n > s.lay.Context {
		return fmt.Errorf("positions %d..%d outside the KV arena's context of %d", start, start+n-1, s.lay.Context)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return fmt.Errorf("token %d at index %d outside the vocabulary of %d", t, i, vocab)
		}
	}
	return nil
}

// commit records the copies that move the chunk's K/V into the arena, after
// the last layer has read them: positions start..start+n-1, each into its
// slot; a ring only keeps the last Slots of them. Consecutive positions are
// consecutive slots up to the ring's wrap, so each array takes at most two
// copies. A one-token step whose attention prepares the token's K/V itself
// (groupPrep) has written them into the arena already: four copies per
// layer a decode step saves (s.directKV, fixed by the plan).
func (s *Sequence) commit(start, n int) {
	s.end = start + n
	if n == 1 && s.directKV {
		return
	}
	kvh := int64(s.m.cfg.KVHeads)
	int8Mode := s.m.cfg.DType == model.Int8
	for ri := range s.lay.Regions {
		r, cr := &s.lay.Regions[ri], s.chunkAt[ri]
		t0 := 0
		if r.Ring && n > r.Slots {
			t0 = n - r.Slots
		}
		for t := t0; t < n; {
			slot := r.Slot(start + t)
			run := n - t
			if r.Ring {
				run = min(run, r.Slots-slot)
			}
			rows, from, to := int64(run)*kvh, int64(t)*kvh, int64(slot)*kvh
			s.enc.Copy(s.chunk, cr.k+from*s.lay.RowBytes, s.arena, r.K+to*s.lay.RowBytes, rows*s.lay.RowBytes)
			s.enc.Copy(s.chunk, cr.v+from*s.lay.RowBytes, s.arena, r.V+to*s.lay.RowBytes, rows*s.lay.RowBytes)
			if int8Mode {
				s.enc.Copy(s.chunk, cr.ks+from*4, s.arena, r.KScale+to*4, rows*4)
				s.enc.Copy(s.chunk, cr.vs+from*4, s.arena, r.VScale+to*4, rows*4)
			}
			t += run
		}
	}
}
