package convert

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/gguf"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// This file converts GGUF files (llama.cpp's format) of the llama, qwen2,
// qwen3, phi3, gemma2 and gemma3 architectures: the config from the
// metadata (ggufconfig.go), the tokenizer rebuilt as a tokenizer.json from
// tokenizer.ggml.* (ggufvocab.go), the chat template from
// tokenizer.chat_template (Gemma's built in), and every tensor dequantised
// by engine/gguf and requantised to wick's int8 per row (or kept float32).

func convertGGUF(in, out string, opts Options) (*Result, error) {
	fh, err := os.Open(in)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	f, err := gguf.Open(fh, st.Size(), in)
	if err != nil {
		return nil, err
	}
	arch, _ := f.String("general.architecture")
	a, ok := ggufArchs[arch]
	if !ok {
		known := make([]string, 0, len(ggufArchs))
		for k := range ggufArchs {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("%s: general.architecture %q is not supported (wick converts GGUF files of %s)", in, arch, strings.Join(known, ", "))
	}
	cfg, err := ggufConfig(f, arch, a)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	cfg.DType = opts.DType
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s maps to a config wick cannot run: %w", in, err)
	}
	tokJSON, err := ggufTokenizer(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	tok, err := tokenizer.FromBytes(in+" (tokenizer.ggml.*)", tokJSON)
	if err != nil {
		return nil, err
	}
	if tok.Vocab() > cfg.Vocab {
		return nil, fmt.Errorf("%s: %d tokens, more than the embedding's %d rows", in, tok.Vocab(), cfg.Vocab)
	}
	tokenText := func(key string) (string, []int32) {
		id, ok := f.Int(key)
		if !ok || id < 0 || int(id) >= tok.Vocab() {
			return "", nil
		}
		p, _ := tok.Piece(int32(id))
		return p, []int32{int32(id)}
	}
	bos, _ := tokenText("tokenizer.ggml.bos_token_id")
	eos, stops := tokenText("tokenizer.ggml.eos_token_id")
	if _, eot := tokenText("tokenizer.ggml.eot_token_id"); len(eot) > 0 && (len(stops) == 0 || stops[0] != eot[0]) {
		stops = append(stops, eot...)
	}
	if len(stops) == 0 {
		return nil, fmt.Errorf("%s: no tokenizer.ggml.eos_token_id: generation would never stop", in)
	}
	if add, ok := f.Metadata["tokenizer.ggml.add_bos_token"].(bool); ok && !add {
		bos = ""
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	var chatFmt *manifestpb.ChatTemplate
	var notes []string
	if a.gemma > 0 {
		// Gemma's format is built in, as for its safetensors checkpoints.
		if chatFmt, err = chat.GemmaChatTemplate(tok); err != nil {
			return nil, fmt.Errorf("%s: %w", in, err)
		}
		for _, id := range stops {
			if !slices.Contains(chatFmt.StopIds, id) {
				chatFmt.StopIds = append(chatFmt.StopIds, id)
			}
		}
	} else {
		src, _ := f.String("tokenizer.chat_template")
		if src == "" {
			return nil, fmt.Errorf("%s: no tokenizer.chat_template", in)
		}
		if chatFmt, notes, err = compileChat(src, bos, eos, stops, tok, now); err != nil {
			return nil, fmt.Errorf("%s: tokenizer.chat_template: %w", in, err)
		}
	}

	parts, err := ggufNames(f, cfg, a.fused)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	tmp, err := os.CreateTemp("", "wick-gguf-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(tokJSON); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))
	}
	w, err := format.NewWriter(out, opts.ShardSize)
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	meter := newMeter(cfg, opts.Progress)
	for _, spec := range cfg.TensorSpecs() {
		p := parts[spec.Name]
		t := f.Tensor(p.name)
		rows := max(specRows(spec), 1)
		want := int64(rows)
		if p.total > 0 {
			want = p.total
		}
		if t.Dims[0] != uint64(spec.Cols) || t.Rows() != want {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, wick's %s needs %d x %d (rows %d-%d of %d)", in, t.Name, t.Dims, spec.Name, rows, spec.Cols, p.lo, p.hi, want)
		}
		src := &ggufRows{f: f, t: t, lo: p.lo, hi: p.hi}
		if a.permute && (strings.HasSuffix(t.Name, ".attn_q.weight") || strings.HasSuffix(t.Name, ".attn_k.weight")) {
			src.headDim = cfg.HeadDim
		}
		if err := writeTensor(w, src, t.Name, spec, cfg.DType, meter); err != nil {
			return nil, err
		}
	}
	if err := w.Finish(name, cfg, tmp.Name(), chatFmt); err != nil {
		return nil, err
	}
	return &Result{Arch: "gguf:" + arch, Config: cfg, Tokenizer: in, ChatNotes: notes}, nil
}

// ggufPart is where one of wick's tensors lies in a GGUF file: rows
// [lo, hi) of a tensor (all of it, or one part of a fused one).
type ggufPart struct {
	name   string
	lo, hi int64
	total  int64 // the rows of the fused tensor these are part of; 0: not fused
}

// ggufLayerTensors names, per wick tensor of a layer, the GGUF tensor that
// llama.cpp's converter writes for it.
var ggufLayerTensors = map[string]string{
	model.NameAttnNorm: "attn_norm.weight", model.NameWQ: "attn_q.weight", model.NameWK: "attn_k.weight",
	model.NameWV: "attn_v.weight", model.NameBQ: "attn_q.bias", model.NameBK: "attn_k.bias", model.NameBV: "attn_v.bias",
	model.NameQNorm: "attn_q_norm.weight", model.NameKNorm: "attn_k_norm.weight",
	model.NameWO: "attn_output.weight", model.NamePostAttnNorm: "post_attention_norm.weight",
	model.NameFFNNorm: "ffn_norm.weight", model.NameWGate: "ffn_gate.weight",
	model.NameWUp: "ffn_up.weight", model.NameWDown: "ffn_down.weight", model.NamePostFFNNorm: "post_ffw_norm.weight",
}

// ggufNames maps each of wick's tensors to its place in the GGUF file and
// refuses files holding tensors the mapping does not use. With fused
// (Phi-3), q, k and v are read from attn_qkv where the file has it (rows q,
// then k, then v), and gate and up from ffn_up where it has no ffn_gate
// (rows gate, then up), as llama.cpp's converter keeps Phi's weights.
func ggufNames(f *gguf.File, cfg *model.Config, fused bool) (map[string]ggufPart, error) {
	parts := map[string]ggufPart{}
	used := map[string]bool{}
	for _, spec := range cfg.TensorSpecs() {
		var g string
		switch spec.Name {
		case model.NameEmbed:
			g = "token_embd.weight"
		case model.NameFinalNorm:
			g = "output_norm.weight"
		case model.NameLMHead:
			g = "output.weight"
		default:
			suffix := strings.TrimPrefix(spec.Name, model.LayerTensor(spec.Layer, ""))
			t, ok := ggufLayerTensors[suffix]
			if !ok {
				return nil, fmt.Errorf("no GGUF tensor is known for wick's %q", spec.Name)
			}
			g = fmt.Sprintf("blk.%d.%s", spec.Layer, t)
		}
		rows := int64(max(specRows(spec), 1))
		p := ggufPart{name: g, hi: rows}
		if fused {
			p = ggufFused(f, cfg, spec, p)
		}
		if f.Tensor(p.name) == nil {
			return nil, fmt.Errorf("tensor %q is missing", p.name)
		}
		parts[spec.Name], used[p.name] = p, true
	}
	for _, n := range []string{ropeFreqs, ropeFactorsLong, ropeFactorsShort} {
		used[n] = used[n] || cfg.LongRope.On() && f.Tensor(n) != nil
	}
	var extra []string
	for _, n := range f.Names() {
		if !used[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("and %d more", len(extra)-5))
		}
		return nil, fmt.Errorf("tensors the conversion would drop: %s", strings.Join(extra, ", "))
	}
	return parts, nil
}

// ggufFused places q, k, v, gate and up in Phi-3's fused tensors when the
// file has them.
func ggufFused(f *gguf.File, cfg *model.Config, spec model.TensorSpec, p ggufPart) ggufPart {
	layer := func(t string) string { return fmt.Sprintf("blk.%d.%s", spec.Layer, t) }
	q, kv, ff := int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.FFNHidden)
	suffix := strings.TrimPrefix(spec.Name, model.LayerTensor(spec.Layer, ""))
	if qkv := layer("attn_qkv.weight"); f.Tensor(qkv) != nil {
		switch suffix {
		case model.NameWQ:
			return ggufPart{qkv, 0, q, q + 2*kv}
		case model.NameWK:
			return ggufPart{qkv, q, q + kv, q + 2*kv}
		case model.NameWV:
			return ggufPart{qkv, q + kv, q + 2*kv, q + 2*kv}
		}
	}
	if f.Tensor(layer("ffn_gate.weight")) == nil {
		switch suffix {
		case model.NameWGate:
			return ggufPart{layer("ffn_up.weight"), 0, ff, 2 * ff}
		case model.NameWUp:
			return ggufPart{layer("ffn_up.weight"), ff, 2 * ff, 2 * ff}
		}
	}
	return p
}

