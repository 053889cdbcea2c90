// Package convert turns Hugging Face checkpoints (config.json, safetensors,
// tokenizer.json or tokenizer.model) and GGUF files (gguf.go: llama, qwen2,
// qwen3, phi3, gemma2 and gemma3) into wick model directories, float32 or
// quantised to int8.
//
// Each architecture family is one file holding a family value: how the
// checkpoint's config.json maps onto model.Config (refusing, by name, any
// option wick does not implement), which checkpoint tensor each of wick's
// tensors comes from, and the chat template. The rest is shared: reading
// safetensors (bf16, f16, f32), quantising per output row with package
// quant, and streaming each tensor a chunk of rows at a time into
// format.Writer, so that memory holds a few MiB of input and output and a
// matrix's per-row scales, never a whole tensor.
package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
	"github.com/wick-run/wick/engine/tokenizer"
)

// Options choose how a checkpoint is converted.
type Options struct {
	// DType of the matrices: model.Int8 (the zero value; quantised per
	// output row) or model.F32.
	DType model.DType
	// ShardSize caps a shard's bytes; 0 means format.DefaultShardSize.
	ShardSize int64
	// Name is the model's name in the manifest; "" means the base name of
	// the input directory.
	Name string
	// Now is the date a chat template prints (Llama 3's "Today Date"),
	// frozen into the converted model; zero means the clock's.
	Now time.Time
	// Progress, when set, is told how far the conversion has come after
	// each chunk of rows written; an error it returns (the user cancelled)
	// ends the conversion, and nothing is left written.
	Progress func(Progress) error
}

// Result describes a finished conversion.
type Result struct {
	Arch      string        // the checkpoint's architecture, e.g. "Gemma3ForCausalLM"
	Config    *model.Config // the converted model's config
	Tokenizer string        // path of the tokenizer file that was copied
	// ChatNotes list the conversations that the compiled chat template
	// renders differently from the checkpoint's Jinja template.
	ChatNotes []string
}

// family maps one architecture family's checkpoints onto wick.
type family struct {
	// config reads config.json into a wick config (DType left to the caller).
	config func(c *hfConfig) (*model.Config, error)
	// layerTensors names, for each of wick's per-layer tensor names, the
	// checkpoint tensor under "model.layers.N.".
	layerTensors map[string]string
	// chat builds the chat template for tok when the checkpoint has no
	// Jinja chat template in tokenizer_config.json, or always when
	// builtinChat is set.
	chat        func(c *hfConfig, tok *tokenizer.Tokenizer) (*manifestpb.ChatTemplate, error)
	builtinChat bool
	// fused names, for wick's per-layer tensors that a checkpoint stores
	// stacked in one (Phi's qkv_proj and gate_up_proj), the checkpoint
	// tensor and the rows of it they are.
	fused map[string]fusedPart
}

// fusedPart is rows lo..hi of a checkpoint tensor of total rows.
type fusedPart struct {
	tensor string
	rows   func(c *model.Config) (lo, hi, total int)
}

// partName names rows lo..hi of a tensor of total rows, as checkpoint.tensor reads it.
func partName(name string, lo, hi, total int) string {
	return fmt.Sprintf("%s#%d:%d:%d", name, lo, hi, total)
}

// families are the supported architectures, by config.json's "architectures".
var families = map[string]*family{
	"Gemma2ForCausalLM": &gemma2,
	"Gemma3ForCausalLM": &gemma3,
	"LlamaForCausalLM":  &llama,
	"Phi3ForCausalLM":   &phi3,
	"Qwen2ForCausalLM":  &qwen2,
	"Qwen3ForCausalLM":  &qwen3,
}

