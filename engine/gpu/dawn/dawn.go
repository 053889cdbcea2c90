//go:build !js && !wasip1

// Package dawn is a gpu.Device on Dawn, the WebGPU implementation (and
// Tint, the WGSL compiler) that Chrome runs, for Go tests and tools: the
// kernels are compiled and run by what a browser would compile and run
// them with, here on whatever Vulkan driver Dawn finds (lavapipe in CI).
//
// The device lives in a Node process (node/device.mjs) that serves it with
// the page's own WebGPU code (web/gpu.js) through dawn.node (npm
// `webgpu`); calls cross two pipes with a small binary framing that
// device.mjs describes. A Node process that dies or stops answering makes
// every call fail with an error (after Options.Timeout at most), never
// hang.
package dawn

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/wick-run/wick/engine/gpu"
)

// Tiers of kernels a device can be opened for (web/gpu.js TIERS).
const (
	// TierAll asks for every optional feature wick's kernels can use where
	// the adapter has it, and reports them in Info.
	TierAll = "all"
	// TierFallback asks for no optional feature and reports none, so the
	// portable kernels run, as in a browser without the features.
	TierFallback = "fallback"
)

// Options say which device to open.
type Options struct {
	// Tier is TierAll (the default when empty) or TierFallback.
	Tier string
	// Experimental offers the adapter's chromium-experimental-* features
	// (such as chromium-experimental-subgroup-matrix), which stock Chrome
	// shows only behind its unsafe-WebGPU flag.
	Experimental bool
	// Timestamps asks for timestamp queries where the adapter has them:
	// the device is then a gpu.Timer (gpu.TimerOf), for per-kernel
	// profiles. It changes no kernel.
	Timestamps bool
	// Need is what the caller needs; Open fails when the adapter cannot
	// give it. The device always gets the adapter's largest binding and
	// buffer sizes, as in the browser.
	Need gpu.Limits
	// Timeout bounds each call's wait for the Node process (0: 5 minutes;
	// opening the device gets at least a minute). A call that runs past it
	// fails, and the process is killed. The default covers compiling a
	// whole decode plan on lavapipe with a cold shader cache, which one
	// wait can hold (Dawn compiles a step's pipelines before running it):
	// engine/webgpu's cai-tiny int8-greedy on Dawn's fallback tier waited
	// 90 s for it at accb1da and 132 s at f87f9a2 on a 2-core machine, and
	// failed the 2 minutes this default was under a loaded make test.
	Timeout time.Duration
	// Root is the module's root directory, which holds node/device.mjs and
	// node/node_modules; empty: found from the working directory upward,
	// else from this package's source.
	Root string
}

// Ops of node/device.mjs.
const (
	opCreateBuffer    = 1
	opWriteBuffer     = 2
	opCreateKernel    = 3
	opCreateBindGroup = 4
	opRun             = 5
	opMap             = 6
	opPoll            = 7
	opFree            = 8
	opClose           = 9
	opRunTimed        = 10
)

// Device is gpu.Device on Dawn, served by one Node process. Calls are made
// from one goroutine at a time, as gpu.Device says; a mutex keeps the pipe
// whole if they are not.
type Device struct {
	info    gpu.Info
	timeout time.Duration
	cmd     *exec.Cmd
	req     *os.File // requests, to the process's fd 3
	resp    *os.File // replies, from its fd 4
	logs    *tail    // its stdout and stderr: Dawn's notices
	exited  chan struct{}

	mu      sync.Mutex
	broken  error // set once the process failed: every later call returns it
	nextReq uint32
	maps    map[uint32]func([]byte, error)
}

