package convert

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gguf"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

// This file converts GGUF files (llama.cpp's format) of the Llama and Qwen 2
// architectures with a byte-level BPE tokenizer: the config from the
// metadata, the tokenizer rebuilt as a tokenizer.json from
// tokenizer.ggml.*, the chat template from tokenizer.chat_template, and
// every tensor dequantised by engine/gguf and requantised to wick's int8
// per row (or kept float32).

// ggufPre maps tokenizer.ggml.pre names to the pre-tokenizer and
// normalizer of the tokenizer.json they stand for, and whether BPE's
// ignore_merges is on (Llama 3's tokenizer.json sets it).
var ggufPre = map[string]struct {
	pattern      string
	nfc, ignore  bool
	digits, gpt2 bool // SmolLM2: single digits, then GPT-2's ByteLevel regex
}{
	"llama-bpe": {pattern: llama3Pattern, ignore: true},
	"llama3":    {pattern: llama3Pattern, ignore: true},
	"qwen2":     {pattern: qwen2Pattern, nfc: true},
	"smollm":    {digits: true, gpt2: true},
}

const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// ggufArch is how one general.architecture maps onto wick.
type ggufArch struct {
	bias    bool // q/k/v biases (Qwen 2)
	permute bool // llama.cpp's converter interleaved Q and K rows for its RoPE
}

var ggufArchs = map[string]ggufArch{
	"llama": {permute: true},
	"qwen2": {bias: true},
}

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
		return nil, fmt.Errorf("%s: general.architecture %q is not supported (wick converts GGUF files of llama and qwen2)", in, arch)
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
	src, _ := f.String("tokenizer.chat_template")
	if src == "" {
		return nil, fmt.Errorf("%s: no tokenizer.chat_template", in)
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
	chat, notes, err := compileChat(src, bos, eos, stops, tok, now)
	if err != nil {
		return nil, fmt.Errorf("%s: tokenizer.chat_template: %w", in, err)
	}

	names, err := ggufNames(f, cfg)
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
		t := f.Tensor(names[spec.Name])
		rows := max(specRows(spec), 1)
		if t.Dims[0] != uint64(spec.Cols) || t.Rows() != int64(rows) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, wick's %s needs %d x %d", in, t.Name, t.Dims, spec.Name, rows, spec.Cols)
		}
		src := &ggufRows{f: f, t: t}
		if a.permute && (strings.HasSuffix(t.Name, ".attn_q.weight") || strings.HasSuffix(t.Name, ".attn_k.weight")) {
			src.headDim = cfg.HeadDim
		}
		if err := writeTensor(w, src, t.Name, spec, cfg.DType, meter); err != nil {
			return nil, err
		}
	}
	if err := w.Finish(name, cfg, tmp.Name(), chat); err != nil {
		return nil, err
	}
	return &Result{Arch: "gguf:" + arch, Config: cfg, Tokenizer: in, ChatNotes: notes}, nil
}

