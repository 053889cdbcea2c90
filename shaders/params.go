package shaders

import (
	"encoding/binary"
	"fmt"
)

// The Go side of every uniform block: one struct per WGSL struct of the
// same name, field for field (TestParamsMatchWGSL checks sizes and
// offsets). Only 4-byte scalars, so the layout is the order of the fields.

// Step mirrors common.wgsl's Step.
type Step struct {
	Start, N, First, Pad uint32
}

// QuantParams mirrors quant.wgsl.
type QuantParams struct {
	Cols, RowsPerToken, DstWord, ScaleWord uint32
}

// MatmulParams mirrors matmul.wgsl.
type MatmulParams struct {
	Rows, Cols, WScaleWord, XScaleWord, OutRow, OutStride, FromFirst uint32
	Softcap                                                          float32
}

// NormParams mirrors norm.wgsl.
type NormParams struct {
	Cols, OnePlus uint32
	Eps           float32
	Norm          uint32
}

// RopeParams mirrors rope.wgsl.
type RopeParams struct {
	Heads, HeadDim, Norm, OnePlus uint32
	Eps                           float32
	Table, Pad0, Pad1             uint32
}

// QKVParams mirrors rope.wgsl's qkv_prep parameters.
type QKVParams struct {
	Heads, KVHeads, HeadDim, Stride uint32
	Norm, OnePlus                   uint32
	Eps                             float32
	Table, QNorm, KNorm             uint32
	KWord, KSWord, VWord, VSWord    uint32
	Bias, BiasWord                  uint32
	RotHalf, Pad0, Pad1, Pad2       uint32
}

// ActParams mirrors act.wgsl.
type ActParams struct {
	Cols, Pad0, Pad1, Pad2 uint32
}

// GatedParams mirrors act.wgsl's gated_quant parameters.
type GatedParams struct {
	Cols, ScaleWord, Pad0, Pad1 uint32
}

// PrenormParams mirrors prenorm.wgsl.
type PrenormParams struct {
	Cols, OnePlus uint32
	Eps           float32
	Add, PostNorm uint32
	ScaleWord     uint32
	AWord         uint32
	AOutWord      uint32
}

// EmbedParams mirrors embed.wgsl.
type EmbedParams struct {
	Cols, RowLo, Rows, ScaleWord uint32
	Scale                        float32
	Pad0, Pad1, Pad2             uint32
}

// AttnParams mirrors attn.wgsl.
type AttnParams struct {
	Heads, KVHeads, Window, Slots, Ring uint32
	Scale                               float32
	Splits, Tile                        uint32
	KWord, VWord, KSWord, VSWord        uint32
	CKWord, CVWord, CKSWord, CVSWord    uint32
	OutScaleWord                        uint32
	Softcap                             float32
	Norm, OnePlus                       uint32
	Eps                                 float32
	Table, QNorm, KNorm, PrepKV         uint32
	Bias, BiasWord, RotHalf             uint32
}

// GemvParams mirrors gemv.wgsl's parameters of the variants with a
// prologue or an epilogue: MatmulParams, then theirs.
type GemvParams struct {
	Rows, Cols, WScaleWord, XScaleWord, OutRow, OutStride, FromFirst uint32
	Softcap                                                          float32
	OnePlus                                                          uint32
	Eps                                                              float32
	Add, PostNorm, AWord, AOutWord, G1Word, G2Word, HScaleWord       uint32
	MaxWord                                                          uint32 // the gated epilogue's and QUANT_IN's max |h| words
	Pad1, Pad2                                                       uint32
}

// StreamParams mirrors stream.wgsl.
type StreamParams struct {
	Vecs, Magic, Pad0, Pad1 uint32
}

// ArgmaxParams mirrors sample.wgsl.
type ArgmaxParams struct {
	Cols, OutWord, Block, Pad1 uint32
}

// Bytes encodes a params struct as its uniform buffer bytes.
func Bytes(v any) []byte {
	b, err := binary.Append(nil, binary.LittleEndian, v)
	if err != nil {
		panic(fmt.Sprintf("shaders: %T is not a fixed-size params struct: %v", v, err))
	}
	return b
}