// Open starts node/device.mjs and opens a device on Dawn. It fails saying
// to run `make deps` when node or node/node_modules is missing.
func Open(opts Options) (*Device, error) {
	tier := opts.Tier
	if tier == "" {
		tier = TierAll
	}
	if tier != TierAll && tier != TierFallback {
		return nil, fmt.Errorf("dawn: unknown tier %q (want %q or %q)", tier, TierAll, TierFallback)
	}
	root, err := findRoot(opts.Root)
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("dawn: node is not installed: run `make deps` (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(root, "node", "node_modules", "webgpu", "package.json")); err != nil {
		return nil, fmt.Errorf("dawn: dawn.node (npm webgpu) is not installed in %s: run `make deps` (%v)", filepath.Join(root, "node", "node_modules"), err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	need := max(opts.Need.MaxStorageBufferBindingSize, opts.Need.MaxBufferSize)
	args := []string{filepath.Join(root, "node", "device.mjs"), "-tier", tier, "-need", strconv.FormatInt(need, 10)}
	if opts.Experimental {
		args = append(args, "-experimental")
	}
	if opts.Timestamps {
		args = append(args, "-timestamps")
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = root
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("dawn: %w", err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, fmt.Errorf("dawn: %w", err)
	}
	logs := &tail{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.ExtraFiles = []*os.File{reqR, respW} // fds 3 and 4
	if err := cmd.Start(); err != nil {
		for _, f := range []*os.File{reqR, reqW, respR, respW} {
			f.Close()
		}
		return nil, fmt.Errorf("dawn: start %s: %w", node, err)
	}
	// The process holds its ends now; closing ours makes its exit read as
	// end of file here, and ours as end of file there.
	reqR.Close()
	respW.Close()
	d := &Device{timeout: timeout, cmd: cmd, req: reqW, resp: respR, logs: logs, exited: make(chan struct{}), maps: map[uint32]func([]byte, error){}}
	go func() {
		cmd.Wait()
		close(d.exited)
	}()
	code, payload, err := d.readReply(max(timeout, time.Minute))
	if err == nil && code < 0 {
		err = errors.New(string(payload))
	}
	if err == nil {
		err = json.Unmarshal(payload, &d.info)
	}
	if err == nil {
		err = d.info.Limits.Check(d.info.Adapter, opts.Need)
	}
	if err != nil {
		d.kill()
		return nil, fmt.Errorf("dawn: open a %s-tier device: %w", tier, err)
	}
	return d, nil
}

// findRoot returns the module root: dir if given, else the first directory
// from the working directory upward with go.mod and node/device.mjs, else
// the one this source file lies in.
func findRoot(dir string) (string, error) {
	ok := func(d string) bool {
		_, err1 := os.Stat(filepath.Join(d, "go.mod"))
		_, err2 := os.Stat(filepath.Join(d, "node", "device.mjs"))
		return err1 == nil && err2 == nil
	}
	if dir != "" {
		if !ok(dir) {
			return "", fmt.Errorf("dawn: %s has no go.mod and node/device.mjs", dir)
		}
		return dir, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if ok(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, found := runtime.Caller(0); found {
		if d := filepath.Join(filepath.Dir(file), "..", "..", ".."); ok(d) {
			return filepath.Clean(d), nil
		}
	}
	return "", errors.New("dawn: cannot find the wick module's root (go.mod and node/device.mjs) from the working directory")
}

// fail marks the device broken by err, kills the process and returns the
// error with what the process printed last.
func (d *Device) fail(err error) error {
	if d.broken == nil {
		d.kill()
		msg := bytes.TrimSpace(d.logs.bytes())
		if len(msg) > 0 {
			err = fmt.Errorf("%w\nnode/device.mjs printed:\n%s", err, msg)
		}
		d.broken = fmt.Errorf("dawn: the Node process failed: %w", err)
	}
	return d.broken
}

func (d *Device) kill() {
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
	}
	d.req.Close()
	d.resp.Close()
}

// readReply reads one reply frame within timeout.
func (d *Device) readReply(timeout time.Duration) (int32, []byte, error) {
	d.resp.SetReadDeadline(time.Now().Add(timeout))
	var head [8]byte
	if _, err := io.ReadFull(d.resp, head[:]); err != nil {
		return 0, nil, d.readError(err, timeout)
	}
	n := binary.LittleEndian.Uint32(head[:])
	if n < 4 {
		return 0, nil, fmt.Errorf("a reply frame of %d bytes", n)
	}
	payload := make([]byte, n-4)
	if _, err := io.ReadFull(d.resp, payload); err != nil {
		return 0, nil, d.readError(err, timeout)
	}
	return int32(binary.LittleEndian.Uint32(head[4:])), payload, nil
}

func (d *Device) readError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no reply within %v", timeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		select {
		case <-d.exited:
			return fmt.Errorf("it exited (%v)", d.cmd.ProcessState)
		case <-time.After(time.Second):
			return errors.New("it closed its replies")
		}
	}
	return err
}

// call sends one request and returns the reply's code and payload; a
// negative code is the device's error, whose message the payload is.
func (d *Device) call(op uint32, operands ...[]byte) (int32, []byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken != nil {
		return 0, nil, d.broken
	}
	n := 4
	for _, o := range operands {
		n += len(o)
	}
	frame := make([]byte, 0, 4+n)
	frame = binary.LittleEndian.AppendUint32(frame, uint32(n))
	frame = binary.LittleEndian.AppendUint32(frame, op)
	for _, o := range operands {
		frame = append(frame, o...)
	}
	d.req.SetWriteDeadline(time.Now().Add(d.timeout))
	if _, err := d.req.Write(frame); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("it took no request within %v", d.timeout)
		}
		return 0, nil, d.fail(err)
	}
	code, payload, err := d.readReply(d.timeout)
	if err != nil {
		return 0, nil, d.fail(err)
	}
	if code < 0 {
		return code, nil, errors.New(string(payload))
	}
	return code, payload, nil
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func i64(v int64) []byte  { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

// Info describes the device as the page's engine would see it.
func (d *Device) Info() gpu.Info { return d.info }

func (d *Device) NewBuffer(size int64, usage gpu.Usage, label string) (gpu.Buffer, error) {
	if size <= 0 || size%4 != 0 {
		return 0, fmt.Errorf("new buffer %q: size %d is not a positive multiple of 4", label, size)
	}
	h, _, err := d.call(opCreateBuffer, i64(size), u32(uint32(usage)), []byte(label))
	if err != nil {
		return 0, fmt.Errorf("new buffer %q of %d bytes: %w", label, size, err)
	}
	return gpu.Buffer(h), nil
}

func (d *Device) Write(b gpu.Buffer, offset int64, data []byte) error {
	if offset%4 != 0 || len(data)%4 != 0 {
		return fmt.Errorf("write to buffer %d: offset %d and length %d must be multiples of 4", b, offset, len(data))
	}
	if len(data) == 0 {
		return nil
	}
	if _, _, err := d.call(opWriteBuffer, u32(uint32(b)), i64(offset), data); err != nil {
		return fmt.Errorf("write to buffer %d: %w", b, err)
	}
	return nil
}

// NewKernel compiles src with Tint; a compile error carries Tint's
// messages with their lines.
func (d *Device) NewKernel(src gpu.KernelSource) (gpu.Kernel, error) {
	h, _, err := d.call(opCreateKernel, u32(uint32(len(src.WGSL))), u32(uint32(len(src.Entry))), []byte(src.WGSL), []byte(src.Entry), []byte(src.Label))
	if err != nil {
		return 0, fmt.Errorf("kernel %s: %w", src.Label, err)
	}
	return gpu.Kernel(h), nil
}

func (d *Device) NewBindGroup(k gpu.Kernel, bindings []gpu.Binding) (gpu.BindGroup, error) {
	entries := make([]byte, 0, len(bindings)*24)
	for _, b := range bindings {
		if b.Offset < 0 || b.Size < 0 {
			return 0, fmt.Errorf("new bind group for kernel %d, binding %d: negative offset or size", k, b.Slot)
		}
		entries = binary.LittleEndian.AppendUint32(entries, b.Slot)
		entries = binary.LittleEndian.AppendUint32(entries, uint32(b.Buffer))
		entries = binary.LittleEndian.AppendUint64(entries, uint64(b.Offset))
		entries = binary.LittleEndian.AppendUint64(entries, uint64(b.Size))
	}
	h, _, err := d.call(opCreateBindGroup, u32(uint32(k)), entries)
	if err != nil {
		return 0, fmt.Errorf("new bind group for kernel %d: %w", k, err)
	}
	return gpu.BindGroup(h), nil
}

// Run submits a command list. Validation errors that Dawn finds later are
// returned by the next Poll.
func (d *Device) Run(cmds []byte) error {
	if len(cmds) == 0 {
		return nil
	}
	if _, _, err := d.call(opRun, cmds); err != nil {
		return fmt.Errorf("run command list: %w", err)
	}
	return nil
}

// RunTimed runs a command list with its dispatches or passes timed by
// timestamp queries (gpu.Timer); done gets the intervals in a later Poll.
func (d *Device) RunTimed(cmds []byte, by gpu.Timing, done func([]gpu.Interval, error)) error {
	if len(cmds) == 0 {
		done(nil, nil)
		return nil
	}
	d.nextReq++
	req := d.nextReq
	if _, _, err := d.call(opRunTimed, u32(req), u32(uint32(by)), cmds); err != nil {
		return fmt.Errorf("run timed command list: %w", err)
	}
	d.maps[req] = func(b []byte, err error) {
		if err != nil {
			done(nil, fmt.Errorf("timestamps: %w", err))
			return
		}
		done(gpu.DecodeIntervals(b))
	}
	return nil
}

func (d *Device) Map(b gpu.Buffer, offset, size int64, done func([]byte, error)) error {
	d.nextReq++
	req := d.nextReq
	if _, _, err := d.call(opMap, u32(uint32(b)), i64(offset), i64(size), u32(req)); err != nil {
		return fmt.Errorf("map buffer %d: %w", b, err)
	}
	d.maps[req] = done
	return nil
}

// Poll runs the callbacks of finished readbacks, in the order they were
// asked for; with wait, it first waits for all submitted work. It returns
// the asynchronous errors (validation, device loss) found since the last
// Poll.
func (d *Device) Poll(wait bool) error {
	w := uint32(0)
	if wait {
		w = 1
	}
	_, p, err := d.call(opPoll, u32(w))
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	bad := func() error { return d.fail(fmt.Errorf("poll: a malformed reply of %d bytes", len(p))) }
	if len(p) < 4 {
		return bad()
	}
	n := binary.LittleEndian.Uint32(p)
	if uint64(len(p)) < 8+uint64(n) {
		return bad()
	}
	asyncErr := string(p[4 : 4+n])
	p = p[4+n:]
	count := binary.LittleEndian.Uint32(p)
	p = p[4:]
	for range count {
		if len(p) < 12 {
			return bad()
		}
		req, failed, n := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:]), binary.LittleEndian.Uint32(p[8:])
		if uint64(len(p)) < 12+uint64(n) {
			return bad()
		}
		data := p[12 : 12+n]
		p = p[12+n:]
		done, ok := d.maps[req]
		if !ok {
			return d.fail(fmt.Errorf("poll: readback %d was not asked for", req))
		}
		delete(d.maps, req)
		if failed != 0 {
			done(nil, fmt.Errorf("map buffer: %s", data))
		} else {
			done(data, nil)
		}
	}
	if wait && len(d.maps) > 0 {
		reqs := make([]uint32, 0, len(d.maps))
		for r := range d.maps {
			reqs = append(reqs, r)
		}
		slices.Sort(reqs)
		return fmt.Errorf("poll: readbacks %v were not delivered after the queue drained", reqs)
	}
	if asyncErr != "" {
		return fmt.Errorf("poll: %s", asyncErr)
	}
	return nil
}

func (d *Device) free(kind, h uint32) {
	if h != 0 {
		d.call(opFree, u32(kind), u32(h))
	}
}

func (d *Device) FreeBuffer(b gpu.Buffer)       { d.free(1, uint32(b)) }
func (d *Device) FreeKernel(k gpu.Kernel)       { d.free(2, uint32(k)) }
func (d *Device) FreeBindGroup(g gpu.BindGroup) { d.free(3, uint32(g)) }

// Close destroys the device and ends the Node process (killing it if it
// does not end by itself within a few seconds).
func (d *Device) Close() error {
	d.mu.Lock()
	broken := d.broken
	d.mu.Unlock()
	if broken != nil {
		return nil // already killed
	}
	_, _, err := d.call(opClose)
	d.req.Close() // the end of its requests, should it still read them
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kill()
	d.broken = errors.New("dawn: the device is closed")
	if err != nil {
		return fmt.Errorf("dawn: close: %w", err)
	}
	return nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

var (
	_ gpu.Device = (*Device)(nil)
	_ gpu.Timer  = (*Device)(nil)
)
