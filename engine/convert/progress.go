package convert

import (
	"github.com/wick-run/wick/engine/model"
)

// Progress is how far a conversion has come, for a person waiting on it
// (the page's import shows it).
type Progress struct {
	Tensors      int   `json:"tensors"`       // wick tensors written, of
	TotalTensors int   `json:"total_tensors"` // the model's (a matrix's scales count with it)
	Bytes        int64 `json:"bytes"`         // bytes of tensor data written, of
	TotalBytes   int64 `json:"total_bytes"`   // the converted model's
}

// meter counts a conversion's progress and reports it to Options.Progress,
// whose error (a cancellation) ends the conversion.
type meter struct {
	p      Progress
	report func(Progress) error
}

// newMeter sizes the conversion of cfg's tensors.
func newMeter(cfg *model.Config, report func(Progress) error) *meter {
	m := &meter{report: report}
	for _, spec := range cfg.TensorSpecs() {
		m.p.TotalTensors++
		m.p.TotalBytes += specBytes(spec, cfg.DType)
	}
	return m
}

// specBytes is the bytes spec converts to: float32 norms, and matrices of
// dtype (int8 with a float32 scale a row).
func specBytes(spec model.TensorSpec, dtype model.DType) int64 {
	n := int64(max(specRows(spec), 1)) * int64(spec.Cols)
	if spec.Role == model.RoleNorm || dtype == model.F32 {
		return 4 * n
	}
	return n + 4*int64(max(specRows(spec), 1))
}

// wrote adds n bytes of data written, and a finished tensor when done.
func (m *meter) wrote(n int64, done bool) error {
	if m == nil {
		return nil
	}
	m.p.Bytes += n
	if done {
		m.p.Tensors++
	}
	if m.report == nil {
		return nil
	}
	return m.report(m.p)
}