// ggufRows reads rows [lo, hi) of a GGUF tensor as float32 rows. For
// llama.cpp's Llama Q and K (headDim > 0) it undoes the converter's row
// order, which pairs rows (i, i+headDim/2) of each head as (2i, 2i+1), one
// head at a time.
type ggufRows struct {
	f       *gguf.File
	t       *gguf.Tensor
	lo, hi  int64
	headDim int
}

func (g *ggufRows) rows(cols int, fn func(row int, vals []float32) error) error {
	total := g.hi - g.lo
	per := max(int64(1), int64(chunkBytes/4/cols))
	if g.headDim > 0 {
		per = int64(g.headDim)
	}
	buf := make([]float32, int(min(per, total))*cols)
	var tmp []float32
	if g.headDim > 0 {
		tmp = make([]float32, len(buf))
	}
	for r := int64(0); r < total; r += per {
		n := min(per, total-r)
		v := buf[:int(n)*cols]
		if err := g.f.ReadRows(g.t, g.lo+r, g.lo+r+n, v); err != nil {
			return err
		}
		if g.headDim > 0 {
			half := g.headDim / 2
			copy(tmp, v)
			for i := 0; i < half; i++ {
				copy(v[i*cols:(i+1)*cols], tmp[(2*i)*cols:(2*i+1)*cols])
				copy(v[(i+half)*cols:(i+half+1)*cols], tmp[(2*i+1)*cols:(2*i+2)*cols])
			}
		}
		if err := fn(int(r), v); err != nil {
			return err
		}
	}
	return nil
}
