// Package engine runs wick models: it loads a model directory, picks a
// backend (the CPU reference or WebGPU), and holds conversations (sessions)
// whose KV cache lives between turns.
package engine

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
