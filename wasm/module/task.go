//go:build wasip1

package main

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/wick-run/wick/engine/gpu"
)

// Status codes every driving export returns (see wasm/ABI.md).
const (
	statusDone  = 0 // the call finished; wick_output holds its result
	statusToken = 1 // a token was generated; wick_output holds it; call wick_resume
	statusWait  = 2 // the module waits for the host's readbacks and fills; deliver them, then call wick_resume
	// statusProgress: a chunk of the prompt was read (only for turns whose
	// input asks for it); wick_output holds prefillOut; call wick_resume.
	statusProgress = 3
	statusError    = -1 // the call failed; wick_error holds the message; the module is still usable
)

// A task is one engine call that may have to give control back to the host
// before it finishes: to wait for GPU readbacks (which a browser delivers
// asynchronously, so the module may never block on them), or to hand over a
// generated token. It runs on its own goroutine; the export that started it,
// and every wick_resume after, runs it until its next pause. Goroutines only
// run while an export runs, so between exports the task is simply parked.
type task struct {
	wake   chan struct{}
	yield  chan int32
	done   bool
	cancel bool // the host asked to stop; the task ends at its next pause
}

// current is the task in flight, or nil.
var current *task

var errBusy = errors.New("a call is in flight: finish it with wick_resume (or wick_cancel) first")

// start runs f as the current task until it pauses or ends, and returns the
// status to hand to the host. A panic in f becomes an error: a panic must
// never reach the export, where it would trap and kill the instance.
func start(f func(t *task) error) int32 {
	if current != nil {
		setError(errBusy)
		return statusError
	}
	t := &task{wake: make(chan struct{}), yield: make(chan int32)}
	current = t
	go func() {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("internal error: %v\n%s", r, debug.Stack())
			}
			t.done = true
			if err != nil {
				setError(err)
				t.yield <- statusError
				return
			}
			t.yield <- statusDone
		}()
		err = f(t)
	}()
	return t.next()
}

// next waits for the task's next pause or its end.
func (t *task) next() int32 {
	st := <-t.yield
	if t.done {
		current = nil
	}
	return st
}

// pause hands status to the host and waits, parked, for wick_resume. It
// returns errCancelled when the host answered with wick_cancel instead;
// the request is consumed, so the engine work that winds the call down
// (a last forward, a readback) can still wait for the host.
func (t *task) pause(status int32) error {
	t.yield <- status
	<-t.wake
	if t.cancel {
		t.cancel = false
		return errCancelled
	}
	return nil
}

var errCancelled = errors.New("cancelled by the host")

// resume continues the current task.
func resume() int32 {
	if current == nil {
		setError(errors.New("resume: no call is in flight"))
		return statusError
	}
	t := current
	t.wake <- struct{}{}
	return t.next()
}

// hostGPUStatus is the GPU status the host handed to the last wick_resume.
var hostGPUStatus int32

// waitHost is the GPU device's wait: it pauses the current task until the
// host has delivered readbacks and written fills, and returns the host's
// asynchronous GPU failures since the last wait (a WGSL compile error, a
// validation error, a failed fill), which the host hands to wick_resume.
func waitHost() error {
	if current == nil {
		return errors.New("the module must wait for the host outside any call")
	}
	hostGPUStatus = 0
	if err := current.pause(statusWait); err != nil {
		return err
	}
	if st := hostGPUStatus; st < 0 {
		return gpu.HostError(st)
	}
	return nil
}
