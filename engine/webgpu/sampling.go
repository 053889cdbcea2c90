package webgpu

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/shaders"
)

// samplingKey is the kernel of shaders/sampling.wgsl: one workgroup per pick.
var samplingKey = shaders.Key{Family: "sampling", Entry: "sample", WG: shaders.RowWG}

// samplingParams mirrors SampleParams of shaders/sampling.wgsl.
type samplingParams struct {
	Cols, OutWord, TopK, HistCap uint32
	InvT, TopP, Penalty          float32
	SeedHash                     uint32
}

// Sample decodes steps tokens after token (at position start) like Greedy,
// but draws each step's token on the GPU as engine/sample's Sampler with p
// draws it: pick i uses step step+i of p.Seed's random stream, and its
// history (for the repetition penalty) is history followed by the picks
// before it. Each pick stays on the GPU for the next step's embedding and
// is appended to a history buffer there; the ids are read back once.
//
// The GPU works in float32 where engine/sample works in float64, so a pick
// can differ where a draw or the top-p mass falls within float32 rounding
// of a boundary between two tokens (see TestSampleMatchesSampler).
func (s *Sequence) Sample(token int32, start, steps int, p sample.Params, step uint32, history []int32) ([]int32, error) {
	m, c := s.m, s.m.cfg
	if steps <= 0 {
		return nil, nil
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	if token < 0 || int(token) >= c.Vocab {
		return nil, fmt.Errorf("sample: token %d outside the vocabulary of %d", token, c.Vocab)
	}
	if start < 0 || start+steps > s.lay.Context {
		return nil, fmt.Errorf("sample: positions %d..%d outside the KV arena's context of %d", start, start+steps-1, s.lay.Context)
	}
	kern, err := m.kernel(samplingKey)
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	// The history and the picks, after the step counter and the length.
	histCap := len(history) + steps
	state := make([]byte, 0, 4*(2+len(history)))
	state = binary.LittleEndian.AppendUint32(state, step)
	state = binary.LittleEndian.AppendUint32(state, uint32(len(history)))
	for _, id := range history {
		state = binary.LittleEndian.AppendUint32(state, uint32(id))
	}
	sp := samplingParams{Cols: uint32(c.Vocab), HistCap: uint32(histCap), Penalty: p.RepetitionPenalty, TopP: p.TopP,
		SeedHash: pcgHash(pcgHash(uint32(p.Seed)) + uint32(p.Seed>>32))}
	if p.Temperature > 0 {
		sp.InvT = float32(1 / float64(p.Temperature))
	}
	if p.TopK > 0 && p.TopK < c.Vocab {
		sp.TopK = uint32(p.TopK)
	}
	size := int64(steps) * 4
	var bufs []gpu.Buffer
	defer func() {
		for _, b := range bufs {
			m.dev.FreeBuffer(b)
		}
	}()
	mk := func(size int64, usage gpu.Usage, label string) gpu.Buffer {
		if err != nil {
			return 0
		}
		var b gpu.Buffer
		if usage == gpu.MapRead {
			b, err = m.dev.NewBuffer((size+7)&^7, usage, label)
		} else {
			b, err = m.newBuffer(size, usage, label)
		}
		if err == nil {
			bufs = append(bufs, b)
		}
		return b
	}
	params := mk(int64(binary.Size(sp)), gpu.Uniform, "sample_params")
	hist := mk(int64(4*(2+histCap)), gpu.Storage, "sample_state")
	scratch := mk(int64(c.Vocab)*4, gpu.Storage, "sample_logits")
	out := mk(size, gpu.Storage, "sample_ids")
	back := mk(size, gpu.MapRead, "sample_readback")
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	group, err := m.dev.NewBindGroup(kern, []gpu.Binding{
		{Slot: 0, Buffer: s.stepBuf, Size: 16}, {Slot: 1, Buffer: params},
		{Slot: 2, Buffer: s.logits}, {Slot: 3, Buffer: s.ids}, {Slot: 4, Buffer: hist}, {Slot: 5, Buffer: scratch},
	})
	if err != nil {
		return nil, fmt.Errorf("sample: bind %s: %w", samplingKey.Label(), err)
	}
	defer m.dev.FreeBindGroup(group)
	hd := c.HeadDim
	for i := 0; i < steps; i++ {
		e := &s.enc
		e.Reset()
		pos := start + i
		e.Write(s.stepBuf, 0, shaders.Bytes(shaders.Step{Start: uint32(pos), N: 1, First: 0}))
		if i == 0 {
			e.Write(s.ids, 0, binary.LittleEndian.AppendUint32(nil, uint32(token)))
			e.Write(params, 0, paramBytes(sp))
			e.Write(hist, 0, state)
		}
		for kind := range m.rope {
			m.rope[kind].CosSin(s.ropeTab[:hd], pos)
			e.Write(s.rope, int64(kind*s.C*hd)*4, f32bytes(s.ropeTab[:hd]))
		}
		for _, st := range append(s.body[:len(s.body):len(s.body)], s.head...) {
			if x, y, z := st.grid(1, 0, pos); x > 0 {
				e.Dispatch(st.kernel, st.group, x, y, z)
			}
		}
		e.Dispatch(kern, group, 1, 1, 1)
		s.commit(pos, 1)
		e.Copy(s.ids, 0, out, int64(i)*4, 4)
		if i == steps-1 {
			e.Copy(out, 0, back, 0, size)
		}
		if err := e.Err(); err != nil {
			return nil, fmt.Errorf("sample: step %d: %w", i, err)
		}
		if err := m.dev.Run(e.Bytes()); err != nil {
			return nil, fmt.Errorf("sample: step %d: %w", i, err)
		}
	}
	ids := make([]int32, steps)
	var mapErr error
	done := false
	if err := m.dev.Map(back, 0, (size+7)&^7, func(data []byte, err error) {
		done, mapErr = true, err
		for i := range ids {
			if err == nil {
				ids[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
			}
		}
	}); err != nil {
		return nil, fmt.Errorf("sample: read ids: %w", err)
	}
	if err := m.dev.Poll(true); err != nil {
		return nil, fmt.Errorf("sample: read ids: %w", err)
	}
	if !done {
		return nil, fmt.Errorf("sample: read ids: the readback did not complete")
	}
	return ids, mapErr
}

func paramBytes(p samplingParams) []byte {
	b := make([]byte, 0, 32)
	for _, v := range []uint32{p.Cols, p.OutWord, p.TopK, p.HistCap,
		math.Float32bits(p.InvT), math.Float32bits(p.TopP), math.Float32bits(p.Penalty), p.SeedHash} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// pcgHash is engine/sample's hash (the PCG hash of Jarzynski and Olano);
// the GPU gets the seed's part of sample.Hash from it and hashes the step.
func pcgHash(v uint32) uint32 {
	state := v*747796405 + 2891336453
	word := ((state >> ((state >> 28) + 4)) ^ state) * 277803737
	return (word >> 22) ^ word
}
