// Package sample picks the next token from a model's logits: greedily, or by
// one reproducible random draw after repetition penalty, temperature, top-k
// and top-p.
//
// The random numbers come from a counter-based hash of the seed and the step
// (see Uniform) rather than from a generator with state, so that a GPU
// sampler can compute the same number for any step without the CPU, and a
// session can be replayed from its seed alone.
package sample

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// The sampling defaults of every wick front end: the chat page (web/store.js
// holds the same two), wick chat and gen, and the OpenAI-compatible API.
const (
	DefaultTemperature = 0.8
	DefaultTopP        = 0.95
)

// Defaults are the draw a reply gets where nothing is asked for; Seed is
// left to the caller.
func Defaults(seed uint64) Params {
	return Params{Temperature: DefaultTemperature, TopP: DefaultTopP, Seed: seed}
}

// Params configures sampling. The zero value is greedy decoding.
type Params struct {
	// Temperature divides the logits; 0 means greedy (argmax).
	Temperature float32
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches TopP, in (0, 1]; 0 or 1 keeps all.
	TopP float32
	// TopK keeps the TopK most likely tokens; 0 keeps all.
	TopK int
	// RepetitionPenalty above 1 makes tokens already in the history less
	// likely (CTRL, as in Hugging Face): 0 or 1 is off.
	RepetitionPenalty float32
	// Seed picks the random stream.
	Seed uint64
}

// Validate reports every parameter that is out of range, NaN or infinite.
func (p Params) Validate() error {
	var errs []error
	bad := func(v float32) bool { return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) }
	if bad(p.Temperature) || p.Temperature < 0 {
		errs = append(errs, fmt.Errorf("temperature %v: want a finite value >= 0", p.Temperature))
	}
	if bad(p.TopP) || p.TopP < 0 || p.TopP > 1 {
		errs = append(errs, fmt.Errorf("top-p %v: want 0 (off) to 1", p.TopP))
	}
	if p.TopK < 0 {
		errs = append(errs, fmt.Errorf("top-k %d: want 0 (off) or more", p.TopK))
	}
	if bad(p.RepetitionPenalty) || p.RepetitionPenalty < 0 {
		errs = append(errs, fmt.Errorf("repetition penalty %v: want 0 (off) or a finite value > 0", p.RepetitionPenalty))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid sampling parameters: %w", err)
	}
	return nil
}

// Argmax reports whether p draws the argmax of the logits as they are:
// temperature 0 and no repetition penalty (what Greedy picks, and a GPU can
// take where the logits are).
func (p Params) Argmax() bool {
	return p.Temperature == 0 && (p.RepetitionPenalty == 0 || p.RepetitionPenalty == 1)
}

// Greedy returns the index of the largest logit, the lowest index among
// equals. NaN logits are never chosen unless all are NaN (then 0); an empty
// slice gives -1.
func Greedy(logits []float32) int32 {
	if len(logits) == 0 {
		return -1
	}
	best := -1
	for i, v := range logits {
		if v == v && (best < 0 || v > logits[best]) { // v == v is false for NaN
			best = i
		}
	}
	return int32(max(best, 0))
}

// pcgHash is the PCG hash of Jarzynski and Olano, "Hash Functions for GPU
// Rendering" (JCGT 2020): one step of a 32-bit PCG generator followed by its
// RXS-M-XS output permutation. It is a bijection on uint32 built from 32-bit
// multiplies, adds, shifts and xors only, which WGSL has.
func pcgHash(v uint32) uint32 {
	state := v*747796405 + 2891336453
	word := ((state >> ((state >> 28) + 4)) ^ state) * 277803737
	return (word >> 22) ^ word
}

// Hash returns the random 32 bits for one step of the stream of seed:
//
//	h = pcg(pcg(pcg(seed_lo) + seed_hi) + step)
//
// where pcg is the PCG hash, seed_lo and seed_hi are the low and high 32 bits
// of seed, and all arithmetic wraps at 32 bits. The inner part depends only on
// the seed, so a GPU can receive it once and hash just the step.
func Hash(seed uint64, step uint32) uint32 {
	return pcgHash(pcgHash(pcgHash(uint32(seed))+uint32(seed>>32)) + step)
}

// Uniform returns the number in [0, 1) for one step of the stream of seed:
// the top 24 bits of Hash, times 2^-24. Every such value is exact in float32,
// so a WGSL port, f32(h >> 8u) * (1.0 / 16777216.0), gives the same bits.
func Uniform(seed uint64, step uint32) float32 {
	return float32(Hash(seed, step)>>8) * 0x1p-24
}

// Sampler draws tokens with fixed Params. Each call to Sample uses one step of
// the random stream, the first being step 0, so a Sampler made again with the
// same Params and given the same logits repeats its choices. A Sampler reuses
// its buffers between calls and is not safe for concurrent use.
type Sampler struct {
	p    Params
	step uint32    // wraps after 2^32 tokens, far beyond any context
	x    []float32 // the penalised logits: the caller's are never written
	prob []float64 // exp((x - max) / temperature), not normalised
	cand []int32   // candidate ids
	edge []int32   // top-p's ids in the bin where the nucleus ends
	bins []float64 // top-p's mass in each bin of probabilities
}