// Architectures lists the architectures Convert accepts.
func Architectures() []string {
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Convert reads the Hugging Face checkpoint in directory in and writes a wick
// model directory at out. Files appear in out only complete; on an error
// nothing new is left there.
func Convert(in, out string, opts Options) (*Result, error) {
	res, err := convert(in, out, opts)
	if err != nil {
		return nil, fmt.Errorf("convert %s: %w", in, err)
	}
	return res, nil
}

func convert(in, out string, opts Options) (*Result, error) {
	if opts.DType != model.Int8 && opts.DType != model.F32 {
		return nil, fmt.Errorf("unknown dtype %v: want int8 or f32", opts.DType)
	}
	if strings.EqualFold(filepath.Ext(in), ".gguf") {
		return convertGGUF(in, out, opts)
	}
	hc, err := readHFConfig(filepath.Join(in, "config.json"))
	if err != nil {
		return nil, err
	}
	arch, fam, err := pickFamily(hc)
	if err != nil {
		return nil, err
	}
	cfg, err := fam.config(hc)
	if err != nil {
		return nil, err
	}
	cfg.DType = opts.DType
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s maps to a config wick cannot run: %w", hc.path, err)
	}
	tokPath, tok, err := findTokenizer(in)
	if err != nil {
		return nil, err
	}
	if tok.Vocab() > cfg.Vocab {
		return nil, fmt.Errorf("tokenizer %s has %d pieces, more than vocab_size %d", tokPath, tok.Vocab(), cfg.Vocab)
	}
	var chat *manifestpb.ChatTemplate
	var notes []string
	if !fam.builtinChat {
		now := opts.Now
		if now.IsZero() {
			now = time.Now()
		}
		if chat, notes, err = templateChat(in, hc, tok, now); err != nil {
			return nil, err
		}
	}
	if chat == nil {
		if chat, err = fam.chat(hc, tok); err != nil {
			return nil, err
		}
	}
	ck, err := openCheckpoint(in)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	names, err := checkpointNames(ck, cfg, fam)
	if err != nil {
		return nil, err
	}

	name := opts.Name
	if name == "" {
		name = filepath.Base(filepath.Clean(in))
	}
	w, err := format.NewWriter(out, opts.ShardSize)
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	meter := newMeter(cfg, opts.Progress)
	for _, spec := range cfg.TensorSpecs() {
		hf := names[spec.Name]
		t, err := ck.tensor(hf, specRows(spec), spec.Cols)
		if err != nil {
			return nil, err
		}
		if err := writeTensor(w, t, hf, spec, cfg.DType, meter); err != nil {
			return nil, err
		}
	}
	if err := w.Finish(name, cfg, tokPath, chat); err != nil {
		return nil, err
	}
	return &Result{Arch: arch, Config: cfg, Tokenizer: tokPath, ChatNotes: notes}, nil
}

// pickFamily finds the family of the checkpoint's one architecture.
func pickFamily(hc *hfConfig) (string, *family, error) {
	archs, err := hc.strings("architectures")
	if err != nil {
		return "", nil, err
	}
	if len(archs) != 1 {
		return "", nil, fmt.Errorf("%s: \"architectures\" is %q; want exactly one of %s", hc.path, archs, strings.Join(Architectures(), ", "))
	}
	fam, ok := families[archs[0]]
	if !ok {
		return "", nil, fmt.Errorf("%s: unsupported architecture %q (wick converts %s)", hc.path, archs[0], strings.Join(Architectures(), ", "))
	}
	return archs[0], fam, nil
}

// checkpointNames maps each of wick's tensors to its checkpoint tensor, and
// refuses checkpoints holding tensors the mapping does not use: such a
// tensor (a bias, an extra norm) means the model computes something wick
// would silently leave out.
func checkpointNames(ck *checkpoint, cfg *model.Config, fam *family) (map[string]string, error) {
	names := make(map[string]string)
	for _, spec := range cfg.TensorSpecs() {
		var hf string
		switch spec.Name {
		case model.NameEmbed:
			hf = "model.embed_tokens.weight"
		case model.NameFinalNorm:
			hf = "model.norm.weight"
		case model.NameLMHead:
			hf = "lm_head.weight"
		default:
			suffix := strings.TrimPrefix(spec.Name, model.LayerTensor(spec.Layer, ""))
			if p, ok := fam.fused[suffix]; ok {
				lo, hi, total := p.rows(cfg)
				names[spec.Name] = partName(fmt.Sprintf("model.layers.%d.%s", spec.Layer, p.tensor), lo, hi, total)
				continue
			}
			t, ok := fam.layerTensors[suffix]
			if !ok {
				return nil, fmt.Errorf("no checkpoint tensor is known for wick's %q", spec.Name)
			}
			hf = fmt.Sprintf("model.layers.%d.%s", spec.Layer, t)
		}
		names[spec.Name] = hf
	}
	used := make(map[string]bool, len(names))
	for _, hf := range names {
		base, _, _ := strings.Cut(hf, "#")
		used[base] = true
	}
	var extra []string
	for name := range ck.tensors {
		switch {
		case used[name]:
		case name == "lm_head.weight" && cfg.TiedEmbedding:
			// Some writers store the tied head anyway; the embedding is used.
		case strings.HasSuffix(name, ".rotary_emb.inv_freq"):
			// Older checkpoints carry RoPE tables; wick computes its own.
		default:
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("and %d more", len(extra)-5))
		}
		return nil, fmt.Errorf("checkpoint %s has tensors the conversion would drop: %s", ck.dir, strings.Join(extra, ", "))
	}
	return names, nil
}

