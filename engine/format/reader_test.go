package format

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// goodModel is written once; each bad-model case damages its own copy.
func goodModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeTiny(t, dir, model.Int8, true, 512)
	return dir
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range dirFiles(t, from) {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

func readManifestFile(t *testing.T, dir string) *manifestpb.Manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m := new(manifestpb.Manifest)
	if err := proto.Unmarshal(data, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeManifestFile(t *testing.T, dir string, m *manifestpb.Manifest) {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func tensorByName(t *testing.T, m *manifestpb.Manifest, name string) *manifestpb.Tensor {
	t.Helper()
	for _, tn := range m.Tensors {
		if tn.Name == name {
			return tn
		}
	}
	t.Fatalf("no tensor %q", name)
	return nil
}

// embedShard is the file holding the first piece of the embedding.
func embedShard(t *testing.T, dir string) string {
	m := readManifestFile(t, dir)
	return m.Shards[tensorByName(t, m, "embed").Pieces[0].Shard].File
}

// editManifest returns a damage function that edits the manifest.
func editManifest(edit func(t *testing.T, m *manifestpb.Manifest)) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		m := readManifestFile(t, dir)
		edit(t, m)
		writeManifestFile(t, dir, m)
	}
}

// TestBadModel damages a good model one way at a time and checks that the
// step that must notice (open, load or verify) fails with an error naming
// the file and the tensor or field.
func TestBadModel(t *testing.T) {
	good := goodModel(t)
	shard := embedShard(t, good)
	otherShard := readManifestFile(t, good).Shards[1].File
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		step   string // "open", "load" or "verify"
		wants  []string
	}{
		{"truncated shard", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, shard), 100); err != nil {
				t.Fatal(err)
			}
		}, "load", []string{`tensor "embed"`, "shard " + shard, "size 100", "truncated"}},
		{"corrupted byte", func(t *testing.T, dir string) {
			path := filepath.Join(dir, shard)
			data, _ := os.ReadFile(path)
			data[len(data)/2] ^= 0x40
			os.WriteFile(path, data, 0o644)
		}, "load", []string{`tensor "embed"`, "shard " + shard, "sha256 mismatch"}},
		{"missing shard", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, shard))
		}, "load", []string{`tensor "embed"`, shard, "no such file"}},
		{"renamed shard", func(t *testing.T, dir string) {
			os.Rename(filepath.Join(dir, shard), filepath.Join(dir, "shard-"+strings.Repeat("0", 64)+".bin"))
		}, "verify", []string{"verify model", shard, "no such file"}},
		{"shard replaced by another", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, otherShard))
			os.WriteFile(filepath.Join(dir, shard), data, 0o644)
		}, "load", []string{`tensor "embed"`, shard, "replaced"}},
		{"corrupted tokenizer", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(strings.ToUpper(tinyTokenizer)), 0o644)
		}, "verify", []string{"tokenizer tokenizer.json", "sha256 mismatch"}},
		{"missing manifest", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestFile))
		}, "open", []string{ManifestFile, "no such file"}},
		{"truncated manifest", func(t *testing.T, dir string) {
			path := filepath.Join(dir, ManifestFile)
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:len(data)/2], 0o644)
		}, "open", []string{"load model", ManifestFile}},
		{"empty manifest", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), nil, 0o644)
		}, "open", []string{ManifestFile, "format_version is 0"}},
		{"garbage manifest", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte("\xff\xff\xff\xff"), 0o644)
		}, "open", []string{ManifestFile, "not a manifest protobuf"}},
		{"bad version", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.FormatVersion = Version + 1
		}), "open", []string{ManifestFile, fmt.Sprintf("format_version is %d", Version+1)}},
		{"kv_role omitted", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Config.Layers[1].KvRole = manifestpb.KvRole_KV_ROLE_UNSPECIFIED
		}), "open", []string{ManifestFile, "layers[1].kv_role is KV_ROLE_UNSPECIFIED"}},
		{"unknown tensor", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			norm := tensorByName(t, m, "layers.0.attn_norm")
			// A piece in a shard of its own, so nothing but its name is wrong.
			sum := strings.Repeat("ab", 32)
			m.Shards = append(m.Shards, &manifestpb.Shard{File: "shard-" + sum + ".bin", Size: 64, Sha256: sum})
			m.Tensors = append(m.Tensors, &manifestpb.Tensor{Name: "layers.0.attn_bias", Dtype: norm.Dtype, Shape: norm.Shape,
				Pieces: []*manifestpb.Piece{{Shard: uint32(len(m.Shards) - 1), Length: 64}}})
		}), "open", []string{ManifestFile, `"layers.0.attn_bias"`, "not used by this config"}},
		{"unspecified dtype", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Config.Dtype = manifestpb.DType_DTYPE_UNSPECIFIED
		}), "open", []string{ManifestFile, "config: dtype"}},
		{"invalid config", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Config.KvHeads = 3
		}), "open", []string{ManifestFile, "config: heads (2) is not a multiple of kv_heads (3)"}},
		{"config disagrees with tensors", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Config.Hidden = 32
		}), "open", []string{ManifestFile, `tensor "embed": shape [50 16], the config needs [50 32]`}},
		{"tensor of wrong shape", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "layers.1.ffn_norm").Shape = []uint64{4, 4}
		}), "open", []string{`tensor "layers.1.ffn_norm": shape [4 4], the config needs [16]`}},
		{"tensor of wrong dtype", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tn := tensorByName(t, m, "layers.0.wo")
			tn.Dtype, tn.Shape, tn.Scale = manifestpb.DType_DTYPE_F32, []uint64{16, 4}, ""
		}), "open", []string{`tensor "layers.0.wo": dtype DTYPE_F32, the config needs DTYPE_INT8`}},
		{"shape disagrees with pieces", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "layers.0.attn_norm").Shape = []uint64{17}
		}), "open", []string{`tensor "layers.0.attn_norm": pieces hold 64 bytes`, "needs 68"}},
		{"missing tensor", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Tensors = deleteTensor(m.Tensors, "layers.1.w_up")
		}), "open", []string{`tensor "layers.1.w_up": missing`}},
		{"missing scale", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Tensors = deleteTensor(m.Tensors, "embed.scale")
		}), "open", []string{`tensor "embed": scale tensor "embed.scale" is missing`}},
		{"scale of wrong shape", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "layers.0.wq.scale").Shape = []uint64{2, 8}
		}), "open", []string{`tensor "layers.0.wq": scale tensor "layers.0.wq.scale"`, "want DTYPE_F32 [16]"}},
		{"duplicate tensor", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Tensors = append(m.Tensors, m.Tensors[3])
		}), "open", []string{"listed twice"}},
		{"shard path traversal", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Shards[0].File = "../" + m.Shards[0].File
		}), "open", []string{ManifestFile, "shard 0", "not a plain file name"}},
		{"shard absolute path", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Shards[0].File = "/etc/passwd"
		}), "open", []string{"shard 0", "not a plain file name"}},
		{"shard named dot-dot", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Shards[0].File = ".."
		}), "open", []string{"shard 0", "not a plain file name"}},
		{"shard not named after its hash", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Shards[0].File = otherShard
		}), "open", []string{"shard 0", "does not match its sha256"}},
		{"shard hash not hex", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Shards[0].Sha256 = "xyz"
		}), "open", []string{"shard 0", "not 64 lowercase hex"}},
		{"tokenizer path traversal", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Tokenizer.File = "../../etc/passwd"
		}), "open", []string{"tokenizer", "not a plain file name"}},
		{"tokenizer kind unspecified", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Tokenizer.Kind = 0
		}), "open", []string{"tokenizer: kind"}},
		{"shard index out of range", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "layers.2.wo").Pieces[0].Shard = 999
		}), "open", []string{`tensor "layers.2.wo": piece 0: shard 999 out of range`}},
		{"piece past end of shard", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			p := tensorByName(t, m, "final_norm").Pieces[0]
			p.Offset = m.Shards[p.Shard].Size
		}), "open", []string{`tensor "final_norm": piece 0`, "do not lie inside shard"}},
		{"piece length overflows", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "final_norm").Pieces[0].Length = math.MaxUint64
		}), "open", []string{`tensor "final_norm": piece 0`, "do not lie inside shard"}},
		{"huge shape", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "final_norm").Shape = []uint64{1 << 62, 1 << 62}
		}), "open", []string{`tensor "final_norm": shape`, "too large"}},
		{"misaligned tensor", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			// Move a tensor that has room behind it, so only alignment is wrong.
			for _, tn := range m.Tensors {
				if p := tn.Pieces[0]; len(tn.Pieces) == 1 && p.Offset+p.Length+4 <= m.Shards[p.Shard].Size {
					p.Offset += 4
					return
				}
			}
			t.Fatal("no tensor with room behind it")
		}), "open", []string{"starts at offset", "not a multiple of 256"}},
		{"overlapping tensors", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			tensorByName(t, m, "layers.0.ffn_norm").Pieces = tensorByName(t, m, "layers.0.attn_norm").Pieces
		}), "open", []string{"overlaps", "layers.0.attn_norm", "layers.0.ffn_norm"}},
		{"stop id outside vocabulary", editManifest(func(t *testing.T, m *manifestpb.Manifest) {
			m.Chat.StopIds = []int32{50}
		}), "open", []string{"chat: stop_ids[0] is 50"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, good)
			c.damage(t, dir)
			m, err := Open(dir)
			if c.step == "open" {
				checkErr(t, err, append([]string{"load model " + dir}, c.wants...)...)
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if c.step == "load" {
				_, err = m.LoadWeights()
			} else {
				err = m.Verify()
			}
			checkErr(t, err, append([]string{dir}, c.wants...)...)
		})
	}
}

