package convert

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/quant"
)

// sparseTensor is a tensor of a synthesised checkpoint: bfloat16, zero but
// for the rows in rows, which are written.
type sparseTensor struct {
	name  string
	shape []int64
	rows  map[int64][]float32
}

// writeSparseSafetensors writes a bfloat16 safetensors file at path whose
// zero data is a hole (the file is sparse), so that a checkpoint of
// gigabytes costs the disk only its header and the rows given.
func writeSparseSafetensors(t *testing.T, path string, tensors []sparseTensor) int64 {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	offsets := make([]int64, len(tensors))
	var end int64
	for i, st := range tensors {
		n := int64(2)
		for _, d := range st.shape {
			n *= d
		}
		offsets[i] = end
		header[st.name] = map[string]any{"dtype": "BF16", "shape": st.shape, "data_offsets": []int64{end, end + n}}
		end += n
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := 8 + int64(len(h))
	if err := f.Truncate(start + end); err != nil {
		t.Fatal(err)
	}
	if err := binary.Write(f, binary.LittleEndian, uint64(len(h))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(h); err != nil {
		t.Fatal(err)
	}
	for i, st := range tensors {
		cols := st.shape[len(st.shape)-1]
		for r, vals := range st.rows {
			b := make([]byte, 2*len(vals))
			for j, v := range vals {
				binary.LittleEndian.PutUint16(b[2*j:], uint16(math.Float32bits(v)>>16))
			}
			if _, err := f.WriteAt(b, start+offsets[i]+2*r*cols); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return start + end
}

// heapPeak samples the bytes of live and not yet collected heap objects
// (runtime/metrics) every millisecond until stop is called, which returns
// the largest sample.
func heapPeak() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	read := func() {
		metrics.Read(sample)
		peak = max(peak, sample[0].Value.Uint64())
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				read()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		read()
		return peak
	}
}

// TestStreamingConversion converts a synthesised Llama checkpoint of about
// 2.3 GB, most of it one 1.15-billion-value embedding, to int8 and checks,
// through runtime/metrics, that the heap never held 1 GB: the whole int8
// embedding alone is 1.15 GB, so a conversion that held any whole output
// tensor would fail. The checkpoint is a sparse file of zeros with a few
// written rows, whose int8 values and scales are checked in the shards.
// It reads 2.3 GB and writes 1.2 GB, so it is skipped with -short.
func TestStreamingConversion(t *testing.T) {
	if testing.Short() {
		t.Skip("converts a 2.3 GB checkpoint")
	}
	const (
		vocab, hidden, heads, kvHeads, ffn = 280000, 4096, 32, 8, 64
		headDim                            = hidden / heads
	)
	in := t.TempDir()
	cfg := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "vocab_size": vocab, "hidden_size": hidden,
		"intermediate_size": ffn, "num_attention_heads": heads, "num_key_value_heads": kvHeads,
		"num_hidden_layers": 1, "max_position_embeddings": 512, "tie_word_embeddings": true,
		"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1,
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(fixtureDir, "llama", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in, "tokenizer.model"), tok, 0o644); err != nil {
		t.Fatal(err)
	}
	// Rows with values exact in bfloat16, to check after conversion.
	ramp := func(scale float32) []float32 {
		v := make([]float32, hidden)
		for i := range v {
			v[i] = scale * float32(i%256-128)
		}
		return v
	}
	rows := map[int64][]float32{0: ramp(1.0 / 64), vocab - 1: ramp(-2)}
	layer := func(n string) string { return "model.layers.0." + n }
	size := writeSparseSafetensors(t, filepath.Join(in, "model.safetensors"), []sparseTensor{
		{"model.embed_tokens.weight", []int64{vocab, hidden}, rows},
		{"model.norm.weight", []int64{hidden}, nil},
		{layer("input_layernorm.weight"), []int64{hidden}, nil},
		{layer("post_attention_layernorm.weight"), []int64{hidden}, nil},
		{layer("self_attn.q_proj.weight"), []int64{heads * headDim, hidden}, nil},
		{layer("self_attn.k_proj.weight"), []int64{kvHeads * headDim, hidden}, nil},
		{layer("self_attn.v_proj.weight"), []int64{kvHeads * headDim, hidden}, nil},
		{layer("self_attn.o_proj.weight"), []int64{hidden, heads * headDim}, nil},
		{layer("mlp.gate_proj.weight"), []int64{ffn, hidden}, nil},
		{layer("mlp.up_proj.weight"), []int64{ffn, hidden}, nil},
		{layer("mlp.down_proj.weight"), []int64{hidden, ffn}, nil},
	})
	if size < 2e9 {
		t.Fatalf("checkpoint is %d bytes, want over 2 GB", size)
	}

	out := t.TempDir()
	runtime.GC()
	stop := heapPeak()
	start := time.Now()
	_, err = Convert(in, out, Options{DType: model.Int8})
	elapsed := time.Since(start)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("converted a %.2f GB checkpoint in %v; peak heap %.1f MB", float64(size)/1e9, elapsed.Round(time.Millisecond), float64(peak)/1e6)
	if peak >= 1e9 {
		t.Errorf("peak heap %d bytes, want under 1 GB", peak)
	}

	// The written rows come back quantised by the one int8 rule.
	mdata, err := os.ReadFile(filepath.Join(out, format.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(mdata)
	if err != nil {
		t.Fatal(err)
	}
	for r, vals := range rows {
		want := make([]int8, hidden)
		wantScale := quant.Quantize(want, vals)
		got := readTensorBytes(t, out, m, model.NameEmbed, r*hidden, hidden)
		for i := range want {
			if int8(got[i]) != want[i] {
				t.Fatalf("embedding row %d column %d is %d, want %d", r, i, int8(got[i]), want[i])
			}
		}
		sb := readTensorBytes(t, out, m, model.NameEmbed+scaleSuffix, 4*r, 4)
		if s := math.Float32frombits(binary.LittleEndian.Uint32(sb)); s != wantScale {
			t.Errorf("embedding row %d scale %v, want %v", r, s, wantScale)
		}
	}
}

// readTensorBytes reads n bytes at offset off of the named tensor from the
// shards of the model in dir, following its pieces.
func readTensorBytes(t *testing.T, dir string, m *manifestpb.Manifest, name string, off, n int64) []byte {
	t.Helper()
	for _, tt := range m.Tensors {
		if tt.Name != name {
			continue
		}
		out := make([]byte, 0, n)
		var pos int64
		for _, p := range tt.Pieces {
			lo, hi := max(off, pos), min(off+n, pos+int64(p.Length))
			if lo < hi {
				f, err := os.Open(filepath.Join(dir, m.Shards[p.Shard].File))
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, hi-lo)
				_, err = f.ReadAt(b, int64(p.Offset)+lo-pos)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b...)
			}
			pos += int64(p.Length)
		}
		if int64(len(out)) != n {
			t.Fatalf("tensor %q has no bytes %d..%d", name, off, off+n)
		}
		return out
	}
	t.Fatalf("no tensor %q in the manifest", name)
	return nil
}
