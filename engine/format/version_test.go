package format

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// asVersion1 is m as a version 1 writer made it: no kv_role.
func asVersion1(m *manifestpb.Manifest) *manifestpb.Manifest {
	m = proto.Clone(m).(*manifestpb.Manifest)
	m.FormatVersion = 1
	for _, l := range m.Config.Layers {
		l.KvRole = manifestpb.KvRole_KV_ROLE_UNSPECIFIED
	}
	return m
}

func marshalV1(t *testing.T, m *manifestpb.Manifest) []byte {
	t.Helper()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(asVersion1(m))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// withGlobalProducer is tinyConfig with a fourth layer, a global producer:
// read as a consumer, it would be a valid consumer of layer 0, so only an
// explicit role tells the two apart.
func withGlobalProducer(dtype model.DType) *model.Config {
	cfg := tinyConfig(dtype, true)
	cfg.Layers = append(cfg.Layers, model.Layer{Kind: model.Global, KVSource: 3})
	return cfg
}

// TestKVRoleExplicit checks that a layer's KV role is never read from
// proto3's zero default: a writer that omits kv_source (0) on a producer, or
// omits kv_role, is refused naming the layer, where format version 1 read
// the layer as a consumer of layer 0.
func TestKVRoleExplicit(t *testing.T) {
	cfg := withGlobalProducer(model.Int8)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(p *manifestpb.Config)
		want string // "" means accepted
	}{
		{"as written", func(p *manifestpb.Config) {}, ""},
		{"producer with kv_source omitted", func(p *manifestpb.Config) { p.Layers[3].KvSource = 0 },
			"layers[3] is a KV_ROLE_PRODUCER, so its kv_source must be its own index 3, not 0"},
		{"role omitted", func(p *manifestpb.Config) { p.Layers[3].KvRole = 0 },
			"layers[3].kv_role is KV_ROLE_UNSPECIFIED"},
		{"consumer naming itself", func(p *manifestpb.Config) { p.Layers[3].KvRole = manifestpb.KvRole_KV_ROLE_CONSUMER },
			"layers[3] is a KV_ROLE_CONSUMER but its kv_source is itself"},
		{"unknown role", func(p *manifestpb.Config) { p.Layers[1].KvRole = 7 }, "layers[1].kv_role is 7"},
		{"consumer of layer 0, stated", func(p *manifestpb.Config) {
			p.Layers[3].KvSource, p.Layers[3].KvRole = 0, manifestpb.KvRole_KV_ROLE_CONSUMER
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := ConfigToProto(cfg)
			c.edit(p)
			_, err := ConfigFromProto(p)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkErr(t, err, c.want)
		})
	}
}

// TestVersion1 checks that manifests of format version 1 still load, by
// version 1's rule (a producer is a layer whose kv_source is its own
// index), that a kv_role in one is refused, and that version 1 manifests
// may not smuggle in what version 2 refuses beyond that rule.
func TestVersion1(t *testing.T) {
	dir := goodModel(t)
	v2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := v2.Manifest().FormatVersion; got != 2 {
		t.Fatalf("writer wrote format_version %d for a model without LongRoPE; want 2", got)
	}
	old := copyDir(t, dir)
	writeManifestFile(t, old, asVersion1(v2.Manifest()))
	v1, err := Open(old)
	if err != nil {
		t.Fatalf("version 1 manifest refused: %v", err)
	}
	if !reflect.DeepEqual(v1.Config(), v2.Config()) {
		t.Errorf("version 1 config %+v, version 2 %+v", v1.Config(), v2.Config())
	}
	if _, err := v1.LoadWeights(); err != nil {
		t.Fatal(err)
	}

	// An omitted kv_source in version 1 meant "consumer of layer 0", and
	// still does: that is the rule those files were written under.
	p := asVersion1(&manifestpb.Manifest{Config: ConfigToProto(withGlobalProducer(model.Int8))}).Config
	p.Layers[3].KvSource = 0
	cfg, err := configFromProto(p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Producer(3) || cfg.Layers[3].KVSource != 0 {
		t.Errorf("version 1 layer 3 with kv_source 0: producer %v, source %d; want a consumer of 0", cfg.Producer(3), cfg.Layers[3].KVSource)
	}

	withRole := asVersion1(v2.Manifest())
	withRole.Config.Layers[0].KvRole = manifestpb.KvRole_KV_ROLE_PRODUCER
	data, err := proto.Marshal(withRole)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeManifest(data)
	checkErr(t, err, "layers[0].kv_role is KV_ROLE_PRODUCER, but format_version 1 has no kv_role")

	zero := asVersion1(v2.Manifest())
	zero.FormatVersion = 0
	data, err = proto.Marshal(zero)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeManifest(data)
	checkErr(t, err, "format_version is 0")
}

// TestVersion3LongRope checks that a model with LongRoPE is written as
// format version 3 and reads back equal, that a version 2 manifest holding
// long_rope is refused (a version 2 reader would drop the field and rotate
// wrongly), and that a version 3 manifest without it reads as before.
func TestVersion3LongRope(t *testing.T) {
	cfg := tinyConfig(model.F32, true)
	cfg.LongRope = model.LongRope{
		ShortFactor: []float64{1, 1.1, 1.2, 1.3}, LongFactor: []float64{1, 2, 3, 4},
		OriginalContext: 16, AttnFactor: 1.25,
	}
	dir := t.TempDir()
	if err := WriteModel(dir, "tiny", cfg, randomWeights(cfg, 1), writeTokenizer(t), tinyChat, 0); err != nil {
		t.Fatal(err)
	}
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Manifest().FormatVersion; got != 3 {
		t.Errorf("format_version %d, want 3", got)
	}
	if !reflect.DeepEqual(f.Config().LongRope, cfg.LongRope) {
		t.Errorf("long_rope read back as %+v, wrote %+v", f.Config().LongRope, cfg.LongRope)
	}

	m := proto.Clone(f.Manifest()).(*manifestpb.Manifest)
	m.FormatVersion = 2
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeManifest(data)
	checkErr(t, err, "long_rope is set, but format_version 2 has no long_rope")

	m.FormatVersion = 3
	m.Config.LongRope.ShortFactor = m.Config.LongRope.ShortFactor[:3]
	data, err = proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeManifest(data)
	checkErr(t, err, "long_rope.short_factor has 3 entries, want one per rotated pair (4)")

	plain := proto.Clone(f.Manifest()).(*manifestpb.Manifest)
	plain.Config.LongRope = nil
	if data, err = proto.Marshal(plain); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManifest(data); err != nil {
		t.Errorf("version 3 manifest without long_rope: %v", err)
	}
}
