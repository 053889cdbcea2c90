package host

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/wick-run/wick/engine/convert"
)

// Where the converter module (wasm/convert, web/convert.wasm) sees its
// input and output: the browser's import worker mounts the same paths.
const (
	ConvertInMount  = "/in"
	ConvertOutMount = "/out"
)

// ConvertOptions choose what the converter module converts, as
// convert.Options does for the native converter.
type ConvertOptions struct {
	In        string // a Hugging Face checkpoint directory or a .gguf file
	Out       string // the model directory to write (created if missing)
	Name      string // the model's name; "" as convert names it
	Float32   bool   // float32 matrices instead of int8
	Now       time.Time
	ShardSize int64
	// OnProgress, when set, gets each progress report and returns false
	// to cancel the conversion.
	OnProgress func(convert.Progress) bool
}

// ConvertResult is what the converter module reports.
type ConvertResult struct {
	Name  string   `json:"name"`
	Arch  string   `json:"arch"`
	Notes []string `json:"notes"`
}

// Convert runs a conversion in a fresh instance of the converter module
// (r must have compiled web/convert.wasm): o.In's directory is mounted
// read-only at ConvertInMount, o.Out read-write at ConvertOutMount. On an
// error nothing new is left in o.Out.
func (r *Runtime) Convert(ctx context.Context, o ConvertOptions) (*ConvertResult, error) {
	in, err := filepath.Abs(o.In)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(in)
	if err != nil {
		return nil, fmt.Errorf("wasm convert: %w", err)
	}
	inDir, inPath := in, ConvertInMount
	if !fi.IsDir() {
		inDir, inPath = filepath.Dir(in), path.Join(ConvertInMount, filepath.Base(in))
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("wasm convert: %w", err)
	}
	fsc := wazero.NewFSConfig().
		WithReadOnlyDirMount(inDir, ConvertInMount).
		WithDirMount(o.Out, ConvertOutMount)
	mc := r.moduleConfig(fsc)
	st := &state{}
	mod, err := r.rt.InstantiateModule(withState(ctx, st), r.compiled, mc)
	if err != nil {
		return nil, fmt.Errorf("wasm host: instantiate the converter: %w", err)
	}
	inst := &Instance{mod: mod, st: st}
	defer inst.Close(ctx)
	if o.OnProgress != nil {
		inst.onProgress = func(out []byte) (bool, error) {
			var p convert.Progress
			if err := json.Unmarshal(out, &p); err != nil {
				return false, err
			}
			return !o.OnProgress(p), nil
		}
	}
	opts := map[string]any{"in": inPath, "out": ConvertOutMount, "name": o.Name, "f32": o.Float32, "shard_size": o.ShardSize}
	if !o.Now.IsZero() {
		opts["now"] = o.Now.Format(time.RFC3339)
	}
	req, _ := json.Marshal(opts)
	out, err := inst.run(ctx, nil, "wick_convert", req)
	if err != nil {
		return nil, fmt.Errorf("wasm convert: %w", err)
	}
	var res ConvertResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("wasm convert: result: %w", err)
	}
	return &res, nil
}
