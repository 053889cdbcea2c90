package webgpu

import (
	"encoding/binary"
	"fmt"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/shaders"
)

// Greedy decodes steps tokens after token (at position start) with the
// argmax taken on the GPU: each step's id stays in the ids buffer for the
// next step's embedding gather, so steps are submitted back to back with
// no readback between them. The ids are read back once, at the end.
// It is DESIGN.md's decode loop in its simplest form (greedy, no stop token).
func (s *Sequence) Greedy(token int32, start, steps int) ([]int32, error) {
	m, c := s.m, s.m.cfg
	if steps <= 0 {
		return nil, nil
	}
	if token < 0 || int(token) >= c.Vocab {
		return nil, fmt.Errorf("greedy: token %d outside the vocabulary of %d", token, c.Vocab)
	}
	if start < 0 || start+steps > s.lay.Context {
		return nil, fmt.Errorf("greedy: positions %d..%d outside the KV arena's context of %d", start, start+steps-1, s.lay.Context)
	}
	size := int64(steps) * 4
	out, err := s.m.newBuffer(size, gpu.Storage, "greedy_ids")
	if err != nil {
		return nil, fmt.Errorf("greedy: %w", err)
	}
	defer m.dev.FreeBuffer(out)
	back, err := m.dev.NewBuffer((size+7)&^7, gpu.MapRead, "greedy_readback")
	if err != nil {
		return nil, fmt.Errorf("greedy: %w", err)
	}
	defer m.dev.FreeBuffer(back)
	hd := c.HeadDim
	for i := 0; i < steps; i++ {
		e := &s.enc
		e.Reset()
		pos := start + i
		e.Write(s.stepBuf, 0, shaders.Bytes(shaders.Step{Start: uint32(pos), N: 1, First: 0}))
		if i == 0 {
			e.Write(s.ids, 0, binary.LittleEndian.AppendUint32(nil, uint32(token)))
		}
		for kind := range m.freqs {
			model.RopeCosSin(s.ropeTab[:hd], m.freqs[kind], pos)
			e.Write(s.rope, int64(kind*s.C*hd)*4, f32bytes(s.ropeTab[:hd]))
		}
		for _, st := range append(s.body[:len(s.body):len(s.body)], s.head...) {
			if x, y, z := st.grid(1, 0, pos); x > 0 {
				e.Dispatch(st.kernel, st.group, x, y, z)
			}
		}
		e.Dispatch(s.argmax.kernel, s.argmax.group, 1, 1, 1)
		s.commit(pos, 1)
		e.Copy(s.ids, 0, out, int64(i)*4, 4)
		if err := e.Err(); err != nil {
			return nil, fmt.Errorf("greedy: step %d: %w", i, err)
		}
		if err := m.dev.Run(e.Bytes()); err != nil {
			return nil, fmt.Errorf("greedy: step %d: %w", i, err)
		}
	}
	s.enc.Reset()
	s.enc.Copy(out, 0, back, 0, size)
	if err := m.dev.Run(s.enc.Bytes()); err != nil {
		return nil, fmt.Errorf("greedy: read ids: %w", err)
	}
	ids := make([]int32, steps)
	var mapErr error
	if err := m.dev.Map(back, 0, (size+7)&^7, func(data []byte, err error) {
		mapErr = err
		for i := range ids {
			if err == nil {
				ids[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
			}
		}
	}); err != nil {
		return nil, fmt.Errorf("greedy: read ids: %w", err)
	}
	if err := m.dev.Poll(true); err != nil {
		return nil, fmt.Errorf("greedy: read ids: %w", err)
	}
	return ids, mapErr
}
