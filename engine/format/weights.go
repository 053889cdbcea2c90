package format

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// scaleSuffix names an int8 matrix's per-row scale tensor.
const scaleSuffix = ".scale"

// WriteModel writes a whole model to dir: every tensor of cfg.TensorSpecs
// (int8 matrices with a float32 "<name>.scale" tensor beside them), the
// tokenizer file at tokenizerPath ("" for none) and the manifest. A tied
// lm_head is not written; readers tie it again.
func WriteModel(dir, name string, cfg *model.Config, w *model.Weights, tokenizerPath string, chat *manifestpb.ChatTemplate, shardSize int64) error {
	if err := writeModel(dir, name, cfg, w, tokenizerPath, chat, shardSize); err != nil {
		return fmt.Errorf("write model %s: %w", dir, err)
	}
	return nil
}

func writeModel(dir, name string, cfg *model.Config, w *model.Weights, tokenizerPath string, chat *manifestpb.ChatTemplate, shardSize int64) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(w.Layers) != len(cfg.Layers) {
		return fmt.Errorf("weights have %d layers, config %d", len(w.Layers), len(cfg.Layers))
	}
	fw, err := newWriter(dir, shardSize)
	if err != nil {
		return err
	}
	defer fw.Abort()
	for _, spec := range cfg.TensorSpecs() {
		if err := writeTensor(fw, cfg, w, spec); err != nil {
			return err
		}
	}
	return fw.finishOrFail(name, cfg, tokenizerPath, chat)
}

func writeTensor(fw *Writer, cfg *model.Config, w *model.Weights, spec model.TensorSpec) error {
	mat, norm := w.Find(spec)
	switch {
	case norm != nil:
		return fw.addTensor(spec.Name, manifestpb.DType_DTYPE_F32, []int{spec.Cols}, f32Bytes(*norm), "")
	case mat == nil:
		return fmt.Errorf("tensor %q: model.Weights has no field for it", spec.Name)
	case mat.Rows != spec.Rows || mat.Cols != spec.Cols:
		return fmt.Errorf("tensor %q: weights are %dx%d, the config needs %dx%d", spec.Name, mat.Rows, mat.Cols, spec.Rows, spec.Cols)
	case cfg.DType == model.F32:
		return fw.addTensor(spec.Name, manifestpb.DType_DTYPE_F32, []int{spec.Rows, spec.Cols}, f32Bytes(mat.F32), "")
	}
	scale := spec.Name + scaleSuffix
	if err := fw.addTensor(spec.Name, manifestpb.DType_DTYPE_INT8, []int{spec.Rows, spec.Cols}, i8Bytes(mat.I8), scale); err != nil {
		return err
	}
	return fw.addTensor(scale, manifestpb.DType_DTYPE_F32, []int{spec.Rows}, f32Bytes(mat.Scale), "")
}

// LoadWeights reads every tensor the config needs into model.Weights, with
// LMHead tied to Embed where the config says so. All shards it touches are
// checked.
func (m *Model) LoadWeights() (*model.Weights, error) {
	w := model.NewWeights(m.cfg)
	for _, spec := range m.cfg.TensorSpecs() {
		if err := m.loadTensor(w, spec); err != nil {
			return nil, err
		}
	}
	w.Tie(m.cfg)
	return w, nil
}

func (m *Model) loadTensor(w *model.Weights, spec model.TensorSpec) error {
	mat, norm := w.Find(spec)
	if mat == nil && norm == nil {
		return fmt.Errorf("load model %s: tensor %q: model.Weights has no field for it", m.dir, spec.Name)
	}
	data, err := m.ReadTensor(spec.Name)
	if err != nil {
		return err
	}
	if norm != nil || m.cfg.DType == model.F32 {
		if err := checkFinite(data); err != nil {
			return fmt.Errorf("load model %s: tensor %q: %w", m.dir, spec.Name, err)
		}
	}
	if norm != nil {
		*norm = f32s(data)
		return nil
	}
	mat.Rows, mat.Cols = spec.Rows, spec.Cols
	if m.cfg.DType == model.F32 {
		mat.F32 = f32s(data)
		return nil
	}
	mat.I8 = i8s(data)
	// The decoder made sure the scale tensor exists with shape [rows].
	scaleName := m.tensors[spec.Name].Scale
	scale, err := m.ReadTensor(scaleName)
	if err != nil {
		return err
	}
	if err := checkFinite(scale); err != nil {
		return fmt.Errorf("load model %s: tensor %q: %w", m.dir, scaleName, err)
	}
	mat.Scale = f32s(scale)
	return nil
}

// checkFinite refuses float32 data (little-endian) holding a NaN or an
// infinity: such a weight or scale turns every logit into NaN, and the model
// would answer empty text instead of failing. The browser trusts converted
// bytes by their sha256, which the converter's own check vouched for.
func checkFinite(data []byte) error {
	for i := 0; i+4 <= len(data); i += 4 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(data[i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("element %d is %v: weights and scales must be finite", i/4, v)
		}
	}
	return nil
}

// f32Bytes encodes v little-endian, the shard byte order on every host.
func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func i8Bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func i8s(b []byte) []int8 {
	v := make([]int8, len(b))
	for i, x := range b {
		v[i] = int8(x)
	}
	return v
}