// NewSampler returns a Sampler for p. Check p with Validate first to report
// bad values to the user: here a value that Validate rejects is not an error
// but turns its step off (a bad temperature means greedy), so that a Sampler
// always returns a token from the vocabulary and never panics.
func NewSampler(p Params) *Sampler {
	bad := func(v float32) bool { return v != v || math.IsInf(float64(v), 0) || v < 0 }
	if bad(p.Temperature) {
		p.Temperature = 0
	}
	if bad(p.TopP) || p.TopP > 1 {
		p.TopP = 0
	}
	if p.TopK < 0 {
		p.TopK = 0
	}
	if bad(p.RepetitionPenalty) {
		p.RepetitionPenalty = 0
	}
	return &Sampler{p: p}
}

// Sample returns the next token for logits (one per vocabulary id) given the
// history of ids already in the context, or -1 when logits is empty. It does
// not modify logits or history. In order:
//
//  1. Logits are copied; NaN becomes -Inf and +Inf the largest float32, so
//     that neither poisons the softmax.
//  2. Repetition penalty: each distinct id in history (ids outside logits are
//     ignored) has its logit divided by the penalty if positive and multiplied
//     by it otherwise.
//  3. Temperature 0: the argmax (Greedy). Otherwise p = exp((x - max) / T).
//  4. Top-k keeps the k largest logits, the lower id first among equals.
//  5. Top-p sorts what is left by probability (then id) and keeps the
//     shortest head whose share of the kept mass reaches TopP, at least one.
//  6. One draw: with u = Uniform(Seed, step) and the kept ids walked in
//     ascending id order, the first id where the running sum of p exceeds
//     u times the kept total. Walking by id, not by probability, lets a GPU
//     draw with a prefix sum over a mask of kept ids, with no sort.
//
// If every logit is -Inf (or NaN), it returns 0 as Greedy does.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	step := s.step
	s.step++
	n := len(logits)
	if n == 0 {
		return -1
	}
	if s.p.Argmax() {
		// Steps 1 and 3 alone: no copy of the logits (a megabyte of a
		// 262k vocabulary, made for every reply's first token).
		return greedyClean(logits)
	}
	x := s.penalise(logits, history)
	if s.p.Temperature == 0 {
		return Greedy(x)
	}
	maxLogit := x[Greedy(x)]
	if math.IsInf(float64(maxLogit), -1) {
		return 0
	}

	cand := s.keep(x, maxLogit)
	u := float64(Uniform(s.p.Seed, step))
	if cand == nil {
		return draw(s.prob, u, func(yield func(int32) bool) {
			for i := range int32(n) {
				if !yield(i) {
					return
				}
			}
		})
	}
	return draw(s.prob, u, slices.Values(cand))
}

// keep sets s.prob to exp((x - maxLogit) / T) and applies top-k and top-p
// (steps 3 to 5 of Sample). It returns the kept ids in ascending order, or nil
// when every id is kept.
func (s *Sampler) keep(x []float32, maxLogit float32) []int32 {
	n := len(x)
	s.prob = grow(s.prob, n)
	prob := s.prob
	invT := 1 / float64(s.p.Temperature)
	var total float64
	for i, v := range x {
		prob[i] = math.Exp((float64(v) - float64(maxLogit)) * invT)
		total += prob[i]
	}

	// better orders ids by logit, the lower id first among equals; on the
	// probabilities it is the same order, since p grows with the logit.
	better := func(a, b int32) int {
		switch {
		case x[a] > x[b]:
			return -1
		case x[a] < x[b]:
			return 1
		}
		return int(a - b)
	}
	topK := s.p.TopK > 0 && s.p.TopK < n
	topP := s.p.TopP > 0 && s.p.TopP < 1
	var cand []int32
	switch {
	case topK:
		cand = s.topK(better, s.p.TopK, n)
		total = 0
		for _, id := range cand {
			total += prob[id]
		}
		if topP {
			// The shortest head of the sorted candidates with mass >= TopP * total.
			want, sum := float64(s.p.TopP)*total, 0.0
			for i, id := range cand {
				sum += prob[id]
				if sum >= want {
					cand = cand[:i+1]
					break
				}
			}
		}
	case topP:
		cand = s.nucleus(float64(s.p.TopP)*total, better)
	default:
		return nil
	}
	slices.Sort(cand)
	return cand
}

// Top-p's bins: a probability p in (0, 1] (the largest is 1) falls in bin
// (bits(1) - bits(p)) >> binShift of its float64 bits, so that a larger p
// never falls in a later bin and each bin is 1/64 of a binade wide (the
// exponent and the 6 leading mantissa bits); probabilities below 2^-64,
// zeros included, share the last bin.
const (
	binShift = 52 - 6
	numBins  = 64<<6 + 1
)