// rowSource is a checkpoint tensor read as float32 rows: fn gets chunks of
// whole rows, the index of the first.
type rowSource interface {
	rows(cols int, fn func(row int, vals []float32) error) error
}

// specRows is the rows a checkpoint tensor for spec has: 0 for a vector.
func specRows(spec model.TensorSpec) int {
	if spec.Role == model.RoleNorm {
		return 0
	}
	return spec.Rows
}

// scaleSuffix names an int8 matrix's per-row scale tensor, as format does.
const scaleSuffix = ".scale"

// writeTensor reads one checkpoint tensor and streams it into w, a chunk
// of rows at a time: norms as float32, matrices as float32 or int8 with a
// per-row scale. Only the scales (4 bytes a row) are kept until the
// tensor's end, to be written after it. m counts what is written.
func writeTensor(w *format.Writer, t rowSource, hfName string, spec model.TensorSpec, dtype model.DType, m *meter) error {
	rows := max(specRows(spec), 1)
	cols := spec.Cols
	shape := []int{rows, cols}
	if spec.Role == model.RoleNorm {
		shape = shape[1:]
	}
	var buf []byte
	if spec.Role == model.RoleNorm || dtype == model.F32 {
		tw, err := w.BeginTensor(spec.Name, manifestpb.DType_DTYPE_F32, shape, "")
		if err != nil {
			return err
		}
		err = t.rows(cols, func(r int, vals []float32) error {
			if err := checkFinite(hfName, r, cols, vals); err != nil {
				return err
			}
			buf = slices.Grow(buf[:0], 4*len(vals))[:4*len(vals)]
			for i, v := range vals {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			if _, err := tw.Write(buf); err != nil {
				return err
			}
			return m.wrote(int64(len(buf)), false)
		})
		if err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return m.wrote(0, true)
	}
	scale := spec.Name + scaleSuffix
	tw, err := w.BeginTensor(spec.Name, manifestpb.DType_DTYPE_INT8, shape, scale)
	if err != nil {
		return err
	}
	rowQ := make([]int8, cols)
	scales := make([]float32, rows)
	err = t.rows(cols, func(r int, vals []float32) error {
		if err := checkFinite(hfName, r, cols, vals); err != nil {
			return err
		}
		buf = slices.Grow(buf[:0], len(vals))[:len(vals)]
		for i := 0; i < len(vals)/cols; i++ {
			scales[r+i] = quant.Quantize(rowQ, vals[i*cols:(i+1)*cols])
			dst := buf[i*cols:]
			for j, v := range rowQ {
				dst[j] = byte(v)
			}
		}
		if _, err := tw.Write(buf); err != nil {
			return err
		}
		return m.wrote(int64(len(buf)), false)
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	sb := make([]byte, 4*rows)
	for i, s := range scales {
		binary.LittleEndian.PutUint32(sb[4*i:], math.Float32bits(s))
	}
	if err := w.AddTensor(scale, manifestpb.DType_DTYPE_F32, []int{rows}, sb, ""); err != nil {
		return err
	}
	return m.wrote(int64(len(sb)), true)
}

// checkFinite refuses NaN and infinite weights, which would quantise to
// garbage without a word.
func checkFinite(name string, row, cols int, vals []float32) error {
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("tensor %q: value %v at row %d, column %d", name, v, row+i/cols, i%cols)
		}
	}
	return nil
}

// findTokenizer picks the checkpoint's tokenizer: a SentencePiece
// tokenizer.model where there is one that engine/tokenizer encodes exactly
// (Gemma ships both, and its SentencePiece model is the one its chat format
// was checked with), else a Hugging Face tokenizer.json (Llama 3, Qwen,
// SmolLM2; Phi-3, whose Llama 2 style tokenizer.model adds a dummy prefix
// that go-sentencepiece does not implement). engine/tokenizer refuses, by
// name, what it cannot encode faithfully.
func findTokenizer(dir string) (string, *tokenizer.Tokenizer, error) {
	var firstErr error
	for _, name := range []string{"tokenizer.model", "tokenizer.json"} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return "", nil, err
		}
		tok, err := tokenizer.Load(path)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return path, tok, nil
	}
	if firstErr != nil {
		return "", nil, firstErr
	}
	return "", nil, fmt.Errorf("%s has no tokenizer.model or tokenizer.json", dir)
}
