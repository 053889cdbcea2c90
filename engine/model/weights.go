package model

import "fmt"

// Mat is a row-major matrix of Rows x Cols. In F32 mode F32 holds the
// values; in Int8 mode I8 holds them and Scale holds one float32 per row
// (see package quant). Matmuls compute y = M x with x of length Cols.
type Mat struct {
	Rows, Cols int
	F32        []float32 // [Rows*Cols], F32 mode
	I8         []int8    // [Rows*Cols], Int8 mode
	Scale      []float32 // [Rows], Int8 mode
}

// LayerWeights are one transformer block's tensors. Shapes are [rows, cols].
type LayerWeights struct {
	AttnNorm     []float32 // [Hidden] RMSNorm before attention
	WQ           Mat       // [QDim, Hidden]
	WK, WV       Mat       // [KVDim, Hidden]; producers only, empty on consumer layers
	QNorm, KNorm []float32 // [HeadDim] when QKNorm
	BQ           []float32 // [QDim] when QKVBias
	BK, BV       []float32 // [KVDim] when QKVBias, on producers
	WO           Mat       // [Hidden, QDim]
	PostAttnNorm []float32 // [Hidden] when PostAttnNorm
	FFNNorm      []float32 // [Hidden] RMSNorm before the FFN
	WGate, WUp   Mat       // [FFNHidden, Hidden]
	WDown        Mat       // [Hidden, FFNHidden]
	PostFFNNorm  []float32 // [Hidden] when PostFFNNorm
}

// Weights are all tensors of a model, in the dtype of its Config.
type Weights struct {
	Embed     Mat // [Vocab, Hidden]; gathered rows are dequantised then scaled by Config.Embedding()
	Layers    []LayerWeights
	FinalNorm []float32 // [Hidden]
	LMHead    Mat       // [Vocab, Hidden]; the same storage as Embed when TiedEmbedding
}

// TensorRole says how a tensor is stored: matrices follow the model's DType
// (int8 with a per-row scale, or float32), norm vectors are always float32.
type TensorRole int

const (
	RoleMatrix TensorRole = iota
	RoleNorm
)

// TensorSpec names one tensor a model of a Config must have, with its shape.
type TensorSpec struct {
	Name  string
	Rows  int // 1 for vectors
	Cols  int
	Role  TensorRole
	Layer int // -1 for tensors outside the blocks
}

// Tensor names; a block's tensors are prefixed "layers.N.".
const (
	NameEmbed        = "embed"
	NameFinalNorm    = "final_norm"
	NameLMHead       = "lm_head"
	NameAttnNorm     = "attn_norm"
	NameWQ           = "wq"
	NameWK           = "wk"
	NameWV           = "wv"
	NameQNorm        = "q_norm"
	NameKNorm        = "k_norm"
	NameBQ           = "bq"
	NameBK           = "bk"
	NameBV           = "bv"
	NameWO           = "wo"
	NamePostAttnNorm = "post_attn_norm"
	NameFFNNorm      = "ffn_norm"
	NameWGate        = "w_gate"
	NameWUp          = "w_up"
	NameWDown        = "w_down"
	NamePostFFNNorm  = "post_ffn_norm"
)

// LayerTensor is the full name of a block's tensor.
func LayerTensor(layer int, name string) string { return fmt.Sprintf("layers.%d.%s", layer, name) }

// TensorSpecs lists every tensor a model of c has, in file order.
func (c *Config) TensorSpecs() []TensorSpec {
	var s []TensorSpec
	mat := func(l int, name string, rows, cols int) {
		if l >= 0 {
			name = LayerTensor(l, name)
		}
		s = append(s, TensorSpec{Name: name, Rows: rows, Cols: cols, Role: RoleMatrix, Layer: l})
	}
	norm := func(l int, name string, n int) {
		if l >= 0 {
			name = LayerTensor(l, name)
		}
		s = append(s, TensorSpec{Name: name, Rows: 1, Cols: n, Role: RoleNorm, Layer: l})
	}
	mat(-1, NameEmbed, c.Vocab, c.Hidden)
	for l := range c.Layers {
		norm(l, NameAttnNorm, c.Hidden)
		mat(l, NameWQ, c.QDim(), c.Hidden)
		if c.Producer(l) {
			mat(l, NameWK, c.KVDim(), c.Hidden)
			mat(l, NameWV, c.KVDim(), c.Hidden)
		}
		if c.QKVBias {
			norm(l, NameBQ, c.QDim())
			if c.Producer(l) {
				norm(l, NameBK, c.KVDim())
				norm(l, NameBV, c.KVDim())
			}
		}
		if c.QKNorm {
			norm(l, NameQNorm, c.HeadDim)
			if c.Producer(l) {
				norm(l, NameKNorm, c.HeadDim)
			}
		}
		mat(l, NameWO, c.Hidden, c.QDim())
		if c.PostAttnNorm {
			norm(l, NamePostAttnNorm, c.Hidden)
		}
		norm(l, NameFFNNorm, c.Hidden)
		mat(l, NameWGate, c.FFNHidden, c.Hidden)
		mat(l, NameWUp, c.FFNHidden, c.Hidden)
		mat(l, NameWDown, c.Hidden, c.FFNHidden)
		if c.PostFFNNorm {
			norm(l, NamePostFFNNorm, c.Hidden)
		}
	}
	norm(-1, NameFinalNorm, c.Hidden)
	if !c.TiedEmbedding {
		mat(-1, NameLMHead, c.Vocab, c.Hidden)
	}
	return s
}

