// Package parity compares a wick model converted from a Hugging Face
// checkpoint with what transformers computed for that checkpoint: the
// fixtures in testdata/hf (made by scripts/make_hf_fixtures.py) hold a
// prompt, transformers' float32 logits for every prompt position, and its
// greedy continuation. Any backend can be checked: Compare loads the model
// with the engine.Options it is given.
package parity

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/model"
)

// Fixture is one Hugging Face checkpoint with transformers' outputs.
type Fixture struct {
	Dir     string               // the checkpoint directory, input to convert.Convert
	Prompt  []int32              // token ids, bos first
	Greedy  []int32              // transformers' greedy continuation of Prompt
	Margins []float64            // top-1 minus top-2 logit at each greedy step
	Logits  []float32            // [len(Prompt), Vocab], float32
	Vocab   int                  // columns of Logits
	InvFreq map[string][]float64 // RoPE inverse frequencies, by transformers' buffer name
}

// LoadFixture reads reference.json and logits.npy of the fixture in dir.
func LoadFixture(dir string) (*Fixture, error) {
	data, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		return nil, fmt.Errorf("fixture %s: %w", dir, err)
	}
	var ref struct {
		Prompt  []int32              `json:"prompt"`
		Greedy  []int32              `json:"greedy"`
		Margins []float64            `json:"greedy_margins"`
		InvFreq map[string][]float64 `json:"inv_freq"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		return nil, fmt.Errorf("fixture %s: reference.json: %w", dir, err)
	}
	path := filepath.Join(dir, "logits.npy")
	rows, cols, logits, err := readNpyF32(path)
	if err != nil {
		return nil, fmt.Errorf("fixture %s: %w", dir, err)
	}
	if rows != len(ref.Prompt) || len(ref.Greedy) == 0 {
		return nil, fmt.Errorf("fixture %s: %d logit rows for a prompt of %d tokens, %d greedy tokens", dir, rows, len(ref.Prompt), len(ref.Greedy))
	}
	return &Fixture{Dir: dir, Prompt: ref.Prompt, Greedy: ref.Greedy, Margins: ref.Margins, Logits: logits, Vocab: cols, InvFreq: ref.InvFreq}, nil
}

// npyHeader matches the header NumPy writes for a C-order float32 matrix.
var npyHeader = regexp.MustCompile(`'descr':\s*'<f4',\s*'fortran_order':\s*False,\s*'shape':\s*\((\d+),\s*(\d+)\)`)

// readNpyF32 reads a little-endian float32 [rows, cols] .npy file (format
// version 1 or 2).
func readNpyF32(path string) (rows, cols int, vals []float32, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, nil, err
	}
	if len(data) < 12 || !bytes.HasPrefix(data, []byte("\x93NUMPY")) {
		return 0, 0, nil, fmt.Errorf("%s: not a .npy file", path)
	}
	var hlen, start int
	switch data[6] {
	case 1:
		hlen, start = int(binary.LittleEndian.Uint16(data[8:])), 10
	case 2, 3:
		hlen, start = int(binary.LittleEndian.Uint32(data[8:])), 12
	default:
		return 0, 0, nil, fmt.Errorf("%s: .npy version %d", path, data[6])
	}
	if start+hlen > len(data) {
		return 0, 0, nil, fmt.Errorf("%s: truncated header", path)
	}
	m := npyHeader.FindSubmatch(data[start : start+hlen])
	if m == nil {
		return 0, 0, nil, fmt.Errorf("%s: want a C-order float32 matrix, header %q", path, data[start:start+hlen])
	}
	rows, _ = strconv.Atoi(string(m[1]))
	cols, _ = strconv.Atoi(string(m[2]))
	body := data[start+hlen:]
	if len(body) != 4*rows*cols {
		return 0, 0, nil, fmt.Errorf("%s: %d data bytes for shape (%d, %d)", path, len(body), rows, cols)
	}
	vals = make([]float32, rows*cols)
	for i := range vals {
		vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
	}
	return rows, cols, vals, nil
}

// Report is how a converted model compares with transformers.
type Report struct {
	// MaxRelErr is the largest, over prompt positions, of
	// max|wick - transformers| / max|transformers| within the position's row.
	MaxRelErr float64
	// MinCosine is the smallest cosine similarity of a position's logits.
	MinCosine float64
	// Greedy is wick's greedy continuation of the prompt (KV-cached decoding).
	Greedy []int32
	// GreedyPrefix counts the leading tokens of Greedy equal to
	// transformers'; GreedySame counts equal tokens at equal steps.
	GreedyPrefix, GreedySame int
}

// Convert converts the fixture's checkpoint into dir with dtype.
func (fx *Fixture) Convert(dir string, dtype model.DType) error {
	_, err := convert.Convert(fx.Dir, dir, convert.Options{DType: dtype, ShardSize: 64 << 10})
	return err
}

// Compare loads the converted model in modelDir with opts, runs the prompt
// (every position's logits) and greedy decoding as long as transformers'
// continuation, and compares both with the fixture.
func (fx *Fixture) Compare(modelDir string, opts engine.Options) (*Report, error) {
	m, err := engine.Load(modelDir, opts)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if m.Config.Vocab != fx.Vocab {
		return nil, fmt.Errorf("parity: model vocab %d, fixture logits have %d columns", m.Config.Vocab, fx.Vocab)
	}
	seq, err := m.Backend.NewSequence(len(fx.Prompt) + len(fx.Greedy))
	if err != nil {
		return nil, err
	}
	defer seq.Close()
	V, n := fx.Vocab, len(fx.Prompt)
	logits := make([]float32, n*V)
	if err := seq.Forward(fx.Prompt, 0, logits); err != nil {
		return nil, err
	}
	r := &Report{MinCosine: 1}
	for t := 0; t < n; t++ {
		got, want := logits[t*V:(t+1)*V], fx.Logits[t*V:(t+1)*V]
		r.MaxRelErr = max(r.MaxRelErr, relErr(got, want))
		r.MinCosine = min(r.MinCosine, cosine(got, want))
	}
	next := argmax(logits[(n-1)*V:])
	last := make([]float32, V)
	for i := range fx.Greedy {
		r.Greedy = append(r.Greedy, next)
		if i == len(fx.Greedy)-1 {
			break
		}
		if err := seq.Forward([]int32{next}, n+i, last); err != nil {
			return nil, err
		}
		next = argmax(last)
	}
	r.GreedyPrefix = -1
	for i, id := range r.Greedy {
		if id == fx.Greedy[i] {
			r.GreedySame++
		} else if r.GreedyPrefix < 0 {
			r.GreedyPrefix = i
		}
	}
	if r.GreedyPrefix < 0 {
		r.GreedyPrefix = len(r.Greedy)
	}
	return r, nil
}

// relErr is max|a-b| / max|b|.
func relErr(a, b []float32) float64 {
	var d, m float64
	for i := range b {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	if m == 0 {
		return d
	}
	return d / m
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// argmax returns the first index of the largest value, as torch.argmax does.
func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}
