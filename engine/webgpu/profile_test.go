//go:build !js && !wasip1

package webgpu

import (
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/gpu/dawn"
	"github.com/wick-run/wick/internal/modeltest"
)

// labelled is a device that remembers each kernel's label and the labels
// of the dispatches of the last command list it ran: what the plan really
// dispatches, seen from outside the engine.
type labelled struct {
	gpu.Device
	labels map[gpu.Kernel]string
	last   []string
}

func (d *labelled) NewKernel(src gpu.KernelSource) (gpu.Kernel, error) {
	k, err := d.Device.NewKernel(src)
	if err == nil {
		d.labels[k] = src.Label
	}
	return k, err
}

func (d *labelled) Run(cmds []byte) error {
	d.record(cmds)
	return d.Device.Run(cmds)
}

func (d *labelled) RunTimed(cmds []byte, by gpu.Timing, done func([]gpu.Interval, error)) error {
	d.record(cmds)
	return d.Device.(gpu.Timer).RunTimed(cmds, by, done)
}

// record keeps the labels of the dispatches of cmds in d.last.
func (d *labelled) record(cmds []byte) {
	d.last = d.last[:0]
	gpu.Decode(cmds, func(c gpu.Command) error {
		if c.Op == gpu.OpDispatch {
			d.last = append(d.last, d.labels[c.Kernel])
		}
		return nil
	})
}

// profiledPos is the position the profile tests decode at.
const profiledPos = 9

// timedDawn opens Dawn with timestamp queries (lavapipe offers them).
func timedDawn(t *testing.T) gpu.Device {
	t.Helper()
	dd, err := dawn.Open(dawn.Options{Timestamps: true})
	if err != nil {
		t.Fatalf("%v (Dawn needs node, node/node_modules and lavapipe: `make deps`)", err)
	}
	t.Cleanup(func() { dd.Close() })
	if _, ok := gpu.TimerOf(dd); !ok {
		t.Fatalf("Dawn on %s was opened with timestamps but offers no %s (features %v)", dd.Info().Adapter, gpu.FeatureTimestamps, dd.Info().Features)
	}
	return dd
}

// profiledSequence loads testdata/cai-tiny on dev behind a labelled
// device and decodes one step at profiledPos, whose dispatches' labels it
// returns: the plan's step as the device saw it.
func profiledSequence(t *testing.T, dev gpu.Device) (*labelled, *Sequence, []string) {
	t.Helper()
	f, w := modeltest.Load(t, "../../testdata/cai-tiny")
	d := &labelled{Device: dev, labels: map[gpu.Kernel]string{}}
	_, s := gpuSequence(t, d, f.Config(), w, Options{}, 64)
	if _, err := s.Greedy(5, profiledPos, 1); err != nil {
		t.Fatal(err)
	}
	return d, s, slices.Clone(d.last)
}

// TestProfileDecodeTimestamps profiles a decode step of testdata/cai-tiny
// on Dawn with timestamp queries (lavapipe offers them): every dispatch the
// step makes is there, in the plan's order and with its kernel's label,
// each took positive GPU time, and together they make up most of the
// step's GPU time (the rest is the gaps between their passes) and never
// more.
func TestProfileDecodeTimestamps(t *testing.T) {
	_, s, plan := profiledSequence(t, timedDawn(t))
	p, err := s.ProfileDecode(profiledPos, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Timestamps || p.Steps < 5 {
		t.Fatalf("the profile used timestamps %v over %d steps, want timestamps over at least 5", p.Timestamps, p.Steps)
	}
	var got []string
	var sum float64
	for _, k := range p.Kernels {
		got = append(got, k.Label)
		if k.Seconds <= 0 {
			t.Errorf("%s %v: %g s, want a positive time", k.Label, k.Grid, k.Seconds)
		}
		sum += k.Seconds
	}
	// Dawn rounds timestamps to 65,536 ns unless the host turns that off
	// (node/dawn.mjs): rounded, most of a fast GPU's dispatches read 0.
	whole := false
	for _, k := range p.Kernels {
		whole = whole || int64(math.Round(k.Seconds*1e9))%65536 != 0
	}
	if !whole {
		t.Errorf("every dispatch's time is a multiple of 65,536 ns: Dawn quantizes the timestamps")
	}
	if !slices.Equal(got, plan) {
		t.Fatalf("profiled dispatches %v,\nthe step dispatches %v", got, plan)
	}
	// Medians of each dispatch need not add up to the median step exactly:
	// allow a little over. On lavapipe the gaps between passes are a third
	// of the step (the driver's CPU work), more on a loaded machine.
	if sum > 1.05*p.StepSeconds || sum < 0.3*p.StepSeconds {
		t.Fatalf("the %d dispatches sum to %.0f us of a %.0f us step, want 30-105%%", len(got), sum*1e6, p.StepSeconds*1e6)
	}
	t.Logf("%d dispatches, %.0f us in kernels of a %.0f us step", len(got), sum*1e6, p.StepSeconds*1e6)
}

// TestOmissionProfile runs the omission profile of a decode step of
// testdata/cai-tiny natively (wall clock) and on Dawn (timestamps at the
// passes' ends): it names every kernel variant the step dispatches, each
// with its count of dispatches in the step; the list it runs for a variant
// really leaves out that variant's dispatches and only those; and on Dawn
// the GPU's busy time is positive and within the wall clock's.
func TestOmissionProfile(t *testing.T) {
	for _, timed := range []bool{false, true} {
		t.Run(map[bool]string{false: "native", true: "dawn-timestamps"}[timed], func(t *testing.T) {
			dev := device(t)
			if timed {
				dev = timedDawn(t)
			}
			d, s, step := profiledSequence(t, dev)
			const steps = 3
			want := map[string]int{}
			for _, l := range step {
				want[l]++
			}
			p, err := s.OmissionProfile(profiledPos, steps, 2)
			if err != nil {
				t.Fatal(err)
			}
			if p.Timestamps != timed {
				t.Errorf("the profile used timestamps: %v, want %v", p.Timestamps, timed)
			}
			if p.Step <= 0 || p.Step > 1.01*p.Wall {
				t.Errorf("a whole step took %g s, of %g s of wall clock", p.Step, p.Wall)
			}
			got := map[string]int{}
			for _, o := range p.Kernels {
				got[o.Label] = o.Dispatches
			}
			if !maps.Equal(got, want) {
				t.Fatalf("the profile's variants and dispatches %v, the step's %v", got, want)
			}
			// The last list run left out the last variant: steps times the rest.
			last := p.Kernels[len(p.Kernels)-1]
			ran := map[string]int{}
			for _, l := range d.last {
				ran[l]++
			}
			for l, n := range want {
				if l == last.Label {
					n = 0
				}
				if ran[l] != steps*n {
					t.Errorf("the list without %s ran %s %d times, want %d", last.Label, l, ran[l], steps*n)
				}
			}
		})
	}
}
