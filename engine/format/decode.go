package format

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/url"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// DecodeManifest parses a manifest and checks it as a whole: the version is
// known, the config is valid, every tensor's dtype, shape and pieces agree
// and lie inside their shards without overlapping, every file name is a
// plain name (shards named after their sha256), and every tensor the config
// requires is present with the right shape and dtype. What it accepts is
// safe to index and size allocations from; the shard bytes themselves are
// checked when read.
func DecodeManifest(data []byte) (*manifestpb.Manifest, error) {
	m, _, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return m, nil
}

func decodeManifest(data []byte) (*manifestpb.Manifest, *model.Config, error) {
	if len(data) > maxManifestBytes {
		return nil, nil, fmt.Errorf("%d bytes, above the limit %d", len(data), maxManifestBytes)
	}
	m := new(manifestpb.Manifest)
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, nil, fmt.Errorf("not a manifest protobuf: %w", err)
	}
	cfg, err := checkManifest(m)
	if err != nil {
		return nil, nil, err
	}
	return m, cfg, nil
}

// checkManifest validates m and returns its config. The writer runs it too,
// so it never writes what a reader would refuse.
func checkManifest(m *manifestpb.Manifest) (*model.Config, error) {
	if m.FormatVersion < MinVersion || m.FormatVersion > Version {
		return nil, fmt.Errorf("format_version is %d, this reader knows %d to %d", m.FormatVersion, MinVersion, Version)
	}
	cfg, err := configFromProto(m.Config, m.FormatVersion)
	if err != nil {
		return nil, err
	}
	if m.ShardBaseUrl != "" {
		if _, err := url.Parse(m.ShardBaseUrl); err != nil {
			return nil, fmt.Errorf("shard_base_url: %w", err)
		}
	}
	if err := checkShards(m.Shards); err != nil {
		return nil, err
	}
	if err := checkTokenizer(m.Tokenizer); err != nil {
		return nil, err
	}
	if err := checkChat(m.Chat, cfg.Vocab); err != nil {
		return nil, err
	}
	byName, err := checkTensors(m.Tensors, m.Shards)
	if err != nil {
		return nil, err
	}
	if err := checkRequired(cfg, byName); err != nil {
		return nil, err
	}
	return cfg, nil
}

func checkShards(shards []*manifestpb.Shard) error {
	for i, s := range shards {
		if err := checkPlainName(s.File); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		if !isHexSHA256(s.Sha256) {
			return fmt.Errorf("shard %d (%s): sha256 %q is not 64 lowercase hex digits", i, s.File, s.Sha256)
		}
		// Content addressing is what makes shards safe to cache forever.
		if want := shardName(s.Sha256); s.File != want {
			return fmt.Errorf("shard %d: file %q does not match its sha256 (want %q)", i, s.File, want)
		}
		if s.Size > maxShardBytes {
			return fmt.Errorf("shard %d (%s): size %d is above the limit %d", i, s.File, s.Size, uint64(maxShardBytes))
		}
	}
	// The same bytes may legitimately appear twice (two identical shards);
	// then they must agree on the size too.
	sizes := make(map[string]uint64, len(shards))
	for i, s := range shards {
		if n, ok := sizes[s.File]; ok && n != s.Size {
			return fmt.Errorf("shard %d (%s): size %d, but an earlier entry for the same file says %d", i, s.File, s.Size, n)
		}
		sizes[s.File] = s.Size
	}
	return nil
}

func checkTokenizer(t *manifestpb.Tokenizer) error {
	if t == nil {
		return nil // a model may come without one; the engine then takes token ids
	}
	switch t.Kind {
	case manifestpb.TokenizerKind_TOKENIZER_KIND_SENTENCEPIECE, manifestpb.TokenizerKind_TOKENIZER_KIND_HF_JSON:
	default:
		return fmt.Errorf("tokenizer: kind is %v, want TOKENIZER_KIND_SENTENCEPIECE or TOKENIZER_KIND_HF_JSON", t.Kind)
	}
	if err := checkPlainName(t.File); err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	if !isHexSHA256(t.Sha256) {
		return fmt.Errorf("tokenizer %s: sha256 %q is not 64 lowercase hex digits", t.File, t.Sha256)
	}
	if t.Size > maxManifestBytes*16 {
		return fmt.Errorf("tokenizer %s: size %d is implausibly large", t.File, t.Size)
	}
	return nil
}

func checkChat(c *manifestpb.ChatTemplate, vocab int) error {
	if c == nil {
		return nil
	}
	id := func(field string, v int32) error {
		if v < 0 || int64(v) >= int64(vocab) {
			return fmt.Errorf("chat: %s is %d, outside the vocabulary [0, %d)", field, v, vocab)
		}
		return nil
	}
	if c.BosId != -1 {
		if err := id("bos_id", c.BosId); err != nil {
			return err
		}
	}
	for i, s := range c.StopIds {
		if err := id(fmt.Sprintf("stop_ids[%d]", i), s); err != nil {
			return err
		}
	}
	for i, s := range c.SpecialTokens {
		if err := id(fmt.Sprintf("special_tokens[%d] (%q)", i, s.Text), s.Id); err != nil {
			return err
		}
	}
	return nil
}

// span is one piece's byte range in a shard, for the overlap check.
type span struct {
	shard      uint32
	start, end uint64
	tensor     string
}

