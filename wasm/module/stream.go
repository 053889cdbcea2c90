//go:build wasip1

package main

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
)

// streamDevice loads a model onto the host's GPU without the weights ever
// entering the module's memory. engine/webgpu uploads a model.Weights
// through Device.Write; this device hands it placeholder weights whose
// words are markers naming (tensor, row), and while loading turns every
// write that carries markers into fills: requests that the host copy the
// right shard bytes into that buffer range itself. Markers make it
// independent of how webgpu splits, stacks and pads its weight buffers:
//
//   - int8 matrices: the values are one shared zero array (never written,
//     so it costs address space, not memory); each row's scale word is a
//     scale marker. The values of the rows whose scales a write carries
//     are taken to lie at the write's start, in the same order.
//   - float32 matrices: each row's first word is a row marker, the rest
//     zero (these placeholders do cost the matrix's size).
//   - norm vectors: every word is the vector's norm marker.
//
// A write during loading that mixes markers in any other way is an error,
// never silently zeros.
//
// TODO: a webgpu.New that takes a tensor source instead of Weights would
// make the markers unnecessary.
type streamDevice struct {
	*gpu.Imported
	f       *format.Model
	cfg     *model.Config
	tensors map[string]*manifestpb.Tensor
	mats    []model.TensorSpec // by marker index - 1
	norms   []model.TensorSpec // by marker index - 1
	filled  map[string]int64   // bytes filled per tensor, to check that all arrived
	loading bool
}

// Marker words: a 2-bit tag, a 10-bit tensor index (from 1) and a 20-bit
// row. Zero is never a marker.
const (
	tagScale = 1
	tagRow   = 2
	tagNorm  = 3
	maxIndex = 1<<10 - 1
	maxRow   = 1<<20 - 1
)

func marker(tag, index, row int) uint32 { return uint32(tag)<<30 | uint32(index)<<20 | uint32(row) }

func unmarker(w uint32) (tag, index, row int) {
	return int(w >> 30), int(w>>20) & maxIndex, int(w & maxRow)
}

// placeholders returns marked weights of cfg's shapes.
func (s *streamDevice) placeholders() (*model.Weights, error) {
	c := s.cfg
	s.tensors = map[string]*manifestpb.Tensor{}
	for _, t := range s.f.Manifest().GetTensors() {
		s.tensors[t.GetName()] = t
	}
	var maxElems int
	for _, sp := range c.TensorSpecs() {
		if sp.Role == model.RoleMatrix {
			maxElems = max(maxElems, sp.Rows*sp.Cols)
		}
	}
	var zeros []int8
	if c.DType == model.Int8 {
		zeros = make([]int8, maxElems)
	}
	w := model.NewWeights(c)
	for _, sp := range c.TensorSpecs() {
		mat, norm := w.Find(sp)
		switch {
		case norm != nil:
			s.norms = append(s.norms, sp)
			if len(s.norms) > maxIndex {
				return nil, fmt.Errorf("stream weights: more than %d norm vectors", maxIndex)
			}
			v := make([]float32, sp.Cols)
			for j := range v {
				v[j] = math.Float32frombits(marker(tagNorm, len(s.norms), 0))
			}
			*norm = v
		case mat != nil:
			s.mats = append(s.mats, sp)
			if len(s.mats) > maxIndex || sp.Rows > maxRow {
				return nil, fmt.Errorf("stream weights: tensor %s: more than %d matrices or %d rows", sp.Name, maxIndex, maxRow)
			}
			idx := len(s.mats)
			*mat = model.Mat{Rows: sp.Rows, Cols: sp.Cols}
			if c.DType == model.Int8 {
				mat.I8, mat.Scale = zeros[:sp.Rows*sp.Cols], make([]float32, sp.Rows)
				for r := range mat.Scale {
					mat.Scale[r] = math.Float32frombits(marker(tagScale, idx, r))
				}
			} else {
				mat.F32 = make([]float32, sp.Rows*sp.Cols)
				for r := 0; r < sp.Rows; r++ {
					mat.F32[r*sp.Cols] = math.Float32frombits(marker(tagRow, idx, r))
				}
			}
		}
	}
	w.Tie(c)
	s.filled = map[string]int64{}
	return w, nil
}

func (s *streamDevice) Write(b gpu.Buffer, offset int64, data []byte) error {
	if !s.loading {
		return s.Imported.Write(b, offset, data)
	}
	found, err := s.place(b, offset, data)
	if err != nil || found {
		return err
	}
	return s.Imported.Write(b, offset, data)
}

