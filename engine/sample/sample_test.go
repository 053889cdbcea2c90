package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// newSampler is NewSampler for params the test means to be valid.
func newSampler(t *testing.T, p Params) *Sampler {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewSampler(p)
}

func randomLogits(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 3)
	}
	return x
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name string
		p    Params
		want string // "" means valid
	}{
		{"zero is greedy", Params{}, ""},
		{"typical", Params{Temperature: 0.8, TopP: 0.95, TopK: 40, RepetitionPenalty: 1.1, Seed: 7}, ""},
		{"top-p one", Params{Temperature: 1, TopP: 1}, ""},
		{"penalty below one", Params{Temperature: 1, RepetitionPenalty: 0.5}, ""},
		{"negative temperature", Params{Temperature: -0.1}, "temperature"},
		{"NaN temperature", Params{Temperature: nan}, "temperature"},
		{"infinite temperature", Params{Temperature: inf}, "temperature"},
		{"top-p above one", Params{TopP: 1.01}, "top-p"},
		{"negative top-p", Params{TopP: -0.5}, "top-p"},
		{"NaN top-p", Params{TopP: nan}, "top-p"},
		{"negative top-k", Params{TopK: -1}, "top-k"},
		{"negative penalty", Params{RepetitionPenalty: -1}, "repetition penalty"},
		{"NaN penalty", Params{RepetitionPenalty: nan}, "repetition penalty"},
		{"every error reported", Params{Temperature: -1, TopP: 2}, "top-p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error about %s", err, tt.want)
			}
			// NewSampler turns the bad steps off instead: it must still
			// return a token of the vocabulary.
			s := NewSampler(tt.p)
			for range 20 {
				if id := s.Sample([]float32{1, 3, 2}, []int32{1}); id < 0 || id > 2 {
					t.Fatalf("Sample with %+v = %d", tt.p, id)
				}
			}
		})
	}
}

