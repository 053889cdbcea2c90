package format

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name      string
		dtype     model.DType
		tied      bool
		shardSize int64
		minShards int // a small cap must split the model, and the embedding
	}{
		{"int8 tied small shards", model.Int8, true, 512, 4},
		{"f32 untied small shards", model.F32, false, 1000, 4},
		{"int8 untied one shard", model.Int8, false, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, want := writeTiny(t, dir, c.dtype, c.tied, c.shardSize)
			checkNoTemps(t, dir)

			m, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Verify(); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Config(), cfg) {
				t.Errorf("config:\n got %+v\nwant %+v", m.Config(), cfg)
			}
			if m.Dir() != dir || m.Manifest().Name != "tiny" {
				t.Errorf("Dir() = %q, name %q", m.Dir(), m.Manifest().Name)
			}
			got, err := m.LoadWeights()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Error("loaded weights differ from written weights")
			}
			tok, err := m.ReadTokenizer()
			if err != nil {
				t.Fatal(err)
			}
			if string(tok) != tinyTokenizer || filepath.Base(m.TokenizerPath()) != "tokenizer.json" {
				t.Errorf("tokenizer %s = %q", m.TokenizerPath(), tok)
			}
			checkLayout(t, dir, m.Manifest(), c.shardSize, c.minShards)
		})
	}
}

// checkLayout checks the shard files against the manifest and the writer's
// promises: content-addressed names, sizes within the cap, aligned tensor
// starts, at least one tensor split across shards when the cap is small.
func checkLayout(t *testing.T, dir string, man *manifestpb.Manifest, shardSize int64, minShards int) {
	t.Helper()
	if shardSize <= 0 {
		shardSize = DefaultShardSize
	}
	if len(man.Shards) < minShards {
		t.Errorf("%d shards, want at least %d", len(man.Shards), minShards)
	}
	for _, s := range man.Shards {
		fi, err := os.Stat(filepath.Join(dir, s.File))
		if err != nil {
			t.Fatal(err)
		}
		if uint64(fi.Size()) != s.Size || s.Size > uint64(shardSize) {
			t.Errorf("shard %s: %d bytes on disk, %d in manifest, cap %d", s.File, fi.Size(), s.Size, shardSize)
		}
		if s.File != "shard-"+s.Sha256+".bin" {
			t.Errorf("shard %s is not named after its sha256 %s", s.File, s.Sha256)
		}
	}
	split := false
	for _, tn := range man.Tensors {
		if off := tn.Pieces[0].Offset; off%Alignment != 0 {
			t.Errorf("tensor %q starts at %d, not aligned to %d", tn.Name, off, Alignment)
		}
		split = split || len(tn.Pieces) > 1
	}
	if minShards > 1 && !split {
		t.Error("no tensor spans several shards")
	}
	if len(man.Shards) == 1 {
		for _, tn := range man.Tensors {
			if len(tn.Pieces) != 1 {
				t.Errorf("tensor %q has %d pieces in a one-shard model", tn.Name, len(tn.Pieces))
			}
		}
	}
}

func TestTiedLMHeadNotWritten(t *testing.T) {
	dir := t.TempDir()
	writeTiny(t, dir, model.Int8, true, 0)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range m.Manifest().Tensors {
		if strings.HasPrefix(tn.Name, model.NameLMHead) {
			t.Errorf("tied model has tensor %q", tn.Name)
		}
	}
	if s := m.Manifest().Tensors[0]; s.Name != "embed" || s.Dtype != manifestpb.DType_DTYPE_INT8 || s.Scale != "embed.scale" {
		t.Errorf("first tensor is %v", s)
	}
}

func TestConfigProto(t *testing.T) {
	cfg := tinyConfig(model.Int8, true)
	cfg.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
	got, err := ConfigFromProto(ConfigToProto(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, cfg)
	}

	for _, c := range []struct {
		name string
		edit func(*manifestpb.Config)
		want string
	}{
		{"unspecified dtype", func(p *manifestpb.Config) { p.Dtype = 0 }, "config: dtype is DTYPE_UNSPECIFIED"},
		{"unknown dtype", func(p *manifestpb.Config) { p.Dtype = 9 }, "config: dtype is 9"},
		{"unspecified activation", func(p *manifestpb.Config) { p.Activation = 0 }, "config: activation"},
		{"unspecified layer kind", func(p *manifestpb.Config) { p.Layers[1].Kind = 0 }, "config: layers[1].kind"},
		{"zero hidden", func(p *manifestpb.Config) { p.Hidden = 0 }, "config: hidden is 0"},
		{"consumer of a consumer", func(p *manifestpb.Config) {
			p.Layers = append(p.Layers, &manifestpb.Layer{Kind: 2, Window: 4, KvSource: 2, KvRole: manifestpb.KvRole_KV_ROLE_CONSUMER})
		}, "config: layer 3"},
		{"NaN theta", func(p *manifestpb.Config) { p.RopeThetaLocal = math.NaN() }, "config: rope_theta_local is NaN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := ConfigToProto(cfg)
			c.edit(p)
			_, err := ConfigFromProto(p)
			checkErr(t, err, c.want)
		})
	}
	_, err = ConfigFromProto(nil)
	checkErr(t, err, "config: missing")
}
