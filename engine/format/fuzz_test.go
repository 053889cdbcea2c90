package format

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// The seed corpus in testdata/fuzz/FuzzDecodeManifest is generated from the
// tiny test models; rebuild it with
//
//	go test ./engine/format/ -run TestFuzzCorpus -update-corpus
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the FuzzDecodeManifest seed corpus")

// FuzzDecodeManifest checks that the decoder never panics, and that whatever
// it accepts survives re-encoding: a manifest a reader accepts is one a
// writer could have written.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatalf("accepted manifest does not encode: %v", err)
		}
		m2, err := DecodeManifest(again)
		if err != nil {
			t.Fatalf("re-encoded manifest is refused: %v", err)
		}
		// Compare encodings rather than with proto.Equal: a NaN in a field
		// the config leaves unused would make equal manifests unequal.
		twice, err := proto.MarshalOptions{Deterministic: true}.Marshal(m2)
		if err != nil || !bytes.Equal(again, twice) {
			t.Fatalf("re-encoding is not stable (err %v)", err)
		}
	})
}

// corpusSeeds are valid manifests of the tiny models and broken variants.
func corpusSeeds(t *testing.T) map[string][]byte {
	seeds := map[string][]byte{}
	valid := map[string]*manifestpb.Manifest{}
	for _, c := range []struct {
		name      string
		dtype     model.DType
		tied      bool
		shardSize int64
	}{
		{"valid-int8-tied", model.Int8, true, 512},
		{"valid-f32-untied", model.F32, false, 1000},
		{"valid-int8-one-shard", model.Int8, false, 0},
	} {
		dir := t.TempDir()
		writeTiny(t, dir, c.dtype, c.tied, c.shardSize)
		data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
		if err != nil {
			t.Fatal(err)
		}
		seeds[c.name] = data
		valid[c.name] = readManifestFile(t, dir)
	}
	broken := func(name string, edit func(m *manifestpb.Manifest)) {
		m := proto.Clone(valid["valid-int8-tied"]).(*manifestpb.Manifest)
		edit(m)
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		seeds[name] = data
	}
	broken("bad-version", func(m *manifestpb.Manifest) { m.FormatVersion = Version + 1 })
	broken("no-kv-role", func(m *manifestpb.Manifest) { m.Config.Layers[2].KvRole = 0 })
	seeds["valid-version-1"] = marshalV1(t, valid["valid-int8-tied"])
	longRope := &manifestpb.LongRope{ShortFactor: []float64{1, 1.1, 1.2, 1.3}, LongFactor: []float64{1, 2, 3, 4}, OriginalContext: 16, AttnFactor: 1.2}
	broken("long-rope-in-version-2", func(m *manifestpb.Manifest) { m.Config.LongRope = longRope })
	broken("valid-version-3-long-rope", func(m *manifestpb.Manifest) { m.FormatVersion, m.Config.LongRope = 3, longRope })
	broken("shard-traversal", func(m *manifestpb.Manifest) { m.Shards[0].File = "../" + m.Shards[0].File })
	broken("wrong-shape", func(m *manifestpb.Manifest) { m.Tensors[1].Shape = []uint64{4, 4} })
	broken("missing-tensor", func(m *manifestpb.Manifest) { m.Tensors = m.Tensors[:len(m.Tensors)-1] })
	broken("huge-piece", func(m *manifestpb.Manifest) { m.Tensors[0].Pieces[0].Length = 1<<64 - 1 })
	broken("no-config", func(m *manifestpb.Manifest) { m.Config = nil })
	v := seeds["valid-int8-tied"]
	seeds["truncated"] = v[:len(v)/2]
	return seeds
}

// TestFuzzCorpus checks the committed seeds are what the generator makes
// (so they stay valid as the format changes), or rewrites them.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeManifest")
	for name, data := range corpusSeeds(t) {
		file := []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data))))
		path := filepath.Join(dir, name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, file, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, file) {
			t.Errorf("seed %s is missing or stale; rebuild with -update-corpus", path)
		}
		_, err = DecodeManifest(data)
		if wantOK := len(name) > 5 && name[:5] == "valid"; (err == nil) != wantOK {
			t.Errorf("seed %s: DecodeManifest error %v, want success %v", name, err, wantOK)
		}
	}
}
