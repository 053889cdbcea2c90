package cpu

import (
	"math"
	"runtime"
	"sync"

	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
)

// The ops below are the reference for the GPU kernels: each WGSL kernel
// computes the same function and is tested against it.

// RMSNorm writes x / sqrt(mean(x^2) + eps) * w into out (w is used as 1+w
// when onePlus, as in Gemma). out may alias x.
func RMSNorm(out, x, w []float32, eps float32, onePlus bool) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / float32(math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i, v := range x {
		g := w[i]
		if onePlus {
			g += 1
		}
		out[i] = v * inv * g
	}
}

// Rope rotates each head of x (heads*headDim values) by the angles in cs
// (cos then sin of each rotated pair, see model.RopeCosSin); pairs are
// (i, i+len(cs)/2).
//
// cs holds the cos and sin halves of the rotated dimensions: len(cs) is the
// rotary dimension, and dimensions past it keep their values.
func Rope(x []float32, heads, headDim int, cs []float32) {
	half := len(cs) / 2
	for h := 0; h < heads; h++ {
		v := x[h*headDim : (h+1)*headDim]
		for i := 0; i < half; i++ {
			c, s := cs[i], cs[half+i]
			a, b := v[i], v[i+half]
			v[i] = a*c - b*s
			v[i+half] = b*c + a*s
		}
	}
}

// GeluTanh is gelu with the tanh approximation.
func GeluTanh(x float32) float32 {
	const k = 0.7978845608028654 // sqrt(2/pi)
	return 0.5 * x * (1 + float32(math.Tanh(float64(k*(x+0.044715*x*x*x)))))
}

// Silu is x * sigmoid(x).
func Silu(x float32) float32 { return x / (1 + float32(math.Exp(float64(-x)))) }

// GatedAct writes act(gate[i]) * up[i] into out.
func GatedAct(out, gate, up []float32, act model.Activation) {
	for i, g := range gate {
		if act == model.SwiGLU {
			out[i] = Silu(g) * up[i]
		} else {
			out[i] = GeluTanh(g) * up[i]
		}
	}
}

// Softcap writes c*tanh(x/c) into x in place.
func Softcap(x []float32, c float32) {
	for i, v := range x {
		x[i] = c * float32(math.Tanh(float64(v/c)))
	}
}

// Act holds one batch of matmul inputs: n rows of cols float32 values and,
// for int8 weights, their per-token quantised form.
type Act struct {
	N, Cols int
	X       []float32 // [N*Cols]
	Q       []int8    // [N*Cols], int8 mode
	Scale   []float32 // [N], int8 mode
}

// Quantize fills a.Q and a.Scale from a.X (per token, package quant's rule).
func (a *Act) Quantize() {
	for t := 0; t < a.N; t++ {
		a.Scale[t] = quant.Quantize(a.Q[t*a.Cols:(t+1)*a.Cols], a.X[t*a.Cols:(t+1)*a.Cols])
	}
}

// MatMul computes out[t*m.Rows+o] = (m x_t)[o] for every token t of a. In
// int8 mode a must be quantised (a.Quantize). Rows are split over the CPU's
// cores: for decode the weight streaming is what costs.
func MatMul(out []float32, m *model.Mat, a *Act) {
	parallelRows(m.Rows, m.Cols*a.N, func(lo, hi int) {
		for t := 0; t < a.N; t++ {
			o := out[t*m.Rows : (t+1)*m.Rows]
			if m.I8 != nil {
				x, xs := a.Q[t*a.Cols:(t+1)*a.Cols], a.Scale[t]
				for r := lo; r < hi; r++ {
					o[r] = quant.Rescale(quant.Dot(m.I8[r*m.Cols:(r+1)*m.Cols], x), xs, m.Scale[r])
				}
			} else {
				x := a.X[t*a.Cols : (t+1)*a.Cols]
				for r := lo; r < hi; r++ {
					o[r] = dotF32(m.F32[r*m.Cols:(r+1)*m.Cols], x)
				}
			}
		}
	})
}

func dotF32(a, b []float32) float32 {
	var s float32
	b = b[:len(a)]
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// EmbedRow writes row id of the embedding, dequantised and scaled, into out.
func EmbedRow(out []float32, m *model.Mat, id int, scale float32) {
	if m.I8 != nil {
		s := m.Scale[id]
		for i, q := range m.I8[id*m.Cols : (id+1)*m.Cols] {
			out[i] = float32(q) * s * scale
		}
		return
	}
	for i, v := range m.F32[id*m.Cols : (id+1)*m.Cols] {
		out[i] = v * scale
	}
}

// parallelRows splits [0,rows) over the cores when the work (about rows*work
// multiply-adds) is big enough to pay for goroutines.
func parallelRows(rows, work int, f func(lo, hi int)) {
	n := runtime.GOMAXPROCS(0)
	if n > rows {
		n = rows
	}
	if n <= 1 || rows*work < 1<<16 {
		f(0, rows)
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		lo, hi := rows*i/n, rows*(i+1)/n
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}
