//go:build wasip1

// Command convert is wick's model converter (engine/convert) as a
// WebAssembly reactor module, web/convert.wasm: the page loads it only when
// a person imports a model from disk (a Hugging Face folder or a GGUF
// file), so the chat module (wasm/module, web/wick.wasm) never links the
// converter, its safetensors and GGUF readers or the Jinja engine that
// compiles chat templates. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -trimpath -buildmode=c-shared -o web/convert.wasm ./wasm/convert
//
// It reads the checkpoint and writes the model directory through WASI
// files: the host preopens the input (read-only; the browser reads each
// range the converter asks for from the File with File.slice, never a
// whole file) and an output directory, and stores what appears there once
// the conversion has finished. The exports follow the chat module's
// conventions (wasm/ABI.md): wick_buf, wick_output and wick_error, statuses,
// and wick_resume or wick_cancel after a pause. web/README.md has the
// protocol.
//
// Every file is wasip1-only: the module exists only as WebAssembly.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"time"
	"unsafe"

	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/model"
)

func main() {}

// Statuses of wick_convert and wick_resume, as the chat module's.
const (
	statusDone     = 0  // finished; wick_output holds convertResult
	statusProgress = 3  // wick_output holds convert.Progress; store what is done, then wick_resume
	statusError    = -1 // failed; wick_error holds one sentence; nothing is left in the output
)

var (
	input   []byte // the host writes each call's input here (wick_buf)
	output  []byte // the last result (wick_output)
	errMsg  []byte // the last error (wick_error)
	current *job   // the conversion in flight, or nil
)

// convertOptions is wick_convert's input.
type convertOptions struct {
	In        string `json:"in"`         // a checkpoint directory or a .gguf file, inside a preopen
	Out       string `json:"out"`        // the output directory, inside a writable preopen
	Name      string `json:"name"`       // the model's name ("": the input's base name)
	F32       bool   `json:"f32"`        // float32 matrices instead of int8
	Now       string `json:"now"`        // RFC 3339: the date chat templates print ("": the clock's)
	ShardSize int64  `json:"shard_size"` // 0: format.DefaultShardSize
}

// convertResult is wick_convert's output.
type convertResult struct {
	Name  string   `json:"name"`
	Arch  string   `json:"arch"`
	Notes []string `json:"notes,omitempty"` // conversations the compiled chat template renders differently
}

func pack(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))<<32 | uint64(len(b))
}

//go:wasmexport wick_buf
func wickBuf(n uint32) uint32 {
	if int(n) > cap(input) || cap(input) == 0 {
		input = make([]byte, max(n, 64))
	}
	input = input[:cap(input)]
	return uint32(uintptr(unsafe.Pointer(&input[0])))
}

//go:wasmexport wick_output
func wickOutput() uint64 { return pack(output) }

//go:wasmexport wick_error
func wickError() uint64 { return pack(errMsg) }

// wick_convert starts a conversion; input: convertOptions as JSON. It runs
// until the first progress report (statusProgress) or its end.
//
//go:wasmexport wick_convert
func wickConvert(n uint32) int32 {
	if current != nil {
		return fail(errors.New("a conversion is in flight: finish it with wick_resume or wick_cancel first"))
	}
	if int(n) > len(input) {
		return fail(fmt.Errorf("input of %d bytes, but wick_buf made room for %d", n, len(input)))
	}
	var o convertOptions
	if err := json.Unmarshal(input[:n], &o); err != nil {
		return fail(fmt.Errorf("convert: options: %w", err))
	}
	if o.Name == "" {
		// As convert names it: the folder's or the file's base name.
		o.Name = strings.TrimSuffix(path.Base(path.Clean(o.In)), ".gguf")
	}
	opts := convert.Options{DType: model.Int8, Name: o.Name, ShardSize: o.ShardSize}
	if o.F32 {
		opts.DType = model.F32
	}
	if o.Now != "" {
		now, err := time.Parse(time.RFC3339, o.Now)
		if err != nil {
			return fail(fmt.Errorf("convert: options: now: %w", err))
		}
		opts.Now = now
	}
	// The GGUF path writes the tokenizer it builds from the file's
	// metadata to a temporary file; the output directory is the one
	// writable place a host gives the module.
	os.Setenv("TMPDIR", o.Out)
	j := &job{wake: make(chan bool), yield: make(chan int32)}
	current = j
	go j.run(func() error {
		opts.Progress = j.progress
		res, err := convert.Convert(o.In, o.Out, opts)
		if err != nil {
			return err
		}
		output, _ = json.Marshal(convertResult{Name: opts.Name, Arch: res.Arch, Notes: res.ChatNotes})
		return nil
	})
	return j.next()
}

// wick_resume continues the conversion after statusProgress.
//
//go:wasmexport wick_resume
func wickResume(int32) int32 { return resumeJob(false) }

// wick_cancel ends the conversion after statusProgress: it fails with
// "cancelled", and nothing is left in the output directory.
//
//go:wasmexport wick_cancel
func wickCancel() int32 { return resumeJob(true) }

func resumeJob(cancel bool) int32 {
	if current == nil {
		return fail(errors.New("resume: no conversion is in flight"))
	}
	j := current
	j.wake <- cancel
	return j.next()
}

func fail(err error) int32 {
	errMsg = []byte(err.Error())
	return statusError
}

// A job is the conversion in flight, on its own goroutine: it pauses at
// every progress report so that the host can show it and store finished
// shards (a browser stores asynchronously, and goroutines only run while an
// export runs, so between exports the job is simply parked). The chat
// module's task (wasm/module/task.go) is the same idea with GPU waits; the
// two are kept apart so that neither module links the other's code.
type job struct {
	wake  chan bool // true: the host cancelled
	yield chan int32
	done  bool
}

var errCancelled = errors.New("cancelled")

func (j *job) run(f func() error) {
	var err error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v\n%s", r, debug.Stack())
		}
		j.done = true
		if err != nil {
			errMsg = []byte(err.Error())
			j.yield <- statusError
			return
		}
		j.yield <- statusDone
	}()
	err = f()
}

func (j *job) next() int32 {
	st := <-j.yield
	if j.done {
		current = nil
	}
	return st
}

// progress hands p to the host and waits for wick_resume or wick_cancel.
func (j *job) progress(p convert.Progress) error {
	output, _ = json.Marshal(p)
	j.yield <- statusProgress
	if <-j.wake {
		return errCancelled
	}
	return nil
}
