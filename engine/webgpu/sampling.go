package webgpu

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/shaders"
)

// The kernels of shaders/sampling.wgsl, in the order a pick runs them:
// prep_part (a workgroup per samplingRun ids) and prep_merge (one
// workgroup), then for each of top-p's 4 digits mass_partK (a workgroup
// per samplingRun ids, each first fixing the digit before its own), then
// draw_part (which fixes the last) and draw_pick. A sampled step with
// top-p adds 8 dispatches after the logits (greedy's pick is 2); without
// top-p 4; at temperature 0 2 (prep_merge picks).
const (
	samplePrepPart = iota
	samplePrepMerge
	sampleMassPart0 // then the digits' 1..3
	sampleDrawPart  = sampleMassPart0 + massDigits
	sampleDrawPick  = sampleDrawPart + 1
	samplingKernels = sampleDrawPick + 1
)

// massDigits is how many 8-bit digits of a float's key the top-p search
// fixes, a mass_part kernel each.
const massDigits = 4

var samplingKeys = [samplingKernels]shaders.Key{
	{Family: "sampling", Entry: "prep_part", WG: shaders.RowWG},
	{Family: "sampling", Entry: "prep_merge", WG: shaders.RowWG},
	{Family: "sampling", Entry: "mass_part0", WG: shaders.RowWG},
	{Family: "sampling", Entry: "mass_part1", WG: shaders.RowWG},
	{Family: "sampling", Entry: "mass_part2", WG: shaders.RowWG},
	{Family: "sampling", Entry: "mass_part3", WG: shaders.RowWG},
	{Family: "sampling", Entry: "draw_part", WG: shaders.RowWG},
	{Family: "sampling", Entry: "draw_pick", WG: shaders.RowWG},
}

// samplingRun is the ids of one _part workgroup (sampling.wgsl's RUN).
const samplingRun = 4096

// selBytes is the size of sampling.wgsl's sel buffer for a vocabulary of
// cols: its 32 words, then 2 per _part workgroup.
func selBytes(cols int) int64 {
	return 4 * (32 + 2*int64((cols+samplingRun-1)/samplingRun))
}

// massBytes is the size of sampling.wgsl's mass buffer: two words for each
// bin of each digit.
const massBytes = 4 * 2 * 256 * massDigits

// samplingBufs are the buffers the sampling kernels bind.
type samplingBufs struct {
	step, params, logits, ids, state, x, sel, mass gpu.Buffer
}

// bindSampling makes each sampling kernel's bind group: pipelines take the
// layout their entry point implies, so each binds the slots it uses.
func bindSampling(dev gpu.Device, kern [samplingKernels]gpu.Kernel, b samplingBufs) ([samplingKernels]gpu.BindGroup, error) {
	var groups [samplingKernels]gpu.BindGroup
	params, x, sel := gpu.Binding{Slot: 1, Buffer: b.params}, gpu.Binding{Slot: 5, Buffer: b.x}, gpu.Binding{Slot: 6, Buffer: b.sel}
	ids, state := gpu.Binding{Slot: 3, Buffer: b.ids}, gpu.Binding{Slot: 4, Buffer: b.state}
	mass := gpu.Binding{Slot: 7, Buffer: b.mass}
	slots := [samplingKernels][]gpu.Binding{
		samplePrepPart:  {{Slot: 0, Buffer: b.step, Size: 16}, params, {Slot: 2, Buffer: b.logits}, state, x, sel},
		samplePrepMerge: {params, ids, state, x, sel, mass},
		sampleDrawPart:  {params, x, sel, mass},
		sampleDrawPick:  {params, ids, state, x, sel},
	}
	for k := range massDigits {
		slots[sampleMassPart0+k] = []gpu.Binding{params, x, sel, mass}
	}
	for i, bs := range slots {
		g, err := dev.NewBindGroup(kern[i], bs)
		if err != nil {
			for _, made := range groups[:i] {
				dev.FreeBindGroup(made)
			}
			return groups, fmt.Errorf("bind %s: %w", samplingKeys[i].Label(), err)
		}
		groups[i] = g
	}
	return groups, nil
}

