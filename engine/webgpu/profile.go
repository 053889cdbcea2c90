package webgpu

import (
	"fmt"
	"slices"
	"time"

	"github.com/wick-run/wick/engine/gpu"
)

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
		if err := t.RunTimed(cmds, gpu.ByDispatch, func(iv []gpu.Interval, err error) { got, gotErr = iv, err }); err != nil {
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

// Omission is the marginal cost of one kernel variant in a decode step:
// what the step saves when the variant's dispatches are left out.
type Omission struct {
	Label      string  // the kernel variant (shaders.Key.Label)
	Dispatches int     // its dispatches per step
	Seconds    float64 // the step's time without them subtracted from the whole step's
}

// OmissionProfile is a decode step's time, and what each kernel variant
// costs it (Sequence.OmissionProfile).
type OmissionProfile struct {
	// Step is a whole step's time: with Timestamps, how long the GPU was
	// busy with its dispatches (the passes' timestamps summed), else wall
	// clock.
	Step float64
	// Wall is a whole step's wall-clock time: the GPU's time plus what the
	// GPU waited for (the host encoding and submitting the commands).
	Wall       float64
	Timestamps bool
	Kernels    []Omission
}

// OmissionProfile times steps decode steps at position start recorded
// whole, then once more per kernel variant with that variant's dispatches
// left out, each as one command list in one compute pass (medians of reps
// runs after a warm-up), by the GPU's timestamps where the device has them
// (gpu.ByPass), else by wall clock. A timestamp profile by dispatch puts
// each dispatch in a compute pass of its own, which adds a fixed cost to
// every one; this measures what each kernel costs where it really runs,
// between its neighbours in one pass. Leaving a kernel out feeds the next
// ones stale data; the kernels' work does not depend on their values, so
// the times hold, but the tokens are garbage: it is for benchmarks. It
// overwrites the run state and the KV of position start.
func (s *Sequence) OmissionProfile(start, steps, reps int) (OmissionProfile, error) {
	var p OmissionProfile
	if start < 0 || start >= s.lay.Context || steps <= 0 || reps <= 0 {
		return p, fmt.Errorf("omission profile: position %d outside the context of %d, or %d steps, %d repeats", start, s.lay.Context, steps, reps)
	}
	count := map[string]int{}
	for _, st := range s.decodeSites() {
		if x, _, _ := st.grid(1, 0, start); x > 0 {
			if count[st.label] == 0 {
				p.Kernels = append(p.Kernels, Omission{Label: st.label})
			}
			count[st.label]++
		}
	}
	timer, timed := gpu.TimerOf(s.m.dev)
	p.Timestamps = timed
	// stepTime times the steps without the variant omit: the GPU's busy
	// time and the wall clock's, per step.
	stepTime := func(omit string) (busy, wall float64, err error) {
		e := &s.enc
		e.Reset()
		s.recordStepWrites(start)
		for range steps {
			s.recordDispatches(start, omit)
		}
		if err := e.Err(); err != nil {
			return 0, 0, err
		}
		cmds := slices.Clone(e.Bytes())
		var busys, walls []float64
		for run := 0; run <= reps; run++ {
			var gotErr error
			var sum uint64
			t0 := time.Now()
			if timed {
				err = timer.RunTimed(cmds, gpu.ByPass, func(iv []gpu.Interval, err error) {
					gotErr = err
					for _, x := range iv {
						sum += x.Nanos()
					}
				})
			} else {
				err = s.m.dev.Run(cmds)
			}
			if err == nil {
				err = s.m.dev.Poll(true)
			}
			if err == nil {
				err = gotErr
			}
			if err != nil {
				return 0, 0, err
			}
			if run > 0 {
				walls = append(walls, time.Since(t0).Seconds()/float64(steps))
				busys = append(busys, float64(sum)*1e-9/float64(steps))
			}
		}
		wall = median(walls)
		if !timed {
			return wall, wall, nil
		}
		return median(busys), wall, nil
	}
	var err error
	if p.Step, p.Wall, err = stepTime(""); err != nil {
		return p, fmt.Errorf("omission profile: %w", err)
	}
	for i := range p.Kernels {
		t, _, err := stepTime(p.Kernels[i].Label)
		if err != nil {
			return p, fmt.Errorf("omission profile without %s: %w", p.Kernels[i].Label, err)
		}
		p.Kernels[i].Dispatches, p.Kernels[i].Seconds = count[p.Kernels[i].Label], p.Step-t
	}
	return p, nil
}
