// Package engine runs wick models: it loads a model directory, picks a
// backend (the CPU reference or WebGPU), and holds conversations (sessions)
// whose KV cache lives between turns.
package engine

import (
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/sample"
)

// Sequence is one sequence's KV cache on a backend, and the forward pass
// over it. Positions are absolute: Forward(tokens, start, ...) reads the KV
// of positions before start and writes the KV of start..start+len(tokens)-1.
type Sequence interface {
	// Forward runs tokens at positions start.. and writes the final logits of
	// the last token (len(logits) == Vocab) or of every token
	// (len(logits) == len(tokens)*Vocab).
	Forward(tokens []int32, start int, logits []float32) error
	// Context is the most positions the sequence can hold.
	Context() int
	// Close frees the sequence's KV cache.
	Close() error
}

// Backend computes forward passes of one loaded model.
type Backend interface {
	// Name says which backend and device this is, for notices and benchmarks.
	Name() string
	// NewSequence allocates a KV cache for context positions.
	NewSequence(context int) (Sequence, error)
	Close() error
}

// Snapshotter is a Sequence whose KV can be copied out and loaded back: what
// the prefix cache (engine/prefix) and saved conversations need. It is
// optional: a sequence without it still runs, and its sessions neither use
// the cache nor save their KV (they re-prefill instead).
//
// Snapshots are host memory in the backend-independent form of kv.Snapshot,
// so a backend whose arena lives elsewhere (a GPU buffer) reads back the
// regions' bytes into a kv.Arena of the same kv.Layout and calls its Capture,
// and for Restore calls the kv.Arena's Restore and writes the bytes back. A
// snapshot is small: each global producer's positions, each local
// producer's last window of them, nothing for consumers. Sessions call
// these between Forward calls, never during one. engine/cpu.Sequence
// implements it; engine/kv's tests state what any implementation must
// give: restoring a prefix and forwarding the rest yields the logits of
// prefilling everything.
type Snapshotter interface {
	// Snapshot copies the KV of positions [from, to) out of the sequence.
	// to is usually the end of the last Forward or Restore: a local
	// layer's ring holds only the last window positions written, so a
	// range it no longer holds (kv.Layout.CanCapture) is refused with an
	// error.
	Snapshot(from, to int) (*kv.Snapshot, error)
	// Snapshots copies several ranges out at once, each as Snapshot would,
	// byte for byte: what a prefill step that completed several prefix
	// cache blocks hands the cache. A backend whose KV lives on a device
	// reads them all back in one round trip. If any range is refused,
	// none is taken.
	Snapshots(spans []kv.Span) ([]*kv.Snapshot, error)
	// Restore loads the KV of positions [0, n) from parts, which cover
	// [0, n) contiguously in order (one snapshot from 0, or a chain of
	// prefix cache blocks); the next Forward starts at n. Parts that do
	// not fit the sequence (another model's, or more than its context) are
	// refused with an error before anything is written.
	Restore(parts []*kv.Snapshot) error
}

// SnapshotStarter is a Snapshotter whose snapshots can be started without
// waiting for them: a backend whose KV lives on a device queues the copies
// (ordered after the work that wrote the KV, before any that follows) and
// hands the bytes over later. Sessions use it for the prefix cache's
// blocks, so that a prompt's first token waits only for its logits, not
// for megabytes of KV read back for the cache (a 512-token step of a
// Gemma-3-1B shape: 6.9 MB beside 1 MB of logits). It is optional.
type SnapshotStarter interface {
	// StartSnapshots takes the snapshots of spans as Snapshots would, and
	// calls done with them (or with the error that refused or lost them)
	// no later than the next FinishSnapshots: often earlier, inside the
	// sequence's next wait for its device. A snapshot already started and
	// not yet done is finished first. done must not call the sequence.
	StartSnapshots(spans []kv.Span, done func([]*kv.Snapshot, error)) error
	// FinishSnapshots waits for the snapshots started and not yet done,
	// and calls their done. With none outstanding it returns at once,
	// without touching the device.
	FinishSnapshots() error
}

// KVFiller is a Sequence that can run tokens for their KV alone: no
// logits computed, nothing read back, nothing waited for. A session reads
// a long prompt's steps before its last with it, so the device runs them
// back to back instead of idling through a readback of logits nobody
// reads (a megabyte each for a 262k vocabulary). It is optional.
type KVFiller interface {
	// Fill runs tokens at positions start.. as Forward does, without
	// logits. Errors of the device's work may surface only in a later
	// call that waits for it.
	Fill(tokens []int32, start int) error
}

// GreedyDecoder is a Sequence that takes the argmax of each step's logits
// on its device, where they are: what greedy decoding (sample.Params with
// Temperature 0 and no repetition penalty) needs instead of a readback of
// the whole logits per token. Each pick stays on the device and feeds the
// next step's embedding, so steps are submitted back to back and the ids
// come back in one readback at the end. It is optional, like Snapshotter:
// sessions use it when it is there and the reply is greedy, and decode
// through Forward otherwise. engine/webgpu.Sequence implements it.
//
// A session runs a few steps per call and checks the picks for a stop
// token afterwards, so it may run up to steps-1 positions past the end of
// the reply. Those positions are then not counted as the sequence's KV:
// the next Forward rewrites them. The session keeps that within what
// kv.Layout.CanRewind allows, and never runs past a prefix cache block
// boundary before that block's snapshot is taken (see kv.Layout.CanCapture).
type GreedyDecoder interface {
	// Greedy runs token at position start, then each of its own picks at
	// the positions after it, steps forwards in all, and returns the steps
	// picks: ids[i] is the argmax of the logits of position start+i, the
	// lowest id among equals (as sample.Greedy picks). The last pick has
	// not run. The KV of positions start..start+steps-1 is written, and
	// the positions before start are read as in Forward.
	Greedy(token int32, start, steps int) ([]int32, error)
}

