package webgpu

import (
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/shaders"
)

// Greedy decodes steps tokens after token (at position start) with the
// argmax taken on the GPU: each step's id stays in the ids buffer for the
// next step's embedding gather, so the steps run back to back in one
// command list (see SubmitBatch) with no readback between them. The ids are
// read back once, at the end.
// It is DESIGN.md's decode loop in its simplest form (greedy, no stop token).
func (s *Sequence) Greedy(token int32, start, steps int) ([]int32, error) {
	if steps <= 0 {
		return nil, nil
	}
	ids, err := s.runBatch(engine.Batch{Token: token, Start: start, Steps: steps})
	if err != nil {
		return nil, fmt.Errorf("greedy: %w", err)
	}
	return ids, nil
}

// runBatch submits batch b and waits for its picks; no other batch may be
// in flight.
func (s *Sequence) runBatch(b engine.Batch) ([]int32, error) {
	if n := len(s.batch.flight); n > 0 {
		return nil, fmt.Errorf("%d batches submitted ahead are in flight", n)
	}
	if err := s.SubmitBatch(b); err != nil {
		return nil, err
	}
	return s.CollectBatch()
}

// recordDecode records into s.enc one decode step of the token in ids[0]
// at position pos, up to its argmax into ids[0]: the Step block, the RoPE
// rows and every dispatch. The caller adds the KV commit.
func (s *Sequence) recordDecode(pos int) {
	s.recordStepWrites(pos)
	s.recordDispatches(pos, "")
}

// recordStepWrites records the writes of a decode step's inputs at
// position pos: its Step block and RoPE rows.
func (s *Sequence) recordStepWrites(pos int) {
	m, hd := s.m, s.m.cfg.HeadDim
	e := &s.enc
	e.Write(s.stepBuf, 0, shaders.Bytes(shaders.Step{Start: uint32(pos), N: 1, First: 0}))
	for kind := range m.rope {
		m.rope[kind].CosSin(s.ropeTab[:hd], pos)
		e.Write(s.rope, int64(kind*s.C*hd)*4, f32bytes(s.ropeTab[:hd]))
	}
}

// recordDispatches records the dispatches of a decode step at position
// pos, leaving out those of the kernel variant labelled omit ("": none),
// after the clear of the gated epilogue's maxima that each step needs.
func (s *Sequence) recordDispatches(pos int, omit string) {
	s.clearMaxima(&s.enc)
	for _, st := range s.decodeSites() {
		if x, y, z := st.grid(1, 0, pos); x > 0 && (omit == "" || st.label != omit) {
			s.enc.Dispatch(st.kernel, st.group, x, y, z)
		}
	}
}

// decodeSites are the sites of a step that computes logits and picks the
// next token.
func (s *Sequence) decodeSites() []site {
	all := append(s.body[:len(s.body):len(s.body)], s.head...)
	return append(all, s.pick...)
}

// run submits s.enc and waits for the GPU.
func (s *Sequence) run() error {
	if err := s.enc.Err(); err != nil {
		return err
	}
	if err := s.m.dev.Run(s.enc.Bytes()); err != nil {
		return err
	}
	return s.m.dev.Poll(true)
}
