package gpu

import (
	"encoding/binary"
	"fmt"
)

// FeatureTimestamps is the WebGPU feature that timed runs need.
const FeatureTimestamps = "timestamp-query"

// Timer is what a Device offers beside the core interface when it can time
// dispatches on the GPU with WebGPU timestamp queries (Dawn, in the Node
// host and through engine/gpu/dawn). It is optional, so that Device stays
// the small core every host implements: find it with TimerOf.
//
// The native device has none: cogentcore/webgpu v0.23.0 exposes no
// timestampWrites on compute passes, so profiles there are wall-clock.
type Timer interface {
	// RunTimed replays cmds as Run does, with timestamps at the beginning
	// and end of compute passes, as by says. Inside a later Poll, done
	// gets one Interval per dispatch (ByDispatch) or per pass (ByPass),
	// in the list's order.
	RunTimed(cmds []byte, by Timing, done func([]Interval, error)) error
}

// Timing is what a timed run times.
type Timing uint32

const (
	// ByDispatch gives each dispatch a compute pass of its own and times
	// it (passes then never overlap, as a step's dispatches do not): the
	// time of each kernel, plus a pass's fixed cost.
	ByDispatch Timing = 0
	// ByPass keeps the passes that Run makes (consecutive dispatches share
	// one) and times each: summed, how long the GPU was busy with the
	// list's dispatches, without the time it waited for the host to
	// encode and submit them.
	ByPass Timing = 1
)

// Interval is when one dispatch ran on the GPU: timestamps in nanoseconds
// on the device's clock (only differences mean anything).
type Interval struct{ Begin, End uint64 }

// Nanos is the interval's length; 0 when the GPU wrote an end before the
// beginning (WebGPU allows it where clocks are not monotonic).
func (iv Interval) Nanos() uint64 {
	if iv.End < iv.Begin {
		return 0
	}
	return iv.End - iv.Begin
}

// TimerOf returns d's Timer when it has one and d was created with
// timestamp queries (FeatureTimestamps in Info().Features).
func TimerOf(d Device) (Timer, bool) {
	t, ok := d.(Timer)
	if !ok || !d.Info().Has(FeatureTimestamps) {
		return nil, false
	}
	return t, true
}

// DecodeIntervals reads the bytes in which hosts hand timed runs back
// (wasm/ABI.md's run_timed, node/device.mjs): per dispatch, a little-endian
// u64 beginning and u64 end.
func DecodeIntervals(b []byte) ([]Interval, error) {
	if len(b)%16 != 0 {
		return nil, fmt.Errorf("timestamps: %d bytes is not whole (begin, end) pairs of u64", len(b))
	}
	out := make([]Interval, len(b)/16)
	for i := range out {
		out[i] = Interval{binary.LittleEndian.Uint64(b[16*i:]), binary.LittleEndian.Uint64(b[16*i+8:])}
	}
	return out, nil
}
