package format

import (
	"fmt"
	"math"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// ConfigToProto converts cfg to its manifest form. It does not validate cfg:
// values that have no manifest form (an unknown enum) become UNSPECIFIED,
// which ConfigFromProto rejects.
func ConfigToProto(cfg *model.Config) *manifestpb.Config {
	p := &manifestpb.Config{
		Vocab:           uint32(cfg.Vocab),
		Hidden:          uint32(cfg.Hidden),
		Heads:           uint32(cfg.Heads),
		KvHeads:         uint32(cfg.KVHeads),
		HeadDim:         uint32(cfg.HeadDim),
		FfnHidden:       uint32(cfg.FFNHidden),
		ContextLen:      uint32(cfg.ContextLen),
		RopeThetaGlobal: cfg.RopeThetaGlobal,
		RopeThetaLocal:  cfg.RopeThetaLocal,
		NormEps:         cfg.NormEps,
		NormOnePlus:     cfg.NormOnePlus,
		QkNorm:          cfg.QKNorm,
		QkvBias:         cfg.QKVBias,
		PostAttnNorm:    cfg.PostAttnNorm,
		PostFfnNorm:     cfg.PostFFNNorm,
		TiedEmbedding:   cfg.TiedEmbedding,
		EmbedScale:      cfg.EmbedScale,
		AttnScale:       cfg.AttnScale,
		FinalSoftcap:    cfg.FinalSoftcap,
		AttnSoftcap:     cfg.AttnSoftcap,
		RotaryDim:       uint32(cfg.RotaryDim),
	}
	for i, l := range cfg.Layers {
		kind := manifestpb.AttnKind_ATTN_KIND_UNSPECIFIED
		switch l.Kind {
		case model.Global:
			kind = manifestpb.AttnKind_ATTN_KIND_GLOBAL
		case model.Local:
			kind = manifestpb.AttnKind_ATTN_KIND_LOCAL
		}
		role := manifestpb.KvRole_KV_ROLE_CONSUMER
		if l.KVSource == i {
			role = manifestpb.KvRole_KV_ROLE_PRODUCER
		}
		p.Layers = append(p.Layers, &manifestpb.Layer{Kind: kind, Window: uint32(l.Window), KvSource: uint32(l.KVSource), KvRole: role})
	}
	if rs := cfg.RopeScaling; rs != (model.RopeScaling{}) {
		p.RopeScaling = &manifestpb.RopeScaling{
			Factor:          rs.Factor,
			LowFreqFactor:   rs.LowFreqFactor,
			HighFreqFactor:  rs.HighFreqFactor,
			OriginalContext: uint32(rs.OriginalContext),
		}
	}
	if l := cfg.LongRope; l.On() {
		p.LongRope = &manifestpb.LongRope{
			ShortFactor:     l.ShortFactor,
			LongFactor:      l.LongFactor,
			OriginalContext: uint32(l.OriginalContext),
			AttnFactor:      l.AttnFactor,
		}
	}
	switch cfg.Activation {
	case model.GeGLUTanh:
		p.Activation = manifestpb.Activation_ACTIVATION_GEGLU_TANH
	case model.SwiGLU:
		p.Activation = manifestpb.Activation_ACTIVATION_SWIGLU
	}
	switch cfg.DType {
	case model.Int8:
		p.Dtype = manifestpb.DType_DTYPE_INT8
	case model.F32:
		p.Dtype = manifestpb.DType_DTYPE_F32
	}
	return p
}

// ConfigFromProto converts a manifest config of the current format Version
// to a model.Config and validates it. Enums must be set explicitly: proto3
// decodes a missing field as 0 (UNSPECIFIED), and guessing a default there
// would hide a broken writer.
func ConfigFromProto(p *manifestpb.Config) (*model.Config, error) {
	return configFromProto(p, Version)
}

// configFromProto reads p by the rules of format version: from version 2
// every layer states its KV role; version 1 had none, and a layer was a
// producer exactly when kv_source was its own index.
func configFromProto(p *manifestpb.Config, version uint32) (*model.Config, error) {
	if p == nil {
		return nil, fmt.Errorf("config: missing")
	}
	cfg := &model.Config{
		Vocab:           int(p.Vocab),
		Hidden:          int(p.Hidden),
		Heads:           int(p.Heads),
		KVHeads:         int(p.KvHeads),
		HeadDim:         int(p.HeadDim),
		FFNHidden:       int(p.FfnHidden),
		ContextLen:      int(p.ContextLen),
		RopeThetaGlobal: p.RopeThetaGlobal,
		RopeThetaLocal:  p.RopeThetaLocal,
		NormEps:         p.NormEps,
		NormOnePlus:     p.NormOnePlus,
		QKNorm:          p.QkNorm,
		QKVBias:         p.QkvBias,
		PostAttnNorm:    p.PostAttnNorm,
		PostFFNNorm:     p.PostFfnNorm,
		TiedEmbedding:   p.TiedEmbedding,
		EmbedScale:      p.EmbedScale,
		AttnScale:       p.AttnScale,
		FinalSoftcap:    p.FinalSoftcap,
		AttnSoftcap:     p.AttnSoftcap,
		RotaryDim:       int(p.RotaryDim),
	}
	// Validate bounds the layer count too, but only after this loop has run
	// over whatever the input holds; a cheap early check keeps that bounded.
	if len(p.Layers) > 1<<16 {
		return nil, fmt.Errorf("config: layers has %d entries, far above any model", len(p.Layers))
	}
	cfg.Layers = make([]model.Layer, len(p.Layers))
	for i, l := range p.Layers {
		switch l.GetKind() {
		case manifestpb.AttnKind_ATTN_KIND_GLOBAL:
			cfg.Layers[i].Kind = model.Global
		case manifestpb.AttnKind_ATTN_KIND_LOCAL:
			cfg.Layers[i].Kind = model.Local
		default:
			return nil, fmt.Errorf("config: layers[%d].kind is %v, want ATTN_KIND_GLOBAL or ATTN_KIND_LOCAL", i, l.GetKind())
		}
		cfg.Layers[i].Window = int(l.GetWindow())
		cfg.Layers[i].KVSource = int(l.GetKvSource())
		if err := checkKVRole(i, l, version); err != nil {
			return nil, err
		}
	}
	if rs := p.RopeScaling; rs != nil {
		cfg.RopeScaling = model.RopeScaling{
			Factor:          rs.Factor,
			LowFreqFactor:   rs.LowFreqFactor,
			HighFreqFactor:  rs.HighFreqFactor,
			OriginalContext: int(rs.OriginalContext),
		}
	}
	if l := p.LongRope; l != nil {
		if version < 3 {
			return nil, fmt.Errorf("config: long_rope is set, but format_version %d has no long_rope (version 3 added it)", version)
		}
		if len(l.ShortFactor) == 0 && len(l.LongFactor) == 0 {
			return nil, fmt.Errorf("config: long_rope is present but has no factors")
		}
		cfg.LongRope = model.LongRope{
			ShortFactor:     l.ShortFactor,
			LongFactor:      l.LongFactor,
			OriginalContext: int(l.OriginalContext),
			AttnFactor:      l.AttnFactor,
		}
	}
	switch p.Activation {
	case manifestpb.Activation_ACTIVATION_GEGLU_TANH:
		cfg.Activation = model.GeGLUTanh
	case manifestpb.Activation_ACTIVATION_SWIGLU:
		cfg.Activation = model.SwiGLU
	default:
		return nil, fmt.Errorf("config: activation is %v, want ACTIVATION_GEGLU_TANH or ACTIVATION_SWIGLU", p.Activation)
	}
	switch p.Dtype {
	case manifestpb.DType_DTYPE_INT8:
		cfg.DType = model.Int8
	case manifestpb.DType_DTYPE_F32:
		cfg.DType = model.F32
	default:
		return nil, fmt.Errorf("config: dtype is %v, want DTYPE_INT8 or DTYPE_F32", p.Dtype)
	}
	// Validate lets some NaNs through (a NaN rope_theta_local on a model
	// without local layers, a NaN rope_scaling factor); a manifest has no
	// reason to hold any.
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"rope_theta_global", cfg.RopeThetaGlobal},
		{"rope_theta_local", cfg.RopeThetaLocal},
		{"rope_scaling.factor", cfg.RopeScaling.Factor},
		{"rope_scaling.low_freq_factor", cfg.RopeScaling.LowFreqFactor},
		{"rope_scaling.high_freq_factor", cfg.RopeScaling.HighFreqFactor},
		{"norm_eps", cfg.NormEps},
		{"embed_scale", cfg.EmbedScale},
		{"attn_scale", cfg.AttnScale},
		{"final_softcap", cfg.FinalSoftcap},
		{"attn_softcap", cfg.AttnSoftcap},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return nil, fmt.Errorf("config: %s is %v, must be finite", f.name, f.v)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkKVRole checks that layer i's kv_role agrees with its kv_source: a
// producer names itself, a consumer another layer. Version 1 manifests have
// no role, and must not have one.
func checkKVRole(i int, l *manifestpb.Layer, version uint32) error {
	role, src := l.GetKvRole(), l.GetKvSource()
	if version < 2 {
		if role != manifestpb.KvRole_KV_ROLE_UNSPECIFIED {
			return fmt.Errorf("config: layers[%d].kv_role is %v, but format_version %d has no kv_role", i, role, version)
		}
		return nil
	}
	switch role {
	case manifestpb.KvRole_KV_ROLE_PRODUCER:
		if int64(src) != int64(i) {
			return fmt.Errorf("config: layers[%d] is a KV_ROLE_PRODUCER, so its kv_source must be its own index %d, not %d", i, i, src)
		}
	case manifestpb.KvRole_KV_ROLE_CONSUMER:
		if int64(src) == int64(i) {
			return fmt.Errorf("config: layers[%d] is a KV_ROLE_CONSUMER but its kv_source is itself; name the producer layer it reads", i)
		}
	default:
		return fmt.Errorf("config: layers[%d].kv_role is %v, want KV_ROLE_PRODUCER or KV_ROLE_CONSUMER (required from format_version 2)", i, role)
	}
	return nil
}
