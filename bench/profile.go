package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/webgpu"
)

// busyDevice times every command list it runs by pass while counting
// (gpu.ByPass), adding up how long the GPU was busy, so that a decode
// batch's GPU time can be set beside its wall clock: where they part, the
// GPU waits for the host to encode and submit.
type busyDevice struct {
	gpu.Device
	timer    gpu.Timer
	counting bool
	busy     uint64 // ns
	err      error
}

func (d *busyDevice) Run(cmds []byte) error {
	if !d.counting {
		return d.Device.Run(cmds)
	}
	return d.timer.RunTimed(cmds, gpu.ByPass, func(iv []gpu.Interval, err error) {
		if err != nil && d.err == nil {
			d.err = err
		}
		for _, x := range iv {
			d.busy += x.Nanos()
		}
	})
}

func (d *busyDevice) RunTimed(cmds []byte, by gpu.Timing, done func([]gpu.Interval, error)) error {
	return d.timer.RunTimed(cmds, by, done)
}

// profileTable sums a decode step's dispatch times by kernel variant,
// largest first, and says how they were measured.
func profileTable(name string, pos int, p webgpu.DecodeProfile) string {
	times := p.Kernels
	type sum struct {
		label   string
		count   int
		seconds float64
		grids   []string
	}
	var sums []*sum
	byLabel := map[string]*sum{}
	var total float64
	for _, t := range times {
		x := byLabel[t.Label]
		if x == nil {
			x = &sum{label: t.Label}
			byLabel[t.Label] = x
			sums = append(sums, x)
		}
		x.count++
		x.seconds += t.Seconds
		total += t.Seconds
		if g := fmt.Sprintf("%dx%dx%d", t.Grid[0], t.Grid[1], t.Grid[2]); !slices.Contains(x.grids, g) {
			x.grids = append(x.grids, g)
		}
	}
	slices.SortFunc(sums, func(a, b *sum) int { return cmp.Compare(b.seconds, a.seconds) })
	var sb strings.Builder
	if p.Timestamps {
		fmt.Fprintf(&sb, "\n%s: decode step at position %d, GPU timestamp queries (each dispatch in a compute pass of its own; medians of %d steps): "+
			"%d dispatches, %.0f us in kernels of a %.0f us step (%.0f tok/s if nothing else cost)\n",
			name, pos, p.Steps, len(times), total*1e6, p.StepSeconds*1e6, 1/total)
	} else {
		fmt.Fprintf(&sb, "\n%s: decode step at position %d, wall clock, each dispatch repeated alone (this device has no timestamp queries; "+
			"natively none: cogentcore/webgpu v0.23.0 has no compute-pass timestampWrites): %d dispatches, %.0f us (%.0f tok/s if nothing else cost)\n",
			name, pos, len(times), total*1e6, 1/total)
	}
	sb.WriteString("| kernel | dispatches | us per step | us each | share | grids |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, x := range sums {
		grids := strings.Join(x.grids, " ")
		if len(x.grids) > 3 {
			grids = strings.Join(x.grids[:3], " ") + " ..."
		}
		fmt.Fprintf(&sb, "| %s | %d | %.1f | %.2f | %.0f%% | %s |\n", x.label, x.count, x.seconds*1e6, x.seconds*1e6/float64(x.count), 100*x.seconds/total, grids)
	}
	return sb.String()
}

// omissionSteps is how many decode steps one command list of an omission
// profile holds: enough that a list's fixed costs (its submission, the
// wait) stay a small part of a step's time.
const omissionSteps = 16

// omissionTable lists what each kernel variant costs a decode step where
// it really runs (webgpu.Sequence.OmissionProfile), largest first.
func omissionTable(p webgpu.OmissionProfile) string {
	om := slices.Clone(p.Kernels)
	slices.SortFunc(om, func(a, b webgpu.Omission) int { return cmp.Compare(b.Seconds, a.Seconds) })
	var sb strings.Builder
	var sum float64
	for _, o := range om {
		sum += o.Seconds
	}
	how := "wall clock"
	if p.Timestamps {
		how = fmt.Sprintf("the GPU's busy time from timestamps at the passes' ends; wall clock %.0f us a step, the rest the GPU waiting for the host's encoding", p.Wall*1e6)
	}
	fmt.Fprintf(&sb, "\nthe same step by omission (%d steps in one compute pass, each variant's dispatches left out in turn; medians of %d runs; %s): "+
		"%.0f us a step; single omissions save %.0f us in all (they need not add up to the step: work overlaps)\n",
		omissionSteps, timedRuns, how, p.Step*1e6, sum*1e6)
	sb.WriteString("| kernel | dispatches | us per step | us each | share of step |\n| --- | --- | --- | --- | --- |\n")
	for _, o := range om {
		fmt.Fprintf(&sb, "| %s | %d | %.1f | %.2f | %.0f%% |\n", o.Label, o.Dispatches, o.Seconds*1e6, o.Seconds*1e6/float64(o.Dispatches), 100*o.Seconds/p.Step)
	}
	return sb.String()
}