// Params counts the model's parameters (scales not included).
func (c *Config) Params() int64 {
	var n int64
	for _, t := range c.TensorSpecs() {
		n += int64(t.Rows) * int64(t.Cols)
	}
	return n
}

// Find returns the tensor of w named by spec: a *Mat or a *[]float32.
// It is how loaders and generators fill Weights by name without a switch
// of their own.
func (w *Weights) Find(spec TensorSpec) (mat *Mat, norm *[]float32) {
	if spec.Layer < 0 {
		switch spec.Name {
		case NameEmbed:
			return &w.Embed, nil
		case NameLMHead:
			return &w.LMHead, nil
		case NameFinalNorm:
			return nil, &w.FinalNorm
		}
		return nil, nil
	}
	l := &w.Layers[spec.Layer]
	switch spec.Name[len(LayerTensor(spec.Layer, "")):] {
	case NameAttnNorm:
		return nil, &l.AttnNorm
	case NameWQ:
		return &l.WQ, nil
	case NameWK:
		return &l.WK, nil
	case NameWV:
		return &l.WV, nil
	case NameQNorm:
		return nil, &l.QNorm
	case NameKNorm:
		return nil, &l.KNorm
	case NameBQ:
		return nil, &l.BQ
	case NameBK:
		return nil, &l.BK
	case NameBV:
		return nil, &l.BV
	case NameWO:
		return &l.WO, nil
	case NamePostAttnNorm:
		return nil, &l.PostAttnNorm
	case NameFFNNorm:
		return nil, &l.FFNNorm
	case NameWGate:
		return &l.WGate, nil
	case NameWUp:
		return &l.WUp, nil
	case NameWDown:
		return &l.WDown, nil
	case NamePostFFNNorm:
		return nil, &l.PostFFNNorm
	}
	return nil, nil
}

// NewWeights returns Weights with the layer slice sized for c and, when the
// embedding is tied, LMHead to be set by Tie after Embed is filled.
func NewWeights(c *Config) *Weights { return &Weights{Layers: make([]LayerWeights, len(c.Layers))} }

// Tie points LMHead at Embed when c ties them.
func (w *Weights) Tie(c *Config) {
	if c.TiedEmbedding {
		w.LMHead = w.Embed
	}
}

// ToF32 returns the float32 mode of an int8 model: the same config with
// DType F32 and every matrix dequantised (q * scale). Running it computes
// the model without activation or KV quantisation.
func ToF32(c *Config, w *Weights) (*Config, *Weights) {
	if c.DType == F32 {
		return c, w
	}
	fc := *c
	fc.Layers = append([]Layer(nil), c.Layers...)
	fc.DType = F32
	fw := NewWeights(&fc)
	for _, s := range c.TensorSpecs() {
		src, srcNorm := w.Find(s)
		dst, dstNorm := fw.Find(s)
		if srcNorm != nil {
			*dstNorm = *srcNorm
			continue
		}
		f := make([]float32, len(src.I8))
		for r := 0; r < src.Rows; r++ {
			for i, q := range src.I8[r*src.Cols : (r+1)*src.Cols] {
				f[r*src.Cols+i] = float32(q) * src.Scale[r]
			}
		}
		*dst = Mat{Rows: src.Rows, Cols: src.Cols, F32: f}
	}
	fw.Tie(&fc)
	return &fc, fw
}