// checkTensors checks each tensor on its own and against the shards, and
// returns the tensors by name.
func checkTensors(tensors []*manifestpb.Tensor, shards []*manifestpb.Shard) (map[string]*manifestpb.Tensor, error) {
	byName := make(map[string]*manifestpb.Tensor, len(tensors))
	var spans []span
	for i, t := range tensors {
		if t.Name == "" {
			return nil, fmt.Errorf("tensor %d: name is empty", i)
		}
		if _, dup := byName[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q: listed twice", t.Name)
		}
		byName[t.Name] = t
		size, err := tensorBytes(t.Dtype, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if len(t.Pieces) == 0 {
			return nil, fmt.Errorf("tensor %q: no pieces", t.Name)
		}
		var total uint64
		for j, p := range t.Pieces {
			if int64(p.Shard) >= int64(len(shards)) {
				return nil, fmt.Errorf("tensor %q: piece %d: shard %d out of range (%d shards)", t.Name, j, p.Shard, len(shards))
			}
			s := shards[p.Shard]
			end, carry := bits.Add64(p.Offset, p.Length, 0)
			if p.Length == 0 || carry != 0 || end > s.Size {
				return nil, fmt.Errorf("tensor %q: piece %d: bytes [%d, +%d) do not lie inside shard %s of %d bytes", t.Name, j, p.Offset, p.Length, s.File, s.Size)
			}
			if j == 0 && p.Offset%Alignment != 0 {
				return nil, fmt.Errorf("tensor %q: starts at offset %d of shard %s, not a multiple of %d", t.Name, p.Offset, s.File, Alignment)
			}
			// Lengths are each below maxShardBytes, so this cannot wrap
			// before it exceeds size.
			total += p.Length
			if total > size {
				break
			}
			spans = append(spans, span{p.Shard, p.Offset, end, t.Name})
		}
		if total != size {
			return nil, fmt.Errorf("tensor %q: pieces hold %d bytes, but %v %v needs %d", t.Name, total, t.Dtype, t.Shape, size)
		}
	}
	// Scales refer to other tensors, so they are checked once all are known.
	for _, t := range tensors {
		switch t.Dtype {
		case manifestpb.DType_DTYPE_INT8:
			if len(t.Shape) != 2 {
				return nil, fmt.Errorf("tensor %q: int8 tensors are matrices with a scale per row, but shape is %v", t.Name, t.Shape)
			}
			s, ok := byName[t.Scale]
			if !ok {
				return nil, fmt.Errorf("tensor %q: scale tensor %q is missing", t.Name, t.Scale)
			}
			if s.Dtype != manifestpb.DType_DTYPE_F32 || len(s.Shape) != 1 || s.Shape[0] != t.Shape[0] {
				return nil, fmt.Errorf("tensor %q: scale tensor %q is %v %v, want DTYPE_F32 [%d]", t.Name, t.Scale, s.Dtype, s.Shape, t.Shape[0])
			}
		default:
			if t.Scale != "" {
				return nil, fmt.Errorf("tensor %q: %v tensor names scale %q; only int8 tensors have scales", t.Name, t.Dtype, t.Scale)
			}
		}
	}
	// Disjoint pieces bound the bytes all tensors claim by the shard sizes,
	// which the reader checks against the real files.
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.shard, b.shard), cmp.Compare(a.start, b.start))
	})
	for i := 1; i < len(spans); i++ {
		a, b := spans[i-1], spans[i]
		if a.shard == b.shard && b.start < a.end {
			return nil, fmt.Errorf("tensor %q: overlaps tensor %q in shard %s", b.tensor, a.tensor, shards[a.shard].File)
		}
	}
	return byName, nil
}

// checkRequired checks that every tensor the config implies is present with
// the shape and dtype the forward pass expects, and that the manifest lists
// nothing else: an unknown tensor means a writer and this reader disagree
// about the architecture (a bias, a norm the config does not switch on), and
// running without it would silently compute another model.
func checkRequired(cfg *model.Config, byName map[string]*manifestpb.Tensor) error {
	used := make(map[string]bool, len(byName))
	for _, spec := range cfg.TensorSpecs() {
		used[spec.Name] = true
		if t := byName[spec.Name]; t != nil && t.Scale != "" {
			used[t.Scale] = true
		}
		want := specShape(spec)
		dtype := specDType(cfg, spec)
		t, ok := byName[spec.Name]
		if !ok {
			return fmt.Errorf("tensor %q: missing; the config needs it as %v %v", spec.Name, dtype, want)
		}
		if t.Dtype != dtype {
			return fmt.Errorf("tensor %q: dtype %v, the config needs %v", spec.Name, t.Dtype, dtype)
		}
		if !slices.Equal(t.Shape, want) {
			return fmt.Errorf("tensor %q: shape %v, the config needs %v", spec.Name, t.Shape, want)
		}
	}
	var unknown []string
	for name := range byName {
		if !used[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		if len(unknown) > 8 {
			unknown = append(unknown[:8], fmt.Sprintf("and %d more", len(unknown)-8))
		}
		return fmt.Errorf("tensors %q: not used by this config; refusing a model this reader would run without them", unknown)
	}
	return nil
}

// specShape is a tensor's manifest shape: [rows, cols] for a matrix, [n] for
// a norm vector.
func specShape(spec model.TensorSpec) []uint64 {
	if spec.Role == model.RoleNorm {
		return []uint64{uint64(spec.Cols)}
	}
	return []uint64{uint64(spec.Rows), uint64(spec.Cols)}
}

// specDType is how a tensor is stored: matrices in the model's dtype, norm
// vectors always in float32.
func specDType(cfg *model.Config, spec model.TensorSpec) manifestpb.DType {
	if spec.Role == model.RoleMatrix && cfg.DType == model.Int8 {
		return manifestpb.DType_DTYPE_INT8
	}
	return manifestpb.DType_DTYPE_F32
}