// ggufConfig maps the metadata of arch onto a wick config.
func ggufConfig(f *gguf.File, arch string, a ggufArch) (*model.Config, error) {
	get := func(key string) (int, error) {
		v, ok := f.Int(arch + "." + key)
		if !ok || v <= 0 || v > 1<<30 {
			return 0, fmt.Errorf("metadata %s.%s is missing or not a positive integer", arch, key)
		}
		return int(v), nil
	}
	getF := func(key string, def float64) (float64, error) {
		switch v := f.Metadata[arch+"."+key].(type) {
		case nil:
			return def, nil
		case float32:
			return float64(v), nil
		case float64:
			return v, nil
		}
		return 0, fmt.Errorf("metadata %s.%s is not a float", arch, key)
	}
	cfg := &model.Config{Activation: model.SwiGLU, QKVBias: a.bias}
	var err error
	for _, fld := range []struct {
		dst *int
		key string
	}{
		{&cfg.Hidden, "embedding_length"}, {&cfg.FFNHidden, "feed_forward_length"},
		{&cfg.Heads, "attention.head_count"}, {&cfg.ContextLen, "context_length"},
	} {
		if *fld.dst, err = get(fld.key); err != nil {
			return nil, err
		}
	}
	cfg.KVHeads = cfg.Heads
	if _, ok := f.Metadata[arch+".attention.head_count_kv"]; ok {
		if cfg.KVHeads, err = get("attention.head_count_kv"); err != nil {
			return nil, err
		}
	}
	cfg.HeadDim = cfg.Hidden / cfg.Heads
	if _, ok := f.Metadata[arch+".attention.key_length"]; ok {
		if cfg.HeadDim, err = get("attention.key_length"); err != nil {
			return nil, err
		}
	}
	if rot, ok := f.Int(arch + ".rope.dimension_count"); ok && int(rot) != cfg.HeadDim {
		return nil, fmt.Errorf("metadata %s.rope.dimension_count %d: partial rotary is not supported from GGUF", arch, rot)
	}
	if cfg.RopeThetaGlobal, err = getF("rope.freq_base", 10000); err != nil {
		return nil, err
	}
	cfg.RopeThetaLocal = cfg.RopeThetaGlobal
	if cfg.NormEps, err = getF("attention.layer_norm_rms_epsilon", 1e-5); err != nil {
		return nil, err
	}
	if s, ok := f.String(arch + ".rope.scaling.type"); ok && s != "none" {
		return nil, fmt.Errorf("metadata %s.rope.scaling.type %q is not supported", arch, s)
	}
	if t := f.Tensor(ropeFreqs); t != nil {
		if cfg.LongRope, err = ggufRopeFreqs(f, t, cfg); err != nil {
			return nil, err
		}
	}
	layers, err := get("block_count")
	if err != nil {
		return nil, err
	}
	for i := 0; i < layers; i++ {
		cfg.Layers = append(cfg.Layers, model.Layer{Kind: model.Global, KVSource: i})
	}
	emb := f.Tensor("token_embd.weight")
	if emb == nil || len(emb.Dims) != 2 {
		return nil, fmt.Errorf("no two-dimensional token_embd.weight")
	}
	cfg.Vocab = int(emb.Rows())
	cfg.TiedEmbedding = f.Tensor("output.weight") == nil
	return cfg, nil
}

// ropeFreqs is the tensor in which llama.cpp's converter stores Llama 3's
// RoPE scaling: one divisor of each rotated pair's inverse frequency,
// computed from config.json's rope_scaling (factor, low and high frequency
// factors, original context), which the GGUF metadata does not keep.
const ropeFreqs = "rope_freqs.weight"

// ggufRopeFreqs reads rope_freqs.weight into the config field that divides
// each pair's frequency, LongRope, with the same factors below and beyond
// the original context and no attention factor: llama.cpp applies them at
// every position.
func ggufRopeFreqs(f *gguf.File, t *gguf.Tensor, cfg *model.Config) (model.LongRope, error) {
	pairs := cfg.Rotary() / 2
	if t.Type != gguf.F32 || len(t.Dims) != 1 || t.Dims[0] != uint64(pairs) {
		return model.LongRope{}, fmt.Errorf("tensor %s is %v %v, want F32 [%d] (one factor per rotated pair)", ropeFreqs, t.Type, t.Dims, pairs)
	}
	v := make([]float32, pairs)
	if err := f.ReadRows(t, 0, 1, v); err != nil {
		return model.LongRope{}, err
	}
	factors := make([]float64, pairs)
	for i, x := range v {
		if !(x > 0) || math.IsInf(float64(x), 0) {
			return model.LongRope{}, fmt.Errorf("tensor %s: factor %d is %v, must be positive and finite", ropeFreqs, i, x)
		}
		factors[i] = float64(x)
	}
	return model.LongRope{ShortFactor: factors, LongFactor: factors, OriginalContext: cfg.ContextLen, AttnFactor: 1}, nil
}

