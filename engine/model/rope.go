package model

import "math"

// RopeFreqs returns the inverse frequencies of RoPE for a layer of the given
// kind: theta^(-2i/HeadDim) for i < HeadDim/2, with Llama 3's scaling when
// configured. Pairs are (i, i+HeadDim/2), the "rotate half" convention of
// Gemma and Llama checkpoints.
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
