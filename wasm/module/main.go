//go:build wasip1

// Command module is wick's engine as a WebAssembly reactor module: what a
// browser tab runs in a Web Worker, and what wasm/host runs under wazero.
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -trimpath -buildmode=c-shared -o web/wick.wasm ./wasm/module
//
// Its exports drive the engine step by step; its GPU work crosses to the
// host through the wick_gpu imports (engine/gpu's Imported device). No
// export blocks on the GPU: when the engine must wait for a readback, the
// call returns statusWait and the host resumes it once the bytes are
// delivered. wasm/ABI.md is the contract, for the JS side and for wasm/host.
//
// Every file is wasip1-only: the module exists only as WebAssembly.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"unsafe"
)

func main() {}

var (
	loadedModel *loaded
	sessions    = map[int32]*session{}
	nextSess    int32
	input       []byte // the host writes each call's input here (wick_buf)
	output      []byte // the last result (wick_output)
	errMsg      []byte // the last error (wick_error)
)

func setOutput(b []byte) { output = b }

func setError(err error) { errMsg = []byte(err.Error()) }

// guard runs an export's body and turns a panic into statusError: a panic
// that reaches the export boundary traps, and the host would have to throw
// the instance away.
func guard(f func() int32) (st int32) {
	defer func() {
		if r := recover(); r != nil {
			setError(fmt.Errorf("internal error: %v\n%s", r, debug.Stack()))
			st = statusError
		}
	}()
	return f()
}

// fail records err and returns statusError.
func fail(err error) int32 {
	setError(err)
	return statusError
}

// in returns the first n bytes of the input buffer.
func in(n uint32) ([]byte, error) {
	if int(n) > len(input) {
		return nil, fmt.Errorf("input of %d bytes, but wick_buf made room for %d", n, len(input))
	}
	return input[:n], nil
}

func pack(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))<<32 | uint64(len(b))
}

// wick_buf makes room for n bytes of input and returns where the host
// writes them. The buffer is reused: its contents last until the next call
// that takes input.
//
//go:wasmexport wick_buf
func wickBuf(n uint32) uint32 {
	var p uint32
	guard(func() int32 {
		if int(n) > cap(input) || cap(input) == 0 {
			input = make([]byte, max(n, 64))
		}
		input = input[:cap(input)]
		p = uint32(uintptr(unsafe.Pointer(&input[0])))
		return 0
	})
	return p
}

// wick_output returns the last result as ptr<<32 | len.
//
//go:wasmexport wick_output
func wickOutput() uint64 { return pack(output) }

// wick_error returns the last error message as ptr<<32 | len.
//
//go:wasmexport wick_error
func wickError() uint64 { return pack(errMsg) }

// wick_load loads a model; input: loadOptions as JSON.
//
//go:wasmexport wick_load
func wickLoad(n uint32) int32 {
	return guard(func() int32 {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("load: %w", err))
		}
		var o loadOptions
		if err := json.Unmarshal(data, &o); err != nil {
			return fail(fmt.Errorf("load: options: %w", err))
		}
		return start(func(t *task) error {
			ld, err := load(o)
			if err != nil {
				return err
			}
			if loadedModel != nil {
				for id, s := range sessions {
					s.seq.Close()
					delete(sessions, id)
				}
				loadedModel.close()
			}
			loadedModel = ld
			out, _ := json.Marshal(loadInfo{Name: ld.f.Manifest().GetName(), Backend: ld.name, Vocab: ld.cfg.Vocab, Context: ld.context})
			setOutput(out)
			return nil
		})
	})
}

var errNoModel = errors.New("no model is loaded: call wick_load first")

// wick_session starts a conversation; input: the system prompt (UTF-8,
// may be empty). Output: {"session": id}.
//
//go:wasmexport wick_session
func wickSession(n uint32) int32 {
	return guard(func() int32 {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("session: %w", err))
		}
		system := string(data)
		return start(func(t *task) error {
			if loadedModel == nil {
				return errNoModel
			}
			s, err := newSession(loadedModel, system)
			if err != nil {
				return err
			}
			nextSess++
			sessions[nextSess] = s
			setOutput(fmt.Appendf(nil, `{"session":%d}`, nextSess))
			return nil
		})
	})
}

// wick_close ends a conversation and frees its KV cache.
//
//go:wasmexport wick_close
func wickClose(id int32) int32 {
	return guard(func() int32 {
		if current != nil {
			return fail(errBusy)
		}
		s, ok := sessions[id]
		if !ok {
			return fail(fmt.Errorf("close: no session %d", id))
		}
		delete(sessions, id)
		if err := s.seq.Close(); err != nil {
			return fail(err)
		}
		return statusDone
	})
}

// turn runs a turn of session id with input n (turnInput as JSON).
func turn(what string, id int32, n uint32, f func(*session, *task, *turnInput) (*reply, error)) int32 {
	data, err := in(n)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", what, err))
	}
	var ti turnInput
	if err := json.Unmarshal(data, &ti); err != nil {
		return fail(fmt.Errorf("%s: input: %w", what, err))
	}
	return start(func(t *task) error {
		if loadedModel == nil {
			return errNoModel
		}
		s, ok := sessions[id]
		if !ok {
			return fmt.Errorf("%s: no session %d", what, id)
		}
		r, err := f(s, t, &ti)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		out, _ := json.Marshal(r)
		setOutput(out)
		return nil
	})
}

// wick_send adds a user message to session id and generates the reply;
// input: {"text": ..., "max_tokens": ..., sampling fields}.
//
//go:wasmexport wick_send
func wickSend(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("send", id, n, (*session).send) })
}

// wick_complete continues session id with raw token ids and generates;
// input: {"ids": [...], "max_tokens": ..., sampling fields}.
//
//go:wasmexport wick_complete
func wickComplete(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("complete", id, n, (*session).complete) })
}

// wick_resume continues the call in flight after statusToken or statusWait.
//
//go:wasmexport wick_resume
func wickResume() int32 { return guard(resume) }

// wick_cancel ends the turn in flight after a statusToken: it finishes
// with finish "cancelled" (statusDone) and keeps the tokens so far.
//
//go:wasmexport wick_cancel
func wickCancel() int32 {
	return guard(func() int32 {
		if current == nil {
			return fail(errors.New("cancel: no call is in flight"))
		}
		current.cancel = true
		return resume()
	})
}

// wick_mapped delivers readback req: its n bytes are in the input buffer;
// failed != 0 means the readback failed and the input holds the reason.
//
//go:wasmexport wick_mapped
func wickMapped(req uint32, n uint32, failed int32) int32 {
	return guard(func() int32 {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("mapped: %w", err))
		}
		if loadedModel == nil && current == nil {
			return fail(errors.New("mapped: no readback is outstanding"))
		}
		dev := gpuDev
		if dev == nil {
			return fail(errors.New("mapped: the module has no GPU device"))
		}
		failure := ""
		if failed != 0 {
			failure = string(data)
			if failure == "" {
				failure = "failed"
			}
		}
		if err := dev.Deliver(req, data, failure); err != nil {
			return fail(err)
		}
		return statusDone
	})
}
