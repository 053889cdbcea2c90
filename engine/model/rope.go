package model

import "math"

// Rope is the RoPE of one layer kind as every backend applies it: the
// inverse frequency of each rotated pair, which may change at a position
// (LongRoPE), and a factor on cos and sin. Backends build their cos|sin
// tables from it with CosSin, on the CPU, so they agree exactly.
type Rope struct {
	Freqs     []float64 // inverse frequencies below LongFrom
	LongFreqs []float64 // inverse frequencies from position LongFrom on; nil: Freqs everywhere
	LongFrom  int
	Scale     float64 // cos and sin are multiplied by this: 1, or LongRoPE's attention factor
}

// Rope returns the RoPE of layers of the given kind.
func (c *Config) Rope(kind AttnKind) Rope {
	r := Rope{Freqs: c.RopeFreqs(kind), Scale: 1}
	if l := &c.LongRope; l.On() {
		r.LongFreqs = make([]float64, len(r.Freqs))
		for i, f := range r.Freqs {
			r.Freqs[i] = f / l.ShortFactor[i]
			r.LongFreqs[i] = f / l.LongFactor[i]
		}
		r.LongFrom, r.Scale = l.OriginalContext, l.AttnFactor
	}
	return r
}

// CosSin writes Scale*cos then Scale*sin of pos times the frequencies in
// force at pos into dst (len 2*len(r.Freqs)).
//
// With LongRoPE, a position at or beyond LongFrom uses the long factors and
// one before it the short ones, whatever else is in the sequence. That is
// transformers' choice when it decodes one token at a time with a cache
// (it picks the factors by the longest position of each call, and keeps
// the keys it cached); it differs from transformers only where one call
// prefills a prompt that crosses LongFrom: transformers then rotates the
// whole prompt with the long factors. Rotating by position alone keeps
// every cached key valid as a conversation grows, which reusing KV needs.
func (r *Rope) CosSin(dst []float32, pos int) {
	f := r.Freqs
	if r.LongFreqs != nil && pos >= r.LongFrom {
		f = r.LongFreqs
	}
	n := len(f)
	for i := range f {
		s, c := math.Sincos(float64(pos) * f[i])
		dst[i], dst[n+i] = float32(c*r.Scale), float32(s*r.Scale)
	}
}

// RopeFreqs returns the inverse frequencies of RoPE for a layer of the given
// kind before any LongRoPE factors (Rope applies those): theta^(-2i/R) for
// i < R/2, R the rotated dimensions, with Llama 3's scaling when
// configured. Pairs are (i, i+R/2), the "rotate half" convention of Gemma
// and Llama checkpoints.
func (c *Config) RopeFreqs(kind AttnKind) []float64 {
	theta := c.RopeThetaGlobal
	if kind == Local {
		theta = c.RopeThetaLocal
	}
	rot := c.Rotary()
	f := make([]float64, rot/2)
	for i := range f {
		f[i] = math.Pow(theta, -float64(2*i)/float64(rot))
	}
	if rs := c.RopeScaling; rs.Factor != 0 {
		lowWave := float64(rs.OriginalContext) / rs.LowFreqFactor
		highWave := float64(rs.OriginalContext) / rs.HighFreqFactor
		for i, v := range f {
			wave := 2 * math.Pi / v
			switch {
			case wave < highWave: // high frequency: unchanged
			case wave > lowWave:
				f[i] = v / rs.Factor
			default:
				s := (float64(rs.OriginalContext)/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				f[i] = (1-s)*v/rs.Factor + s*v
			}
		}
	}
	return f
}

// RopeCosSin writes cos then sin of pos*freqs into dst (len 2*len(freqs)).
// Angles are computed in float64 and rounded once, on the CPU for every
// backend: GPU trigonometry is not accurate at large angles, and one table
// makes the backends agree exactly.
func RopeCosSin(dst []float32, freqs []float64, pos int) {
	n := len(freqs)
	for i, f := range freqs {
		s, c := math.Sincos(float64(pos) * f)
		dst[i], dst[n+i] = float32(c), float32(s)
	}
}
