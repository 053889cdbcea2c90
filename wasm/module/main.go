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

	"github.com/wick-run/wick/engine"
)

func main() {}

var (
	loadedModel *engine.Model
	sessions    = map[int32]*engine.Session{}
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
			m, err := load(o)
			if err != nil {
				return err
			}
			if loadedModel != nil {
				for id, s := range sessions {
					s.Close()
					delete(sessions, id)
				}
				loadedModel.Close()
			}
			loadedModel = m
			out, _ := json.Marshal(loadInfo{Name: m.Name, Backend: m.Backend.Name(), Vocab: m.Config.Vocab, Context: m.Context()})
			setOutput(out)
			return nil
		})
	})
}

var errNoModel = errors.New("no model is loaded: call wick_load first")

// add registers a new session and returns its id.
func add(s *engine.Session) int32 {
	nextSess++
	sessions[nextSess] = s
	return nextSess
}

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
			s, err := loadedModel.NewSession(system)
			if err != nil {
				return err
			}
			setOutput(fmt.Appendf(nil, `{"session":%d}`, add(s)))
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
		if err := s.Close(); err != nil {
			return fail(err)
		}
		return statusDone
	})
}

// onSession runs f on session id as a task, after decoding input n as
// JSON into v (when v is not nil).
func onSession(what string, id int32, n uint32, v any, f func(*task, *engine.Session) error) int32 {
	if v != nil {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", what, err))
		}
		if err := json.Unmarshal(data, v); err != nil {
			return fail(fmt.Errorf("%s: input: %w", what, err))
		}
	}
	return start(func(t *task) error {
		if loadedModel == nil {
			return errNoModel
		}
		s, ok := sessions[id]
		if !ok {
			return fmt.Errorf("%s: no session %d", what, id)
		}
		if err := f(t, s); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// turn runs turn g of session id with input n (turnInput as JSON).
func turn(what string, id int32, n uint32, g generator) int32 {
	var ti turnInput
	return onSession(what, id, n, &ti, func(t *task, s *engine.Session) error {
		r, err := generate(t, s, g, &ti)
		if err != nil {
			return err
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
	return guard(func() int32 { return turn("send", id, n, sendTurn) })
}

// wick_complete continues session id with raw token ids and generates;
// input: {"ids": [...], "max_tokens": ..., sampling fields}.
//
//go:wasmexport wick_complete
func wickComplete(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("complete", id, n, completeTurn) })
}

// wick_regenerate drops session id's last reply and generates a new one
// for the same user message; input: {"max_tokens": ..., sampling fields}.
//
//go:wasmexport wick_regenerate
func wickRegenerate(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("regenerate", id, n, regenerateTurn) })
}

// wick_edit_last replaces session id's last user message (dropping the
// reply to it) and generates a new reply; input as wick_send's.
//
//go:wasmexport wick_edit_last
func wickEditLast(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("edit last", id, n, editTurn) })
}

// wick_continue extends session id's last reply, which the model goes on
// writing (engine.Session.Continue); input: {"max_tokens": ..., sampling
// fields}. The output's tokens and text are the continuation's; content
// is the whole reply.
//
//go:wasmexport wick_continue
func wickContinue(id int32, n uint32) int32 {
	return guard(func() int32 { return turn("continue", id, n, continueTurn) })
}

// wick_set_history replaces session id's conversation without generating;
// input: {"messages": [{"role", "content", "tokens"}, ...], "post_history":
// instructions after the conversation, before each reply (absent: kept as
// they are)}. Output: {"messages": count}.
//
//go:wasmexport wick_set_history
func wickSetHistory(id int32, n uint32) int32 {
	return guard(func() int32 {
		var h historyInput
		return onSession("set history", id, n, &h, func(_ *task, s *engine.Session) error {
			msgs, err := h.messages(loadedModel.Config.Vocab)
			if err != nil {
				return err
			}
			if err := s.SetHistory(msgs); err != nil {
				return err
			}
			if h.PostHistory != nil {
				s.SetPostHistory(*h.PostHistory)
			}
			setOutput(fmt.Appendf(nil, `{"messages":%d}`, len(msgs)))
			return nil
		})
	})
}

// wick_save saves session id: its output is the conversation with its KV,
// bytes for the host to keep (OPFS) and hand to wick_restore later.
//
//go:wasmexport wick_save
func wickSave(id int32) int32 {
	return guard(func() int32 {
		return onSession("save", id, 0, nil, func(_ *task, s *engine.Session) error {
			data, err := s.MarshalBinary()
			if err != nil {
				return err
			}
			setOutput(data)
			return nil
		})
	})
}

// wick_restore starts a session from bytes wick_save made; input: the
// bytes. Output: restored as JSON.
//
//go:wasmexport wick_restore
func wickRestore(n uint32) int32 {
	return guard(func() int32 {
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("restore: %w", err))
		}
		// The input buffer is the host's to reuse once the call pauses.
		data = append([]byte(nil), data...)
		return start(func(t *task) error {
			if loadedModel == nil {
				return errNoModel
			}
			s, r, err := restore(loadedModel, data)
			if err != nil {
				return err
			}
			r.Session = add(s)
			out, _ := json.Marshal(r)
			setOutput(out)
			return nil
		})
	})
}

// wick_resume continues the call in flight after statusToken,
// statusProgress or statusWait. After statusWait, gpuStatus is the host's
// asynchronous GPU status since the last wait (0, or negative after a
// failure whose message last_error holds): handing it over here saves the
// module a crossing into the host per wait (wasm/ABI.md).
//
//go:wasmexport wick_resume
func wickResume(gpuStatus int32) int32 {
	return guard(func() int32 {
		hostGPUStatus = gpuStatus
		return resume()
	})
}

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
