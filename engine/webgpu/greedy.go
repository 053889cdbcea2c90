package webgpu

import (
	"fmt"
	"slices"
	"time"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/shaders"
)

// Greedy decodes steps tokens after token (at position start) with the
// argmax taken on the GPU: each step's id stays in the ids buffer for the
// next step's embedding gather, so the steps run back to back in one
// command list (see runBatch) with no readback between them. The ids are
// read back once, at the end.
// It is DESIGN.md's decode loop in its simplest form (greedy, no stop token).
func (s *Sequence) Greedy(token int32, start, steps int) ([]int32, error) {
	c := s.m.cfg
	if steps <= 0 {
		return nil, nil
	}
	if token < 0 || int(token) >= c.Vocab {
		return nil, fmt.Errorf("greedy: token %d outside the vocabulary of %d", token, c.Vocab)
	}
	if start < 0 || start+steps > s.lay.Context {
		return nil, fmt.Errorf("greedy: positions %d..%d outside the KV arena's context of %d", start, start+steps-1, s.lay.Context)
	}
	if err := s.growBatch(steps); err != nil {
		return nil, fmt.Errorf("greedy: %w", err)
	}
	ids, err := s.runBatch(token, start, steps, s.pick, nil)
	if err != nil {
		return nil, fmt.Errorf("greedy: positions %d..%d: %w", start, start+steps-1, err)
	}
	return ids, nil
}

// recordDecode records into s.enc one decode step of the token in ids[0]
// at position pos, up to its argmax into ids[0]: the Step block, the RoPE
// rows and every dispatch. The caller adds the KV commit.
func (s *Sequence) recordDecode(pos int) {
	m, hd := s.m, s.m.cfg.HeadDim
	e := &s.enc
	e.Write(s.stepBuf, 0, shaders.Bytes(shaders.Step{Start: uint32(pos), N: 1, First: 0}))
	for kind := range m.rope {
		m.rope[kind].CosSin(s.ropeTab[:hd], pos)
		e.Write(s.rope, int64(kind*s.C*hd)*4, f32bytes(s.ropeTab[:hd]))
	}
	for _, st := range s.decodeSites() {
		if x, y, z := st.grid(1, 0, pos); x > 0 {
			e.Dispatch(st.kernel, st.group, x, y, z)
		}
	}
}

// decodeSites are the sites of a step that computes logits and picks the
// next token.
func (s *Sequence) decodeSites() []site {
	all := append(s.body[:len(s.body):len(s.body)], s.head...)
	return append(all, s.pick...)
}

// KernelTime is the time of one dispatch of a decode step.
type KernelTime struct {
	Label   string  // the kernel variant (shaders.Key.Label)
	Grid    [3]int  // its workgroups
	Seconds float64 // per dispatch (DecodeProfile.Timestamps says how it was measured)
}

// DecodeProfile is a decode step by dispatch.
type DecodeProfile struct {
	Kernels []KernelTime // the step's dispatches in order
	// Timestamps says the times are the GPU's own (timestamp queries
	// through gpu.Timer: each dispatch of whole steps in a compute pass of
	// its own, the median over runs). Else they are wall-clock: each
	// dispatch repeated alone back to back, which is all a device without
	// timestamp queries allows (the native one: cogentcore/webgpu v0.23.0
	// has no compute-pass timestampWrites).
	Timestamps bool
	// StepSeconds is, with Timestamps, the GPU time of the whole step, from
	// its first dispatch's beginning to its last one's end (median over
	// runs): the kernels' sum plus the gaps between passes.
	StepSeconds float64
	Steps       int // with Timestamps, the steps the medians are of
}

// ProfileDecode times each dispatch of a decode step at position start:
// with the device's timestamp queries where it has them (reps steps,
// capped at profileSteps), else each dispatch on its own, reps dispatches
// of it in one command buffer (each waiting for the one before, as in a
// step), after a warm-up, divided by reps. The sum is what a step costs on
// the GPU. It overwrites the run state and the KV of position start: it is
// for benchmarks.
func (s *Sequence) ProfileDecode(start, reps int) (DecodeProfile, error) {
	if start < 0 || start >= s.lay.Context || reps <= 0 {
		return DecodeProfile{}, fmt.Errorf("profile: position %d outside the context of %d, or %d repeats", start, s.lay.Context, reps)
	}
	e := &s.enc
	e.Reset()
	s.recordDecode(start)
	if err := s.run(); err != nil {
		return DecodeProfile{}, fmt.Errorf("profile: %w", err)
	}
	var p DecodeProfile
	var sites []site
	for _, st := range s.decodeSites() {
		x, y, z := st.grid(1, 0, start)
		if x == 0 {
			continue
		}
		sites = append(sites, st)
		p.Kernels = append(p.Kernels, KernelTime{Label: st.label, Grid: [3]int{x, y, z}})
	}
	if t, ok := gpu.TimerOf(s.m.dev); ok {
		return s.profileTimed(t, start, min(reps, profileSteps), p)
	}
	for i, st := range sites {
		g := p.Kernels[i].Grid
		var best float64
		for try := 0; try < 3; try++ {
			e.Reset()
			for range reps {
				e.Dispatch(st.kernel, st.group, g[0], g[1], g[2])
			}
			t0 := time.Now()
			if err := s.run(); err != nil {
				return DecodeProfile{}, fmt.Errorf("profile %s: %w", st.label, err)
			}
			if t := time.Since(t0).Seconds() / float64(reps); try == 0 || t < best {
				best = t
			}
		}
		p.Kernels[i].Seconds = best
	}
	return p, nil
}

// profileSteps caps the steps a timestamp profile runs: their medians are
// stable long before the 50 repeats a wall-clock profile needs.
const profileSteps = 15

// profileTimed fills p with the timestamps of steps runs of the decode
// step at start (after one warm-up run): each dispatch's median, and the
// median step.
func (s *Sequence) profileTimed(t gpu.Timer, start, steps int, p DecodeProfile) (DecodeProfile, error) {
	e := &s.enc
	e.Reset()
	s.recordDecode(start)
	if err := e.Err(); err != nil {
		return p, fmt.Errorf("profile: %w", err)
	}
	cmds := slices.Clone(e.Bytes())
	per := make([][]float64, len(p.Kernels))
	var spans []float64
	for run := 0; run <= steps; run++ {
		var got []gpu.Interval
		var gotErr error
		if err := t.RunTimed(cmds, func(iv []gpu.Interval, err error) { got, gotErr = iv, err }); err != nil {
			return p, fmt.Errorf("profile: %w", err)
		}
		if err := s.m.dev.Poll(true); err != nil {
			return p, fmt.Errorf("profile: %w", err)
		}
		if gotErr != nil {
			return p, fmt.Errorf("profile: %w", gotErr)
		}
		if len(got) != len(p.Kernels) {
			return p, fmt.Errorf("profile: %d timestamp pairs for a step of %d dispatches", len(got), len(p.Kernels))
		}
		if run == 0 {
			continue // warm-up
		}
		for i, iv := range got {
			per[i] = append(per[i], float64(iv.Nanos())*1e-9)
		}
		spans = append(spans, float64(gpu.Interval{Begin: got[0].Begin, End: got[len(got)-1].End}.Nanos())*1e-9)
	}
	for i := range p.Kernels {
		p.Kernels[i].Seconds = median(per[i])
	}
	p.Timestamps, p.StepSeconds, p.Steps = true, median(spans), steps
	return p, nil
}

// median returns the median of xs (which it sorts).
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
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
