package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRoundHalfToEven(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want int8
	}{
		{0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {-2.5, -2},
		{126.5, 126}, {127.49, 127}, {200, 127}, {-200, -127}, {-127.5, -127},
	} {
		if got := Round(c.in); got != c.want {
			t.Errorf("Round(%v) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := Round(float32(math.NaN())); got != 0 {
		t.Errorf("Round(NaN) = %d, want 0", got)
	}
}

// TestRoundTrip checks the documented error bound: |x - x'| <= scale/2 for
// every element, and the largest element maps to exactly ±127.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 17, 255, 1000} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(7)-3)))
		}
		q := make([]int8, n)
		s := Quantize(q, x)
		back := make([]float32, n)
		Dequantize(back, q, s)
		var maxQ int8
		for i := range x {
			if err := math.Abs(float64(x[i] - back[i])); err > float64(s)/2*(1+1e-6) {
				t.Fatalf("n=%d: |x-x'| = %g at %d, bound scale/2 = %g", n, err, i, s/2)
			}
			if q[i] == -128 {
				t.Fatalf("n=%d: -128 produced", n)
			}
			if a := max(q[i], -q[i]); a > maxQ {
				maxQ = a
			}
		}
		if maxQ != 127 {
			t.Errorf("n=%d: largest |q| = %d, want 127", n, maxQ)
		}
	}
	q := make([]int8, 4)
	if s := Quantize(q, make([]float32, 4)); s != 0 || q[0] != 0 {
		t.Errorf("zero row: scale %v q %v, want 0 and zeros", s, q)
	}
}

// TestW8A8AgainstFloat64 bounds the W8A8 matmul error against the exact
// float64 product: each element of x and w is off by at most half its
// scale, so |y - y64| <= sum_i (|w_i| sx/2 + |x_i| sw/2 + sx sw/4), plus
// float32 rounding of the final rescale.
func TestW8A8AgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 7, 64, 129, 1023} {
		x := make([]float32, n)
		w := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
			w[i] = float32(r.NormFloat64() * 0.05)
		}
		qx, qw := make([]int8, n), make([]int8, n)
		sx, sw := Quantize(qx, x), Quantize(qw, w)
		y := Rescale(Dot(qx, qw), sx, sw)
		var exact, bound float64
		for i := range x {
			exact += float64(x[i]) * float64(w[i])
			bound += math.Abs(float64(w[i]))*float64(sx)/2 + math.Abs(float64(x[i]))*float64(sw)/2 + float64(sx)*float64(sw)/4
		}
		bound += math.Abs(exact) * 1e-6
		if d := math.Abs(float64(y) - exact); d > bound {
			t.Errorf("n=%d: |y - exact| = %g, bound %g", n, d, bound)
		}
	}
}