func TestGreedy(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"empty", nil, -1},
		{"one", []float32{-3}, 0},
		{"argmax", []float32{0.1, 2, -5, 1.9}, 1},
		{"ties to the lowest id", []float32{1, 3, 0, 3, 3}, 1},
		{"all negative", []float32{-4, -2, -3}, 1},
		{"NaN skipped", []float32{nan, 1, nan, 2}, 3},
		{"all NaN", []float32{nan, nan}, 0},
		{"infinity", []float32{1, inf, inf}, 1},
		{"all -Inf", []float32{-inf, -inf}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Greedy(tt.logits); got != tt.want {
				t.Errorf("Greedy(%v) = %d, want %d", tt.logits, got, tt.want)
			}
			s := newSampler(t, Params{})
			if got := s.Sample(tt.logits, nil); got != tt.want {
				t.Errorf("Sample at temperature 0 = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestGreedyWithoutCopy checks that a greedy Sample, which skips the copy
// of the logits, picks what Greedy picks of the copy penalise makes: NaN
// as -Inf, +Inf as the largest float32 (so an +Inf after a largest finite
// logit does not win), the lowest id among equals.
func TestGreedyWithoutCopy(t *testing.T) {
	nan, inf, big := float32(math.NaN()), float32(math.Inf(1)), float32(math.MaxFloat32)
	rng := rand.New(rand.NewPCG(3, 4))
	cases := [][]float32{{big, inf}, {nan, -inf}, {-inf, nan, -inf}, {nan}, {2, nan, 2}}
	for range 200 {
		x := randomLogits(rng, 1+rng.IntN(40))
		for range rng.IntN(4) {
			x[rng.IntN(len(x))] = []float32{nan, inf, -inf, big, x[0]}[rng.IntN(5)]
		}
		cases = append(cases, x)
	}
	for _, x := range cases {
		for _, r := range []float32{0, 1} {
			s := newSampler(t, Params{RepetitionPenalty: r})
			want := Greedy(s.penalise(x, nil))
			if got := s.Sample(x, nil); got != want {
				t.Fatalf("Sample(%v) at temperature 0, penalty %v = %d; Greedy of the cleaned copy = %d", x, r, got, want)
			}
		}
	}
}

// TestArgmax tells the parameters that draw the argmax of the logits as
// they are (which sessions leave to a device's argmax) from the rest.
func TestArgmax(t *testing.T) {
	for _, tc := range []struct {
		p    Params
		want bool
	}{
		{Params{}, true},
		{Params{RepetitionPenalty: 1, TopK: 5, TopP: 0.5, Seed: 3}, true},
		{Params{Temperature: 0.8, TopP: 0.95}, false},
		{Params{RepetitionPenalty: 1.3}, false},
		{Params{Temperature: 1e-6}, false},
	} {
		if got := tc.p.Argmax(); got != tc.want {
			t.Errorf("%+v: Argmax %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestUniform pins the random stream, so that a GPU port can be checked
// against these values (computed independently with Python integers).
func TestUniform(t *testing.T) {
	tests := []struct {
		seed uint64
		step uint32
		hash uint32
		u    float32
	}{
		{0, 0, 0x7fddb461, 0.49947667121887207},
		{0, 1, 0xc9369417, 0.7859890460968018},
		{42, 0, 0xeeaf3bfd, 0.9323613047599792},
		{42, 7, 0x71dbd448, 0.4447605609893799},
		{0x123456789abcdef0, 1000, 0x030b87a1, 0.011894643306732178},
	}
	for _, tt := range tests {
		if got := Hash(tt.seed, tt.step); got != tt.hash {
			t.Errorf("Hash(%#x, %d) = %#08x, want %#08x", tt.seed, tt.step, got, tt.hash)
		}
		if got := Uniform(tt.seed, tt.step); got != tt.u {
			t.Errorf("Uniform(%#x, %d) = %v, want %v", tt.seed, tt.step, got, tt.u)
		}
	}

	// Consecutive steps must look independent and uniform: 64 bins over 2^16
	// steps, chi-squared with 63 degrees of freedom (mean 63, sd ~11.2).
	for _, seed := range []uint64{0, 1, 1 << 32, math.MaxUint64} {
		const steps, bins = 1 << 16, 64
		var count [bins]int
		for step := range uint32(steps) {
			u := Uniform(seed, step)
			if u < 0 || u >= 1 {
				t.Fatalf("Uniform(%d, %d) = %v, outside [0, 1)", seed, step, u)
			}
			count[int(u*bins)]++
		}
		var chi2 float64
		for _, c := range count {
			d := float64(c) - steps/bins
			chi2 += d * d / (steps / bins)
		}
		if chi2 > 63+6*11.2 {
			t.Errorf("seed %#x: chi-squared %.1f over %d bins", seed, chi2, bins)
		}
	}
}

func TestReproducible(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	logits := make([][]float32, 200)
	for i := range logits {
		logits[i] = randomLogits(rng, 50)
	}
	run := func(p Params) []int32 {
		s := newSampler(t, p)
		var out []int32
		for _, l := range logits {
			out = append(out, s.Sample(l, out))
		}
		return out
	}
	for _, p := range []Params{
		{Temperature: 1, Seed: 11},
		{Temperature: 0.7, TopK: 10, TopP: 0.9, RepetitionPenalty: 1.3, Seed: 11},
	} {
		a, b := run(p), run(p)
		if !slices.Equal(a, b) {
			t.Errorf("%+v: two runs differ:\n%v\n%v", p, a, b)
		}
		p.Seed++
		if c := run(p); slices.Equal(a, c) {
			t.Errorf("%+v: seeds %d and %d give the same tokens", p, p.Seed-1, p.Seed)
		}
	}
}

// TestDrawOrder pins step 6 of Sample: the kept ids are walked in ascending
// order, so with two equal logits id 0 comes out exactly when u < 1/2.
func TestDrawOrder(t *testing.T) {
	const seed = 99
	s := newSampler(t, Params{Temperature: 1, Seed: seed})
	for step := range uint32(100) {
		want := int32(1)
		if Uniform(seed, step) < 0.5 {
			want = 0
		}
		if got := s.Sample([]float32{0.25, 0.25}, nil); got != want {
			t.Fatalf("step %d: Sample = %d, want %d", step, got, want)
		}
	}
}

func TestTopKOneIsGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := newSampler(t, Params{Temperature: 1.5, TopK: 1, TopP: 0.9, RepetitionPenalty: 1.2, Seed: 1})
	g := newSampler(t, Params{RepetitionPenalty: 1.2})
	for i := range 500 {
		logits := randomLogits(rng, 40)
		if i%3 == 0 { // ties: the lowest id must win in both
			logits[7], logits[21] = 20, 20
		}
		history := []int32{int32(rng.IntN(40)), int32(rng.IntN(40))}
		if got, want := s.Sample(logits, history), g.Sample(logits, history); got != want {
			t.Fatalf("step %d: top-k 1 gave %d, greedy %d", i, got, want)
		}
	}
}

// softmax returns the probabilities of logits at temperature temp.
func softmax(logits []float64, temp float64) []float64 {
	m := slices.Max(logits)
	p := make([]float64, len(logits))
	var sum float64
	for i, l := range logits {
		p[i] = math.Exp((l - m) / temp)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// TestFrequencies draws many tokens and checks each id's count against its
// expected probability, within 5 standard deviations of the binomial.
func TestFrequencies(t *testing.T) {
	logits := []float32{1, 2, 0.5, -1, 3, 2}
	l64 := make([]float64, len(logits))
	for i, v := range logits {
		l64[i] = float64(v)
	}
	renorm := func(p []float64, keep ...int) []float64 {
		q := make([]float64, len(p))
		var sum float64
		for _, i := range keep {
			sum += p[i]
		}
		for _, i := range keep {
			q[i] = p[i] / sum
		}
		return q
	}
	p08 := softmax(l64, 0.8)
	tests := []struct {
		name    string
		p       Params
		history []int32
		want    []float64
	}{
		{"temperature 1", Params{Temperature: 1}, nil, softmax(l64, 1)},
		{"temperature 0.8", Params{Temperature: 0.8}, nil, p08},
		{"hot", Params{Temperature: 3}, nil, softmax(l64, 3)},
		// Ids 4, 1 and 5 are the three largest; 1 and 5 tie.
		{"top-k 3", Params{Temperature: 0.8, TopK: 3}, nil, renorm(p08, 4, 1, 5)},
		{"top-k 2 tie to lower id", Params{Temperature: 0.8, TopK: 2}, nil, renorm(p08, 4, 1)},
		// At 0.8: p(4) ~ 0.59, p(1) = p(5) ~ 0.17 each, so 0.8 needs ids 4, 1, 5.
		{"top-p 0.8", Params{Temperature: 0.8, TopP: 0.8}, nil, renorm(p08, 4, 1, 5)},
		{"top-p 0.6", Params{Temperature: 0.8, TopP: 0.6}, nil, renorm(p08, 4, 1)},
		{"top-p below the first", Params{Temperature: 0.8, TopP: 0.1}, nil, renorm(p08, 4)},
		{"penalty", Params{Temperature: 1, RepetitionPenalty: 1.5}, []int32{4, 3, 4},
			softmax([]float64{1, 2, 0.5, -1.5, 2, 2}, 1)},
	}
	const n = 40000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t, Params{Seed: 2024, Temperature: tt.p.Temperature, TopK: tt.p.TopK, TopP: tt.p.TopP, RepetitionPenalty: tt.p.RepetitionPenalty})
			count := make([]int, len(logits))
			for range n {
				count[s.Sample(logits, tt.history)]++
			}
			for i, p := range tt.want {
				mean, sd := n*p, math.Sqrt(n*p*(1-p))
				if math.Abs(float64(count[i])-mean) > 5*sd+0.5 {
					t.Errorf("id %d drawn %d times in %d, want %.0f ± %.0f", i, count[i], n, mean, 5*sd)
				}
			}
		})
	}
}

func TestRepetitionPenalty(t *testing.T) {
	tests := []struct {
		name    string
		logits  []float32
		history []int32
		penalty float32
		want    int32
	}{
		{"positive logit divided", []float32{2, 1.5}, []int32{0}, 2, 1},
		{"negative logit multiplied", []float32{-1, -1.5}, []int32{0}, 2, 1},
		{"each id once", []float32{2, 0.9}, []int32{0, 0, 0}, 2, 0},
		{"off at 1", []float32{2, 1.5}, []int32{0}, 1, 0},
		{"off at 0", []float32{2, 1.5}, []int32{0}, 0, 0},
		{"below 1 favours repeats", []float32{1.5, 2}, []int32{0}, 0.5, 0},
		{"ids outside ignored", []float32{2, 1.5}, []int32{-1, 2, 1 << 20}, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t, Params{RepetitionPenalty: tt.penalty})
			if got := s.Sample(tt.logits, tt.history); got != tt.want {
				t.Errorf("Sample = %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("repeated ids less likely", func(t *testing.T) {
		logits := []float32{1, 1, 1, 1}
		plain := newSampler(t, Params{Temperature: 1, Seed: 5})
		penalised := newSampler(t, Params{Temperature: 1, RepetitionPenalty: 3, Seed: 5})
		var a, b int
		for range 4000 {
			if plain.Sample(logits, []int32{2}) == 2 {
				a++
			}
			if penalised.Sample(logits, []int32{2}) == 2 {
				b++
			}
		}
		// Expected: 1/4 of 4000 without, e^(1/3) / (3e + e^(1/3)) ~ 14% with.
		if b >= a*3/4 {
			t.Errorf("id 2 drawn %d times with the penalty, %d without", b, a)
		}
	})
}

func TestTopPNucleus(t *testing.T) {
	// Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1, given out of order.
	logits := make([]float32, 4)
	for i, p := range []float64{0.15, 0.5, 0.05, 0.3} {
		logits[i] = float32(math.Log(p))
	}
	tests := []struct {
		topP float32
		want []int32 // the nucleus, ascending
	}{
		{0.3, []int32{1}},
		{0.7, []int32{1, 3}},
		{0.8 - 1e-3, []int32{1, 3}},
		{0.9, []int32{0, 1, 3}},
		{0.99, []int32{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		s := newSampler(t, Params{Temperature: 1, TopP: tt.topP, Seed: 8})
		seen := map[int32]bool{}
		for range 2000 {
			seen[s.Sample(logits, nil)] = true
		}
		var got []int32
		for id := range seen {
			got = append(got, id)
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("top-p %v drew %v, want the nucleus %v", tt.topP, got, tt.want)
		}
	}

	t.Run("large vocabulary", func(t *testing.T) {
		// The nucleus ends in one bin of probabilities (Sampler.nucleus),
		// which alone is sorted: a peaked distribution puts a handful of ids
		// before it, a flat one most of the vocabulary in a few bins, equal
		// logits all in one (ties: the lower ids first), a long tail far
		// below the head the end in the tail's bins. Each must keep exactly
		// the nucleus computed by brute force, at Gemma's vocabulary too.
		rng := rand.New(rand.NewPCG(9, 10))
		for _, tc := range []struct {
			name   string
			n      int
			spread float64
			tail   float64 // logit of ids 10 on, plus noise; 0: no tail
		}{{"peaked", 5000, 8, 0}, {"normal", 5000, 2, 0}, {"flat", 5000, 0.01, 0}, {"equal", 5000, 0, 0}, {"long tail", 5000, 0.01, -7.5},
			{"gemma vocabulary, flat", 262144, 0.05, 0}, {"gemma vocabulary, normal", 262144, 3, 0}} {
			logits := make([]float32, tc.n)
			for i := range logits {
				logits[i] = float32(rng.NormFloat64() * tc.spread)
				if tc.tail != 0 && i >= 10 {
					logits[i] = float32(tc.tail + rng.NormFloat64()*0.01)
				}
			}
			l64 := make([]float64, len(logits))
			for i, v := range logits {
				l64[i] = float64(v)
			}
			p := softmax(l64, 1)
			order := make([]int32, len(p))
			for i := range order {
				order[i] = int32(i)
			}
			slices.SortStableFunc(order, func(a, b int32) int { return -cmpFloat(p[a], p[b]) })
			var want []int32
			for cum, i := 0.0, 0; cum < float64(float32(0.9)); i++ { // TopP is a float32
				cum += p[order[i]]
				want = append(want, order[i])
			}
			slices.Sort(want)
			s := newSampler(t, Params{Temperature: 1, TopP: 0.9})
			got := s.keep(logits, slices.Max(logits))
			if !slices.Equal(got, want) {
				t.Errorf("%s: kept %d ids, the nucleus has %d", tc.name, len(got), len(want))
			}
		}
	})
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestSampleEdges(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		logits []float32
		ok     func(int32) bool
	}{
		{"empty", nil, func(id int32) bool { return id == -1 }},
		{"all -Inf", []float32{-inf, -inf, -inf}, func(id int32) bool { return id == 0 }},
		{"+Inf wins", []float32{0, inf, 5}, func(id int32) bool { return id == 1 }},
		{"NaN never drawn", []float32{nan, 0, nan, 0}, func(id int32) bool { return id == 1 || id == 3 }},
		{"-Inf never drawn", []float32{-inf, 0, -inf}, func(id int32) bool { return id == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range []Params{{Temperature: 1}, {Temperature: 1, TopK: 2}, {Temperature: 1, TopP: 0.5}} {
				s := newSampler(t, p)
				for range 50 {
					if id := s.Sample(tt.logits, nil); !tt.ok(id) {
						t.Fatalf("%+v: Sample(%v) = %d", p, tt.logits, id)
					}
				}
			}
		})
	}
}

func TestLogitsUntouched(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	logits := randomLogits(rng, 100)
	logits[3] = float32(math.NaN())
	history := []int32{1, 2, 2, 50}
	keepL, keepH := slices.Clone(logits), slices.Clone(history)
	for _, p := range []Params{{RepetitionPenalty: 2}, {Temperature: 1, TopK: 5, TopP: 0.5, RepetitionPenalty: 2}} {
		s := newSampler(t, p)
		s.Sample(logits, history)
		for i := range logits {
			if math.Float32bits(logits[i]) != math.Float32bits(keepL[i]) {
				t.Fatalf("%+v: logit %d changed from %v to %v", p, i, keepL[i], logits[i])
			}
		}
		if !slices.Equal(history, keepH) {
			t.Fatalf("%+v: history changed", p)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	logits := randomLogits(rng, 262144)
	history := make([]int32, 2048)
	for i := range history {
		history[i] = int32(rng.IntN(len(logits)))
	}
	for _, bc := range []struct {
		name string
		p    Params
	}{
		{"greedy", Params{}},
		{"temperature", Params{Temperature: 0.8}},
		{"top-k 40", Params{Temperature: 0.8, TopK: 40, RepetitionPenalty: 1.1}},
		{"top-p 0.95", Params{Temperature: 0.8, TopP: 0.95, RepetitionPenalty: 1.1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := NewSampler(bc.p)
			for b.Loop() {
				s.Sample(logits, history)
			}
		})
	}
}