// place turns the markers of one write into fills; found is false when
// the write carries none.
func (s *streamDevice) place(b gpu.Buffer, offset int64, data []byte) (found bool, err error) {
	word := func(i int) uint32 { return binary.LittleEndian.Uint32(data[4*i:]) }
	n := len(data) / 4
	var values int64 // int8: where the next scale run's values go
	for i := 0; i < n; {
		w := word(i)
		if w == 0 {
			i++
			continue
		}
		found = true
		tag, idx, row := unmarker(w)
		var run int
		switch tag {
		case tagNorm:
			if idx < 1 || idx > len(s.norms) {
				return true, fmt.Errorf("stream weights: norm marker %d names no norm", idx)
			}
			sp := s.norms[idx-1]
			for run = 1; run < sp.Cols && i+run < n && word(i+run) == w; run++ {
			}
			if run != sp.Cols {
				return true, fmt.Errorf("stream weights: norm %s cut to %d of %d values", sp.Name, run, sp.Cols)
			}
			err = s.fillTensor(b, offset+int64(4*i), sp.Name, 0, int64(sp.Cols)*4)
		case tagScale, tagRow:
			if idx < 1 || idx > len(s.mats) {
				return true, fmt.Errorf("stream weights: matrix marker %d names no matrix", idx)
			}
			sp := s.mats[idx-1]
			stride := 1 // scales are consecutive words; float32 rows are cols words apart
			if tag == tagRow {
				stride = sp.Cols
			}
			for run = 1; row+run < sp.Rows && i+run*stride < n && word(i+run*stride) == marker(tag, idx, row+run); run++ {
			}
			cols := int64(sp.Cols)
			if tag == tagRow {
				err = s.fillTensor(b, offset+int64(4*i), sp.Name, int64(row)*cols*4, int64(run)*cols*4)
				run *= stride
				break
			}
			if values+int64(run)*cols > int64(4*i) {
				return true, fmt.Errorf("stream weights: the values of %s[%d:%d] do not fit before their scales", sp.Name, row, row+run)
			}
			if err = s.fillTensor(b, offset+values, sp.Name, int64(row)*cols, int64(run)*cols); err == nil {
				err = s.fillTensor(b, offset+int64(4*i), s.tensors[sp.Name].GetScale(), int64(row)*4, int64(run)*4)
			}
			values += int64(run) * cols
		default:
			return true, fmt.Errorf("stream weights: word %#x at byte %d of a weight write is no marker", w, 4*i)
		}
		if err != nil {
			return true, err
		}
		i += run
	}
	return found, nil
}

// check reports a tensor whose bytes did not all arrive.
func (s *streamDevice) check() error {
	for _, sp := range append(append([]model.TensorSpec(nil), s.mats...), s.norms...) {
		want := int64(sp.Rows) * int64(sp.Cols) * 4
		if sp.Role == model.RoleMatrix && s.cfg.DType == model.Int8 {
			want = int64(sp.Rows) * int64(sp.Cols)
		}
		if sp.Name == model.NameLMHead && s.cfg.TiedEmbedding {
			continue
		}
		if got := s.filled[sp.Name]; got < want {
			return fmt.Errorf("stream weights: %d of %d bytes of %s were placed", got, want, sp.Name)
		}
	}
	return nil
}

// fillTensor asks the host to copy n bytes of tensor name, from byte from
// on, into b at offset, one fill per shard piece the range touches.
func (s *streamDevice) fillTensor(b gpu.Buffer, offset int64, name string, from, n int64) error {
	t, ok := s.tensors[name]
	if !ok {
		return fmt.Errorf("stream %s: tensor not in the manifest", name)
	}
	man := s.f.Manifest()
	var pos int64 // tensor byte where the current piece starts
	for _, p := range t.GetPieces() {
		plen := int64(p.GetLength())
		lo, hi := max(from, pos), min(from+n, pos+plen)
		if lo < hi {
			shard := man.GetShards()[p.GetShard()]
			if err := s.Fill(b, offset+lo-from, shard.GetFile(), int64(p.GetOffset())+lo-pos, hi-lo); err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
		}
		pos += plen
	}
	if from+n > pos {
		return fmt.Errorf("stream %s: bytes %d..%d beyond its %d bytes", name, from, from+n, pos)
	}
	s.filled[name] += n
	return nil
}
