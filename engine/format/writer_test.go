package format

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// TestAddTensorErrors checks that bad arguments are refused before anything
// is written, leaving the Writer usable.
func TestAddTensorErrors(t *testing.T) {
	const (
		i8  = manifestpb.DType_DTYPE_INT8
		f32 = manifestpb.DType_DTYPE_F32
	)
	for _, c := range []struct {
		name  string
		dtype manifestpb.DType
		shape []int
		data  []byte
		scale string
		want  string
	}{
		{"short data", f32, []int{4}, make([]byte, 15), "", "15 bytes of data, but DTYPE_F32 [4] is 16 bytes"},
		{"long data", i8, []int{2, 3}, make([]byte, 7), "s", "7 bytes of data"},
		{"zero dim", f32, []int{4, 0}, nil, "", "not positive"},
		{"negative dim", f32, []int{-4}, nil, "", "not positive"},
		{"no dims", f32, nil, make([]byte, 4), "", "has 0 dims"},
		{"unknown dtype", manifestpb.DType_DTYPE_UNSPECIFIED, []int{4}, make([]byte, 4), "", "unknown dtype"},
		{"int8 without scale", i8, []int{2, 2}, make([]byte, 4), "", "int8 tensors, and only they"},
		{"f32 with scale", f32, []int{1}, make([]byte, 4), "s", "int8 tensors, and only they"},
		{"duplicate", f32, []int{1}, make([]byte, 4), "", `"first": added twice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewWriter(dir, 1024)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if err := w.AddTensor("first", f32, []int{1}, make([]byte, 4), ""); err != nil {
				t.Fatal(err)
			}
			name := "t"
			if c.name == "duplicate" {
				name = "first"
			}
			checkErr(t, w.AddTensor(name, c.dtype, c.shape, c.data, c.scale), "write model "+dir+": tensor", c.want)
			if err := w.AddTensor("after", f32, []int{2}, make([]byte, 8), ""); err != nil {
				t.Errorf("writer unusable after a refused tensor: %v", err)
			}
		})
	}
}

// TestWriterCleanup checks that every way a write can end leaves no
// temporary files, and that failures remove the shards they created but
// never files that were there before.
func TestWriterCleanup(t *testing.T) {
	cfg := tinyConfig(model.F32, false)
	weights := randomWeights(cfg, 1)
	for _, c := range []struct {
		name string
		run  func(t *testing.T, dir string) error
		want string // "" for success
	}{
		{"success", func(t *testing.T, dir string) error {
			return WriteModel(dir, "tiny", cfg, weights, writeTokenizer(t), nil, 512)
		}, ""},
		{"abort mid-stream", func(t *testing.T, dir string) error {
			w, _ := NewWriter(dir, 512)
			w.AddTensor("a", manifestpb.DType_DTYPE_F32, []int{300}, make([]byte, 1200), "")
			w.Abort()
			return w.AddTensor("b", manifestpb.DType_DTYPE_F32, []int{1}, make([]byte, 4), "")
		}, "writer aborted"},
		{"tensors missing at finish", func(t *testing.T, dir string) error {
			w, _ := NewWriter(dir, 512)
			w.AddTensor("embed", manifestpb.DType_DTYPE_F32, []int{50, 16}, make([]byte, 3200), "")
			return w.Finish("tiny", cfg, writeTokenizer(t), nil)
		}, `manifest would not load: tensor "layers.0.attn_norm": missing`},
		{"tokenizer missing", func(t *testing.T, dir string) error {
			return WriteModel(dir, "tiny", cfg, weights, filepath.Join(t.TempDir(), "nope.json"), nil, 512)
		}, "nope.json: no such file"},
		{"tokenizer of unknown kind", func(t *testing.T, dir string) error {
			return WriteModel(dir, "tiny", cfg, weights, "vocab.txt", nil, 512)
		}, "cannot tell its kind"},
		{"bad chat template", func(t *testing.T, dir string) error {
			return WriteModel(dir, "tiny", cfg, weights, writeTokenizer(t), &manifestpb.ChatTemplate{BosId: 99}, 512)
		}, "chat: bos_id is 99"},
		{"weights of wrong shape", func(t *testing.T, dir string) error {
			bad := randomWeights(cfg, 1)
			bad.Layers[2].WDown.Cols = 8
			return WriteModel(dir, "tiny", cfg, bad, writeTokenizer(t), nil, 512)
		}, `tensor "layers.2.w_down": weights are 16x8, the config needs 16x32`},
		{"finish twice", func(t *testing.T, dir string) error {
			w, _ := NewWriter(dir, 512)
			for _, spec := range cfg.TensorSpecs() {
				if err := writeTensor(w, cfg, weights, spec); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Finish("tiny", cfg, "", nil); err != nil {
				t.Fatal(err)
			}
			w.Abort() // must not undo a finished model
			return w.Finish("tiny", cfg, "", nil)
		}, "already finished"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			// A file from an earlier model must survive whatever happens.
			keep := filepath.Join(dir, "earlier.bin")
			os.WriteFile(keep, []byte("earlier"), 0o644)
			err := c.run(t, dir)
			checkNoTemps(t, dir)
			if _, serr := os.Stat(keep); serr != nil {
				t.Errorf("file from before was removed: %v", serr)
			}
			files := dirFiles(t, dir)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Open(dir); err != nil {
					t.Error(err)
				}
				return
			}
			checkErr(t, err, c.want)
			if c.name == "finish twice" {
				if m, err := Open(dir); err != nil {
					t.Error(err)
				} else if err := m.Verify(); err != nil {
					t.Error(err)
				}
				return
			}
			if !slices.Equal(files, []string{filepath.Base(keep)}) {
				t.Errorf("failed write left files: %v", files)
			}
		})
	}
}

// TestAbortKeepsSharedShards checks that aborting a second write into a
// model directory does not remove a shard the first model still uses, even
// when the second writer produced the same bytes.
func TestAbortKeepsSharedShards(t *testing.T) {
	dir := t.TempDir()
	writeTiny(t, dir, model.Int8, true, 0)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the very same tensors, so the shard is byte for byte the one
	// already there, then give up after it is renamed into place.
	for _, tn := range m.Manifest().Tensors {
		data, err := m.ReadTensor(tn.Name)
		if err != nil {
			t.Fatal(err)
		}
		shape := make([]int, len(tn.Shape))
		for i, d := range tn.Shape {
			shape[i] = int(d)
		}
		if err := w.AddTensor(tn.Name, tn.Dtype, shape, data, tn.Scale); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.closeShard(); err != nil {
		t.Fatal(err)
	}
	if got, want := w.shards[0].File, m.Manifest().Shards[0].File; got != want {
		t.Fatalf("rewritten shard is %s, want the same bytes as %s", got, want)
	}
	w.Abort()
	checkNoTemps(t, dir)
	m2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Verify(); err != nil {
		t.Errorf("abort damaged the earlier model: %v", err)
	}
}

// TestWriterStreams checks that writing does not copy tensors: a tensor many
// shards long costs the writer far less memory than the tensor itself.
func TestWriterStreams(t *testing.T) {
	const size = 16 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	dir := t.TempDir()
	w, err := NewWriter(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := w.AddTensor("big", manifestpb.DType_DTYPE_F32, []int{size / 4}, data, ""); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Errorf("writing a %d-byte tensor allocated %d bytes", size, alloc)
	}
	if n := len(w.tensors[0].Pieces); n != 16 {
		t.Errorf("%d pieces, want 16", n)
	}
}

// TestBeginTensor checks that a tensor written piece by piece through
// BeginTensor gives the same shards and manifest entries as AddTensor,
// pieces merged where they continue one another, and that misuse is
// refused naming the tensor: adding or finishing while a tensor is open,
// too many bytes, part elements, a short Close, a non-finite float; the
// errors after bytes were written abort the Writer and leave no files.
func TestBeginTensor(t *testing.T) {
	const f32 = manifestpb.DType_DTYPE_F32
	data := make([]byte, 4*700)
	for i := range data {
		data[i] = byte(i % 61) // finite float32 values
	}
	write := func(t *testing.T, stream bool) (*Writer, string) {
		dir := t.TempDir()
		w, err := NewWriter(dir, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTensor("small", f32, []int{3}, data[:12], ""); err != nil {
			t.Fatal(err)
		}
		if !stream {
			if err := w.AddTensor("big", f32, []int{7, 100}, data, ""); err != nil {
				t.Fatal(err)
			}
			return w, dir
		}
		tw, err := w.BeginTensor("big", f32, []int{7, 100}, "")
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 400 { // rows, and pieces across shard ends
			if _, err := tw.Write(data[off:min(off+400, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return w, dir
	}
	whole, _ := write(t, false)
	defer whole.Abort()
	streamed, dir := write(t, true)
	if !reflect.DeepEqual(whole.tensors, streamed.tensors) || !reflect.DeepEqual(whole.cur.sum(), streamed.cur.sum()) {
		t.Errorf("streamed tensor placed as %v, AddTensor as %v", streamed.tensors, whole.tensors)
	}
	if err := streamed.Finish("m", tinyConfig(model.F32, true), "", nil); err == nil {
		// The config's tensors are missing: Finish must still refuse, and
		// is here only to end the Writer.
		t.Fatal("finish of a model without its tensors succeeded")
	}
	checkNoTemps(t, dir)

	for _, c := range []struct {
		name string
		do   func(w *Writer, tw *TensorWriter) error
		want string
	}{
		{"add while open", func(w *Writer, tw *TensorWriter) error {
			return w.AddTensor("other", f32, []int{1}, data[:4], "")
		}, `tensor "t" is still being written`},
		{"finish while open", func(w *Writer, tw *TensorWriter) error {
			return w.Finish("m", tinyConfig(model.F32, true), "", nil)
		}, `tensor "t" was begun but not closed`},
		{"too many bytes", func(w *Writer, tw *TensorWriter) error {
			_, err := tw.Write(data[:20])
			return err
		}, "20 more bytes, but only 16 are left"},
		{"part element", func(w *Writer, tw *TensorWriter) error {
			_, err := tw.Write(data[:6])
			return err
		}, "6 bytes is not a whole number of 4-byte elements"},
		{"short close", func(w *Writer, tw *TensorWriter) error {
			if _, err := tw.Write(data[:8]); err != nil {
				return err
			}
			return tw.Close()
		}, "closed with 8 of its bytes not written"},
		{"infinity", func(w *Writer, tw *TensorWriter) error {
			if _, err := tw.Write(data[:8]); err != nil {
				return err
			}
			_, err := tw.Write([]byte{0, 0, 0x80, 0x7f})
			return err
		}, "Inf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewWriter(dir, 1024)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if err := w.AddTensor("first", f32, []int{300}, data[:1200], ""); err != nil {
				t.Fatal(err)
			}
			tw, err := w.BeginTensor("t", f32, []int{4}, "")
			if err != nil {
				t.Fatal(err)
			}
			checkErr(t, c.do(w, tw), c.want)
			if c.name != "add while open" {
				if left := dirFiles(t, dir); len(left) != 0 {
					t.Errorf("a failed tensor left %v", left)
				}
			}
		})
	}
}
