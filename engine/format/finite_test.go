package format

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/wick-run/wick/engine/model"
)

// TestNonFiniteRefusedOnWrite checks that the writer (and so wick convert)
// refuses a NaN or infinite float32 tensor, naming it.
func TestNonFiniteRefusedOnWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dtype model.DType
		edit  func(w *model.Weights)
		want  string
	}{
		{"NaN norm", model.Int8, func(w *model.Weights) { w.Layers[1].FFNNorm[3] = float32(math.NaN()) }, `tensor "layers.1.ffn_norm": element 3 is NaN`},
		{"infinite scale", model.Int8, func(w *model.Weights) { w.Layers[0].WO.Scale[2] = float32(math.Inf(1)) }, `tensor "layers.0.wo.scale": element 2 is +Inf`},
		{"NaN f32 matrix", model.F32, func(w *model.Weights) { w.Embed.F32[7] = float32(math.NaN()) }, `tensor "embed": element 7 is NaN`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(tc.dtype, true)
			w := randomWeights(cfg, 1)
			tc.edit(w)
			dir := t.TempDir()
			err := WriteModel(dir, "tiny", cfg, w, writeTokenizer(t), tinyChat, 0)
			checkErr(t, err, tc.want)
			if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
				t.Error("a manifest was written")
			}
		})
	}
}

// TestNonFiniteRefusedOnLoad plants a NaN in a shard of a model whose
// manifest vouches for the new bytes (so only the values are wrong): loading
// must fail naming the tensor; it used to load and answer empty text.
func TestNonFiniteRefusedOnLoad(t *testing.T) {
	for _, tc := range []struct{ tensor, want string }{
		{"layers.2.attn_norm", `tensor "layers.2.attn_norm": element 0 is NaN`},
		{"layers.0.wq.scale", `tensor "layers.0.wq.scale": element 0 is NaN`},
	} {
		t.Run(tc.tensor, func(t *testing.T) {
			dir := goodModel(t)
			m := readManifestFile(t, dir)
			tn := tensorByName(t, m, tc.tensor)
			p := tn.Pieces[0]
			s := m.Shards[p.Shard]
			data := readFileBytes(t, filepath.Join(dir, s.File))
			binary.LittleEndian.PutUint32(data[p.Offset:], math.Float32bits(float32(math.NaN())))
			sum := sha256.Sum256(data)
			os.Remove(filepath.Join(dir, s.File))
			s.Sha256 = hex.EncodeToString(sum[:])
			s.File = shardName(s.Sha256)
			if err := os.WriteFile(filepath.Join(dir, s.File), data, 0o644); err != nil {
				t.Fatal(err)
			}
			writeManifestFile(t, dir, m)
			f, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.LoadWeights()
			checkErr(t, err, tc.want, dir)
		})
	}
}

func readFileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
