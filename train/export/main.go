// Command export turns the trainer's export directory (train/wicktrain/exportdir.py:
// export.json plus raw tensor files) into a wick model directory, through
// engine/format's writer:
//
//	go run ./train/export -in /tmp/export -tokenizer train/tokenizer/tokenizer.model -out models/wick-cai-21m
//
// The config is the manifest's own Config message in protobuf JSON, so it is
// checked by the rules every loader applies (format.ConfigFromProto, which
// runs model.Config.Validate): a config wick cannot run is refused here,
// before anything is written. The chat template is Gemma's
// (chat.GemmaChatTemplate) on the given tokenizer. The model directory is
// built beside -out and renamed over it only when complete.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
)

func main() {
	in := flag.String("in", "", "the trainer's export directory")
	tok := flag.String("tokenizer", "", "SentencePiece model the corpus was tokenized with")
	out := flag.String("out", "", "model directory to write (replaced whole)")
	shard := flag.Int64("shard-size", 0, "largest shard in bytes (0: format.DefaultShardSize)")
	flag.Parse()
	if *in == "" || *tok == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: export -in DIR -tokenizer FILE -out DIR")
		os.Exit(2)
	}
	if err := export(*in, *tok, *out, *shard); err != nil {
		fmt.Fprintln(os.Stderr, "export:", err)
		os.Exit(1)
	}
}

// exportDoc is export.json.
type exportDoc struct {
	Name    string          `json:"name"`
	Config  json.RawMessage `json:"config"`
	Tensors []tensorEntry   `json:"tensors"`
}

type tensorEntry struct {
	Name   string `json:"name"`
	DType  string `json:"dtype"` // "int8" or "f32"
	Shape  []int  `json:"shape"`
	File   string `json:"file"`
	Offset int64  `json:"offset"`
}

// readExport reads and checks export.json and returns the validated config.
func readExport(dir string) (*exportDoc, *model.Config, error) {
	path := filepath.Join(dir, "export.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var doc exportDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var pc manifestpb.Config
	if err := protojson.Unmarshal(doc.Config, &pc); err != nil {
		return nil, nil, fmt.Errorf("%s: config: %w", path, err)
	}
	cfg, err := format.ConfigFromProto(&pc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: wick cannot run this model: %w", path, err)
	}
	if doc.Name == "" {
		return nil, nil, fmt.Errorf("%s: name is empty", path)
	}
	return &doc, cfg, nil
}

func export(in, tokPath, out string, shardSize int64) error {
	doc, cfg, err := readExport(in)
	if err != nil {
		return err
	}
	w, err := loadWeights(in, doc, cfg)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		return err
	}
	if tok.Vocab() != cfg.Vocab {
		return fmt.Errorf("tokenizer %s has %d pieces, the model's vocab is %d", tokPath, tok.Vocab(), cfg.Vocab)
	}
	tmpl, err := chat.GemmaChatTemplate(tok)
	if err != nil {
		return err
	}
	// Build the whole directory beside out, then swap it in: shards are
	// content-addressed, so writing into an old model would leave stale ones.
	tmp := out + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := format.WriteModel(tmp, doc.Name, cfg, w, tokPath, tmpl, shardSize); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// The model card is written by hand; keep it across re-exports.
	if card, err := os.ReadFile(filepath.Join(out, "README.md")); err == nil {
		if err := os.WriteFile(filepath.Join(tmp, "README.md"), card, 0o644); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// loadWeights fills model.Weights from the export's tensors, checking each
// against the shape and dtype the config needs.
func loadWeights(dir string, doc *exportDoc, cfg *model.Config) (*model.Weights, error) {
	byName := make(map[string]tensorEntry, len(doc.Tensors))
	for _, e := range doc.Tensors {
		if _, dup := byName[e.Name]; dup {
			return nil, fmt.Errorf("export.json: tensor %q listed twice", e.Name)
		}
		byName[e.Name] = e
	}
	files := map[string][]byte{}
	read := func(name, dtype string, shape ...int) ([]byte, error) {
		e, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("export.json: tensor %q missing", name)
		}
		if e.DType != dtype || fmt.Sprint(e.Shape) != fmt.Sprint(shape) {
			return nil, fmt.Errorf("export.json: tensor %q is %s %v, the config needs %s %v", name, e.DType, e.Shape, dtype, shape)
		}
		if filepath.Base(e.File) != e.File || e.File == "" {
			return nil, fmt.Errorf("export.json: tensor %q names file %q outside the export directory", name, e.File)
		}
		data, ok := files[e.File]
		if !ok {
			var err error
			if data, err = os.ReadFile(filepath.Join(dir, e.File)); err != nil {
				return nil, err
			}
			files[e.File] = data
		}
		n := int64(1)
		for _, d := range shape {
			n *= int64(d)
		}
		if dtype == "f32" {
			n *= 4
		}
		if e.Offset < 0 || e.Offset+n > int64(len(data)) {
			return nil, fmt.Errorf("%s: tensor %q at %d+%d runs past the file's %d bytes", e.File, name, e.Offset, n, len(data))
		}
		return data[e.Offset : e.Offset+n], nil
	}
	w := model.NewWeights(cfg)
	for _, spec := range cfg.TensorSpecs() {
		mat, norm := w.Find(spec)
		if norm != nil {
			b, err := read(spec.Name, "f32", spec.Cols)
			if err != nil {
				return nil, err
			}
			*norm = f32s(b)
			continue
		}
		m := model.Mat{Rows: spec.Rows, Cols: spec.Cols}
		if cfg.DType == model.F32 {
			b, err := read(spec.Name, "f32", spec.Rows, spec.Cols)
			if err != nil {
				return nil, err
			}
			m.F32 = f32s(b)
		} else {
			b, err := read(spec.Name, "int8", spec.Rows, spec.Cols)
			if err != nil {
				return nil, err
			}
			s, err := read(spec.Name+".scale", "f32", spec.Rows)
			if err != nil {
				return nil, err
			}
			m.I8 = make([]int8, len(b))
			for i, v := range b {
				m.I8[i] = int8(v)
			}
			m.Scale = f32s(s)
			for r, v := range m.Scale {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					return nil, fmt.Errorf("export.json: tensor %q row %d has scale %v", spec.Name, r, v)
				}
			}
		}
		*mat = m
	}
	w.Tie(cfg)
	return w, nil
}

func f32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