func deleteTensor(ts []*manifestpb.Tensor, name string) []*manifestpb.Tensor {
	var out []*manifestpb.Tensor
	for _, t := range ts {
		if t.Name != name {
			out = append(out, t)
		}
	}
	return out
}

// TestShardCheckedOnce checks that a shard is hashed on first use only: a
// corruption after the first read goes unnoticed by the same Model (that is
// the documented cost model) but a fresh Open notices it.
func TestShardCheckedOnce(t *testing.T) {
	dir := goodModel(t)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, err := m.ReadTensor("final_norm")
	if err != nil {
		t.Fatal(err)
	}
	shard := m.Manifest().Shards[tensorByName(t, m.Manifest(), "final_norm").Pieces[0].Shard].File
	path := filepath.Join(dir, shard)
	data, _ := os.ReadFile(path)
	data[len(data)-1] ^= 1
	os.WriteFile(path, data, 0o644)
	if _, err := m.ReadTensor("final_norm"); err != nil {
		t.Errorf("second read of a checked shard: %v", err)
	}
	m2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m2.ReadTensor("final_norm")
	checkErr(t, err, `tensor "final_norm"`, shard, "sha256 mismatch")
	if len(before) != 64 {
		t.Errorf("final_norm is %d bytes, want 64", len(before))
	}
	_, err = m.ReadTensor("no.such.tensor")
	checkErr(t, err, `tensor "no.such.tensor": not in the manifest`)
}