// ggufNames maps each of wick's tensors to its GGUF tensor and refuses
// files holding tensors the mapping does not use.
func ggufNames(f *gguf.File, cfg *model.Config) (map[string]string, error) {
	layer := map[string]string{
		model.NameAttnNorm: "attn_norm.weight", model.NameWQ: "attn_q.weight", model.NameWK: "attn_k.weight",
		model.NameWV: "attn_v.weight", model.NameBQ: "attn_q.bias", model.NameBK: "attn_k.bias", model.NameBV: "attn_v.bias",
		model.NameWO: "attn_output.weight", model.NameFFNNorm: "ffn_norm.weight", model.NameWGate: "ffn_gate.weight",
		model.NameWUp: "ffn_up.weight", model.NameWDown: "ffn_down.weight",
	}
	names := map[string]string{}
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
			t, ok := layer[suffix]
			if !ok {
				return nil, fmt.Errorf("no GGUF tensor is known for wick's %q", spec.Name)
			}
			g = fmt.Sprintf("blk.%d.%s", spec.Layer, t)
		}
		if f.Tensor(g) == nil {
			return nil, fmt.Errorf("tensor %q is missing", g)
		}
		names[spec.Name], used[g] = g, true
	}
	if cfg.LongRope.On() {
		used[ropeFreqs] = true
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
	return names, nil
}

// ggufTokenizer rebuilds the tokenizer.json that a byte-level BPE GGUF
// tokenizer was made from: vocabulary and merges as stored, control and
// user-defined tokens as added tokens, and the pre-tokenizer that
// tokenizer.ggml.pre names.
func ggufTokenizer(f *gguf.File) ([]byte, error) {
	if m, _ := f.String("tokenizer.ggml.model"); m != "gpt2" {
		return nil, fmt.Errorf("tokenizer.ggml.model %q is not supported (wick rebuilds byte-level BPE, \"gpt2\", tokenizers)", m)
	}
	pre, _ := f.String("tokenizer.ggml.pre")
	p, ok := ggufPre[pre]
	if !ok {
		known := make([]string, 0, len(ggufPre))
		for k := range ggufPre {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("tokenizer.ggml.pre %q is not supported (wick knows %s)", pre, strings.Join(known, ", "))
	}
	tokens, _ := f.Metadata["tokenizer.ggml.tokens"].([]any)
	types, _ := f.Metadata["tokenizer.ggml.token_type"].([]any)
	merges, _ := f.Metadata["tokenizer.ggml.merges"].([]any)
	if len(tokens) == 0 || len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.tokens (%d) and token_type (%d) are missing or differ in length", len(tokens), len(types))
	}
	vocab := map[string]int{}
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var adds []added
	for i, t := range tokens {
		s, ok := t.(string)
		ty, _ := asInt(types[i])
		if !ok {
			return nil, fmt.Errorf("tokenizer.ggml.tokens[%d] is not a string", i)
		}
		switch ty {
		case 1: // NORMAL
			vocab[s] = i
		case 3, 4: // CONTROL, USER_DEFINED
			adds = append(adds, added{ID: i, Content: s, Special: ty == 3})
		case 5: // UNUSED: padding rows
		default:
			return nil, fmt.Errorf("tokenizer.ggml.token_type[%d] is %d, not supported", i, ty)
		}
	}
	ms := make([]string, len(merges))
	for i, m := range merges {
		s, ok := m.(string)
		if !ok {
			return nil, fmt.Errorf("tokenizer.ggml.merges[%d] is not a string", i)
		}
		ms[i] = s
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": p.gpt2}
	var pres []any
	if p.digits {
		pres = append(pres, map[string]any{"type": "Digits", "individual_digits": true})
	}
	if p.pattern != "" {
		pres = append(pres, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": p.pattern}, "behavior": "Isolated", "invert": false})
	}
	pres = append(pres, byteLevel)
	var norm any
	if p.nfc {
		norm = map[string]any{"type": "NFC"}
	}
	return json.Marshal(map[string]any{
		"added_tokens":  adds,
		"normalizer":    norm,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": pres},
		"decoder":       byteLevel,
		"model": map[string]any{"type": "BPE", "ignore_merges": p.ignore, "byte_fallback": false,
			"vocab": vocab, "merges": ms},
	})
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		return int64(x), true
	}
	return 0, false
}

// ggufRows reads a GGUF tensor as float32 rows. For llama.cpp's Llama Q
// and K (headDim > 0) it undoes the converter's row order, which pairs
// rows (i, i+headDim/2) of each head as (2i, 2i+1), one head at a time.
type ggufRows struct {
	f       *gguf.File
	t       *gguf.Tensor
	headDim int
}

func (g *ggufRows) rows(cols int, fn func(row int, vals []float32) error) error {
	total := g.t.Rows()
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
		if err := g.f.ReadRows(g.t, r, r+n, v); err != nil {
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