// samplingSitesOf are the dispatches of one pick with parameters sp, over a
// vocabulary of cols: the top-p search only where a draw uses it.
func samplingSitesOf(kern [samplingKernels]gpu.Kernel, groups [samplingKernels]gpu.BindGroup, cols int, sp samplingParams) []site {
	one := func(int, int, int) (int, int, int) { return 1, 1, 1 }
	at := func(i int, grid gridFunc) site {
		return site{kernel: kern[i], group: groups[i], grid: grid, label: samplingKeys[i].Label()}
	}
	runs := (cols + samplingRun - 1) / samplingRun
	eachRun := func(int, int, int) (int, int, int) { return runs, 1, 1 }
	sites := []site{at(samplePrepPart, eachRun), at(samplePrepMerge, one)}
	if sp.InvT == 0 {
		return sites
	}
	if sp.TopP > 0 && sp.TopP < 1 {
		for k := range massDigits {
			sites = append(sites, at(sampleMassPart0+k, eachRun))
		}
	}
	return append(sites, at(sampleDrawPart, eachRun), at(sampleDrawPick, one))
}

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
// (see SubmitBatch) and the ids are read back once.
//
// The GPU works in float32 where engine/sample works in float64, so a pick
// can differ where a draw or the top-p mass falls within float32 rounding
// of a boundary between two tokens (see TestSampleMatchesSampler).
func (s *Sequence) Sample(token int32, start, steps int, p sample.Params, step uint32, history []int32) ([]int32, error) {
	if steps <= 0 {
		return nil, nil
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	ids, err := s.runBatch(engine.Batch{Token: token, Start: start, Steps: steps, Params: p, Step: step, History: history})
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	return ids, nil
}

// pickSites are the sites that draw a step's token with p (Greedy's
// argmax where p is greedy, else the sampling kernels) and the writes of
// their state (nil for the argmax): steps picks from step step of p.Seed's
// stream, after history.
func (s *Sequence) pickSites(p sample.Params, step uint32, history []int32, steps int) ([]site, func(*gpu.Encoder), error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	if p.Argmax() {
		return s.pick, nil, nil
	}
	return s.samplingSites(p, step, history, steps)
}

// samplingSites are the sampling kernels' sites for steps picks with p
// from step step of its stream after history, and the writes of their
// parameters and state; they make the sampling buffers on first use.
func (s *Sequence) samplingSites(p sample.Params, step uint32, history []int32, steps int) ([]site, func(*gpu.Encoder), error) {
	kern, err := s.samplingKernels()
	if err != nil {
		return nil, nil, err
	}
	// The history and the picks, after the step counter and the length.
	histCap := len(history) + steps
	state := make([]byte, 0, 4*(2+len(history)))
	state = binary.LittleEndian.AppendUint32(state, step)
	state = binary.LittleEndian.AppendUint32(state, uint32(len(history)))
	for _, id := range history {
		state = binary.LittleEndian.AppendUint32(state, uint32(id))
	}
	if err := s.growSampling(kern, histCap, 0); err != nil {
		return nil, nil, err
	}
	b := &s.batch
	b.histEnd = histCap
	sp := s.samplingParamsOf(p)
	return samplingSitesOf(kern, b.groups, s.m.cfg.Vocab, sp), func(e *gpu.Encoder) {
		e.Write(b.sparams, 0, paramBytes(sp))
		e.Write(b.state, 0, state)
	}, nil
}

// continueSampling is samplingSites for a batch that continues the one
// before it: its draws go on from the state that batch leaves on the
// device (the step, and the history with that batch's picks), so only the
// parameters are written, and a state buffer too small for the new picks
// is grown by a copy on the device.
func (s *Sequence) continueSampling(p sample.Params, steps int) ([]site, func(*gpu.Encoder), error) {
	kern, err := s.samplingKernels()
	if err != nil {
		return nil, nil, err
	}
	b := &s.batch
	if err := s.growSampling(kern, b.histEnd+steps, b.histEnd); err != nil {
		return nil, nil, err
	}
	b.histEnd += steps
	sp := s.samplingParamsOf(p)
	return samplingSitesOf(kern, b.groups, s.m.cfg.Vocab, sp), func(e *gpu.Encoder) {
		e.Write(b.sparams, 0, paramBytes(sp))
	}, nil
}

// samplingKernels are the sampling kernels, compiled on first use.
func (s *Sequence) samplingKernels() ([samplingKernels]gpu.Kernel, error) {
	var kern [samplingKernels]gpu.Kernel
	for i, k := range samplingKeys {
		var err error
		if kern[i], err = s.m.kernel(k); err != nil {
			return kern, err
		}
	}
	return kern, nil
}

// samplingParamsOf is the kernels' parameters for draws with p; the
// history may fill the whole state buffer.
func (s *Sequence) samplingParamsOf(p sample.Params) samplingParams {
	c := s.m.cfg
	sp := samplingParams{Cols: uint32(c.Vocab), HistCap: uint32(s.batch.histCap), Penalty: p.RepetitionPenalty, TopP: p.TopP,
		SeedHash: pcgHash(pcgHash(uint32(p.Seed)) + uint32(p.Seed>>32))}
	if p.Temperature > 0 {
		sp.InvT = float32(1 / float64(p.Temperature))
	}
	if p.TopK > 0 && p.TopK < c.Vocab {
		sp.TopK = uint32(p.TopK)
	}
	return sp
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