// nucleus returns, unsorted, the top-p nucleus of s.prob: the shortest
// head of the ids sorted by better (logit, then id) whose mass reaches
// want. Sorting a flat distribution's whole vocabulary (262k ids for Gemma)
// took 150 ms of Go in the browser's wasm, for every reply's first token at
// the page's defaults; instead one pass sums the mass of each bin of
// probabilities, every id of the bins before the one where the running
// mass reaches want is in the nucleus, and only that bin's ids are sorted.
// The head's mass is added bin by bin, then in sorted order within the
// last bin: another order than a sort of the whole head, which can move
// the boundary only where a sum lands within rounding of want.
func (s *Sampler) nucleus(want float64, better func(a, b int32) int) []int32 {
	s.bins = grow(s.bins, numBins)
	bins := s.bins
	clear(bins)
	one := math.Float64bits(1)
	bin := func(p float64) int {
		return int(min((one-math.Float64bits(p))>>binShift, numBins-1))
	}
	for _, p := range s.prob {
		bins[bin(p)] += p
	}
	last, sum := numBins-1, 0.0
	for b, m := range bins {
		if sum+m >= want {
			last = b
			break
		}
		sum += m
	}
	cand, edge := s.cand[:0], s.edge[:0]
	for i, p := range s.prob {
		switch b := bin(p); {
		case b < last:
			cand = append(cand, int32(i))
		case b == last:
			edge = append(edge, int32(i))
		}
	}
	slices.SortFunc(edge, better)
	for i, id := range edge {
		sum += s.prob[id]
		if sum >= want {
			edge = edge[:i+1]
			break
		}
	}
	cand = append(cand, edge...)
	s.cand, s.edge = cand, edge
	return cand
}

// penalise copies logits into s.x with the repetition penalty applied.
func (s *Sampler) penalise(logits []float32, history []int32) []float32 {
	s.x = grow(s.x, len(logits))
	x := s.x
	for i, v := range logits {
		x[i] = clean(v)
	}
	r := s.p.RepetitionPenalty
	if r == 0 || r == 1 {
		return x
	}
	for _, id := range history {
		if id < 0 || int(id) >= len(x) {
			continue
		}
		// Computed from the caller's logit, not from x, so that an id repeated
		// in the history is penalised once however often it occurs.
		v := clean(logits[id])
		if v < 0 {
			x[id] = v * r
		} else {
			x[id] = v / r
		}
	}
	return x
}

// greedyClean is Greedy of the logits as penalise copies them (clean), the
// lowest id among equals, without the copy.
func greedyClean(logits []float32) int32 {
	// One plain comparison per logit: NaN never compares greater, and
	// cleaning changes the order only where some logit is +Inf.
	best, top := -1, float32(math.Inf(-1))
	for i, v := range logits {
		if v > top {
			best, top = i, v
		}
	}
	switch {
	case best < 0: // every logit NaN or -Inf: all clean to -Inf
		return 0
	case math.IsInf(float64(top), 1):
		// +Inf cleans to the largest float32: the first logit that is
		// either wins.
		for i, v := range logits {
			if v >= math.MaxFloat32 {
				return int32(i)
			}
		}
	}
	return int32(best)
}

// clean maps NaN to -Inf and +Inf to the largest float32.
func clean(v float32) float32 {
	switch {
	case v != v:
		return float32(math.Inf(-1))
	case v > math.MaxFloat32:
		return math.MaxFloat32
	}
	return v
}

// topK returns the k best of ids 0 to n-1, best first. A heap of the best k seen so far,
// its worst at the root, keeps this O(n log k) for Gemma's 262k vocabulary.
func (s *Sampler) topK(better func(a, b int32) int, k, n int) []int32 {
	h := s.cand[:0]
	worse := func(i, j int) bool { return better(h[i], h[j]) > 0 }
	down := func(i int) {
		for {
			w, l, r := i, 2*i+1, 2*i+2
			if l < len(h) && worse(l, w) {
				w = l
			}
			if r < len(h) && worse(r, w) {
				w = r
			}
			if w == i {
				return
			}
			h[i], h[w] = h[w], h[i]
			i = w
		}
	}
	for id := range int32(n) {
		switch {
		case len(h) < k:
			h = append(h, id)
			for i := len(h) - 1; i > 0 && worse(i, (i-1)/2); i = (i - 1) / 2 {
				h[i], h[(i-1)/2] = h[(i-1)/2], h[i]
			}
		case better(id, h[0]) < 0:
			h[0] = id
			down(0)
		}
	}
	slices.SortFunc(h, better)
	s.cand = h
	return h
}

// draw returns the first id of ids at which the running sum of prob exceeds
// u times the sum over all of ids. The two sums add the same terms in the
// same order, so for u < 1 the walk ends inside ids; the last id with p > 0
// covers rounding anyway.
func draw(prob []float64, u float64, ids func(func(int32) bool)) int32 {
	var total float64
	for id := range ids {
		total += prob[id]
	}
	target := u * total
	var cum float64
	last := int32(0)
	for id := range ids {
		if prob[id] == 0 {
			continue
		}
		cum += prob[id]
		last = id
		if cum > target {
			return id
		}
	}
	return last
}

// grow returns s resized to n, reusing its array when large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