// SampleDecoder is GreedyDecoder for sampled replies: the device draws each
// step's token as a sample.Sampler draws it from the same logits, so
// replies with a temperature, top-k, top-p or a repetition penalty also
// decode in batches with one readback. Sessions use it as they use
// GreedyDecoder, under the same rules for positions run past the reply.
// engine/webgpu.Sequence implements it.
//
// Devices compute in float32 where engine/sample computes in float64: a
// pick may differ where a draw falls within float32 rounding of the
// boundary between two tokens (engine/webgpu measures how rarely).
type SampleDecoder interface {
	// Sample runs token at position start, then each of its own picks,
	// steps forwards in all, like Greedy. Pick i is drawn with p at step
	// step+i of p.Seed's random stream, with history (the tokens before
	// the pick's position) and the picks before i as the history.
	Sample(token int32, start, steps int, p sample.Params, step uint32, history []int32) ([]int32, error)
}

// BatchPipeliner is a GreedyDecoder or SampleDecoder whose batches can be
// submitted ahead: a session submits the next batch, which goes on from
// the picks of the batch in flight, before it waits for those picks, so the
// device runs it while the host takes this batch's picks and streams them.
// A browser's round trip (mapAsync, back to the event loop, into the module
// again) and its encoding of the next command list then overlap the GPU's
// work instead of adding to it. engine/webgpu.Sequence implements it.
//
// Any pick of the batch in flight may be a stop token, so the batch after
// it may run past the reply: a session submits ahead only where the layout
// can take back both batches (kv.Layout.CanRewind), which also leaves a
// prefix cache block that the first completes capturable after the second
// has run (kv.Layout.CanCapture).
type BatchPipeliner interface {
	// SubmitBatch submits a batch as Greedy (p greedy: temperature 0, no
	// repetition penalty) or Sample would run it and returns without its
	// picks; CollectBatch returns them. With b.Continues the batch's token
	// is the last pick of the batch submitted before it, still on the
	// device, at b.Start (the position after that batch's last), and its
	// draws go on from that batch's step and history (b.Token, b.Step and
	// b.History are ignored), so b.Params must be that batch's. At most two
	// batches are in flight.
	SubmitBatch(b Batch) error
	// CollectBatch waits for the oldest batch submitted and not collected,
	// and returns its picks.
	CollectBatch() ([]int32, error)
}

// Batch is one batch of decode steps for BatchPipeliner: the arguments of
// Greedy or Sample.
type Batch struct {
	Token        int32
	Start, Steps int
	Params       sample.Params
	Step         uint32
	History      []int32
	Continues    bool
}

// FirstPicker is a Sequence that draws the token after a prompt on its
// device, from the logits its last step leaves there: one id comes back
// instead of the whole logits row (a megabyte at a 262k vocabulary) and the
// host's sampler over it (tens of milliseconds of a browser's first token
// at the page's defaults). Sessions use it for the first token of replies
// that decode on the device anyway (a GreedyDecoder's greedy replies, a
// SampleDecoder's sampled ones), so the whole reply is drawn by one
// sampler. engine/webgpu.Sequence implements it.
type FirstPicker interface {
	// ForwardPick runs tokens at positions start.. as Forward does and
	// returns the token drawn after the last of them: with p greedy
	// (temperature 0, no repetition penalty) the argmax, the lowest id
	// among equals, else p's draw at step step of p.Seed's random stream
	// with history (the tokens before the pick's position) as
	// SampleDecoder draws it. No logits come back.
	ForwardPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) (int32, error)
}

// PickSubmitter is a FirstPicker and BatchPipeliner whose prompt pick is
// submitted like a decode batch: the reply's first batch then continues
// it (Batch.Continues) and is submitted before the first token is back, so
// the device runs it while the host takes the token, as it runs every
// later batch while the host takes the picks before it (a browser's round
// trip and the first batch's encoding, ~5 ms of a 1B reply on an H200,
// no longer idle the GPU once a reply). engine/webgpu.Sequence implements
// it.
type PickSubmitter interface {
	FirstPicker
	BatchPipeliner
	// SubmitPick submits ForwardPick's work (the forward of tokens at
	// start.. and the draw after the last of them) as a batch of one pick
	// and returns without it; CollectBatch returns it.
	SubmitPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) error
}

// PrefillStepper is a Sequence that says how many tokens a prompt's
// Forward should take at a time when its reading is reported (and can be
// cancelled) step by step: a GPU forwards a step of hundreds of tokens as
// one command list, where a CPU backend would go minutes between reports.
// Sequences without it step by prefillChunk tokens.
type PrefillStepper interface {
	// PrefillStep is the tokens of one step, at least 1.
	PrefillStep() int
}
