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
// is appended to a history buffer there; the steps are one command list
// (see runBatch) and the ids are read back once.
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
	if err := s.growBatch(steps); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	if err := s.growSampling(kern, histCap); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	b := &s.batch
	pick := []site{{kernel: kern, group: b.group, grid: func(int, int, int) (int, int, int) { return 1, 1, 1 }, label: samplingKey.Label()}}
	ids, err := s.runBatch(token, start, steps, pick, func(e *gpu.Encoder) {
		e.Write(b.sparams, 0, paramBytes(sp))
		e.Write(b.state, 0, state)
	})
	if err != nil {
		return nil, fmt.Errorf("sample: positions %d..%d: %w", start, start+steps-1, err)
	}
	return ids, nil
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
