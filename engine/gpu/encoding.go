package gpu

import (
	"encoding/binary"
	"fmt"
)

// The command list is the one place a step crosses the boundary, so its
// encoding is fixed here and nowhere else. It is a sequence of little-endian
// uint32 words; each command is an opcode word followed by its operands:
//
//	opWrite    1, buffer, offset, length, data...   (data padded to a word)
//	opDispatch 2, kernel, bindGroup, x, y, z
//	opCopy     3, src, srcOffset, dst, dstOffset, size
//
// Offsets and sizes are bytes and multiples of 4; they fit in uint32
// because no single buffer wick makes reaches 4 GiB. All writes come first:
// the executor applies them before the dispatches and copies, in order
// (queue.writeBuffer, or copies from a mapped staging buffer at the head of
// the list's first command buffer, as web/gpu.js does). Dispatches
// in a row share one compute pass; WebGPU orders them and makes each see
// the storage writes of the ones before.
//
// A list may hold several steps (a decode batch). So that the GPU starts on
// the first while the rest is still being encoded, an executor submits what
// it has encoded before it begins a compute pass once SplitDispatches
// dispatches have gathered since its last submit: the queue runs command
// buffers in order, so the split changes nothing the list computes.
const (
	opWrite    = 1
	opDispatch = 2
	opCopy     = 3
)

// SplitDispatches is how many dispatches an executor encodes before it
// submits them at the next compute pass it begins (web/gpu.js mirrors it):
// about one decode step of the smallest models, a third of one of
// Gemma-3-1B's, so a batch's steps start on the GPU one by one.
const SplitDispatches = 64

// Encoder records a command list.
type Encoder struct {
	words    []byte
	recorded bool // a dispatch or copy was recorded: no more writes
	err      error
}

func (e *Encoder) put(v ...uint32) {
	for _, w := range v {
		e.words = binary.LittleEndian.AppendUint32(e.words, w)
	}
}

func (e *Encoder) u32(what string, v int64) uint32 {
	if v < 0 || v > 1<<32-1 || v%4 != 0 {
		if e.err == nil {
			e.err = fmt.Errorf("command list: %s %d is not a multiple of 4 in 0..4GiB", what, v)
		}
		return 0
	}
	return uint32(v)
}

// Write records a write of data into b at offset.
func (e *Encoder) Write(b Buffer, offset int64, data []byte) {
	if e.recorded && e.err == nil {
		e.err = fmt.Errorf("command list: write to buffer %d after a dispatch or copy; writes come first", b)
	}
	e.put(opWrite, uint32(b), e.u32("write offset", offset), uint32(len(data)))
	e.words = append(e.words, data...)
	for len(e.words)%4 != 0 {
		e.words = append(e.words, 0)
	}
}

// Dispatch records a kernel run over x*y*z workgroups with bind group g.
func (e *Encoder) Dispatch(k Kernel, g BindGroup, x, y, z int) {
	e.recorded = true
	if x <= 0 || y <= 0 || z <= 0 || x > 65535 || y > 65535 || z > 65535 {
		if e.err == nil {
			e.err = fmt.Errorf("command list: dispatch of kernel %d over %dx%dx%d workgroups; each count must be 1..65535", k, x, y, z)
		}
		return
	}
	e.put(opDispatch, uint32(k), uint32(g), uint32(x), uint32(y), uint32(z))
}

// Copy records a copy of size bytes from src at srcOff to dst at dstOff.
func (e *Encoder) Copy(src Buffer, srcOff int64, dst Buffer, dstOff, size int64) {
	e.recorded = true
	e.put(opCopy, uint32(src), e.u32("copy offset", srcOff), uint32(dst), e.u32("copy offset", dstOff), e.u32("copy size", size))
}

// Reset empties the encoder for reuse, keeping its memory.
func (e *Encoder) Reset() { e.words, e.recorded, e.err = e.words[:0], false, nil }

// Bytes returns the encoded list.
func (e *Encoder) Bytes() []byte { return e.words }

// Err returns the first recording error (a bad offset or workgroup count).
func (e *Encoder) Err() error { return e.err }

// Command is one decoded command; fields not used by its Op are zero.
type Command struct {
	Op             int
	Buffer         Buffer // opWrite
	Offset         int64  // opWrite
	Data           []byte // opWrite, aliases the list
	Kernel         Kernel // opDispatch
	Group          BindGroup
	X, Y, Z        uint32
	Src, Dst       Buffer // opCopy
	SrcOff, DstOff int64
	Size           int64
}

// Command opcodes, for executors.
const (
	OpWrite    = opWrite
	OpDispatch = opDispatch
	OpCopy     = opCopy
)

// Decode calls f for each command of a list, in order, and checks that
// writes come first.
func Decode(cmds []byte, f func(Command) error) error {
	if len(cmds)%4 != 0 {
		return fmt.Errorf("command list: %d bytes is not whole words", len(cmds))
	}
	word := func(i int) uint32 { return binary.LittleEndian.Uint32(cmds[4*i:]) }
	n := len(cmds) / 4
	recorded := false
	for i := 0; i < n; {
		need := func(k int) error {
			if i+k > n {
				return fmt.Errorf("command list: command at word %d is cut short", i)
			}
			return nil
		}
		var c Command
		c.Op = int(word(i))
		switch c.Op {
		case opWrite:
			if err := need(4); err != nil {
				return err
			}
			if recorded {
				return fmt.Errorf("command list: write at word %d after a dispatch or copy", i)
			}
			length := int(word(i + 3))
			words := (length + 3) / 4
			if err := need(4 + words); err != nil {
				return err
			}
			c.Buffer, c.Offset = Buffer(word(i+1)), int64(word(i+2))
			c.Data = cmds[4*(i+4) : 4*(i+4)+length]
			i += 4 + words
		case opDispatch:
			if err := need(6); err != nil {
				return err
			}
			recorded = true
			c.Kernel, c.Group = Kernel(word(i+1)), BindGroup(word(i+2))
			c.X, c.Y, c.Z = word(i+3), word(i+4), word(i+5)
			i += 6
		case opCopy:
			if err := need(6); err != nil {
				return err
			}
			recorded = true
			c.Src, c.SrcOff = Buffer(word(i+1)), int64(word(i+2))
			c.Dst, c.DstOff, c.Size = Buffer(word(i+3)), int64(word(i+4)), int64(word(i+5))
			i += 6
		default:
			return fmt.Errorf("command list: unknown opcode %d at word %d", c.Op, i)
		}
		if err := f(c); err != nil {
			return err
		}
	}
	return nil
}
