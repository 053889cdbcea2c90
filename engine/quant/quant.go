// Package quant pins wick's int8 arithmetic in one place. The CPU reference
// and every WGSL kernel compute exactly these formulas, so that int8 results
// agree bit for bit between backends.
//
// Symmetric int8 with one float32 scale per row (a weight's output channel, a
// token's activation vector, one KV head at one position):
//
//	scale = max|x| / 127                   (float32 division)
//	q     = clamp(roundHalfToEven(x / scale), -127, 127)
//	x'    = float32(q) * scale
//
// A row of zeros has scale 0 and q = 0. -128 is never produced, so negation
// never overflows and the range is symmetric.
//
// A W8A8 matmul accumulates int8 x int8 products in int32 and scales once:
//
//	y[o] = float32(acc[o]) * (xScale * wScale[o])
//
// with the product of the two scales rounded to float32 first. WGSL's round()
// rounds half to even; Go's math.Round does not, hence math.RoundToEven.
package quant

import "math"

// Scale returns the int8 scale of x: max|x| / 127.
func Scale(x []float32) float32 {
	var m float32
	for _, v := range x {
		if v < 0 {
			v = -v
		}
		if v > m {
			m = v
		}
	}
	return m / 127
}

// Quantize writes the int8 form of x into q (len(q) >= len(x)) and returns its scale.
func Quantize(q []int8, x []float32) float32 {
	s := Scale(x)
	if s == 0 {
		for i := range x {
			q[i] = 0
		}
		return 0
	}
	for i, v := range x {
		q[i] = Round(v / s)
	}
	return s
}

// Round rounds v half to even and clamps it to [-127, 127].
func Round(v float32) int8 {
	r := math.RoundToEven(float64(v))
	if r > 127 {
		r = 127
	} else if r < -127 {
		r = -127
	}
	if r != r { // NaN: the caller's scale was NaN; 0 keeps the row finite
		return 0
	}
	return int8(r)
}

// Dequantize writes float32(q[i]) * scale into x.
func Dequantize(x []float32, q []int8, scale float32) {
	for i, v := range q {
		x[i] = float32(v) * scale
	}
}

// Dot is the int32 dot product of two int8 vectors of equal length.
func Dot(a, b []int8) int32 {
	var acc int32
	b = b[:len(a)]
	for i, v := range a {
		acc += int32(v) * int32(b[i])
	}
	return acc
}

// Rescale turns an int32 accumulator into float32 with the W8A8 rule.
func Rescale(acc int32, xScale, wScale float32) float32 {
	s := xScale * wScale
	return float32(acc) * s
}
