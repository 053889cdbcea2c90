//go:build !js && !wasip1

package webgpu

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu"
)

// orderDevice logs, in order, every wait for the device and every
// readback's delivery with its size.
type orderDevice struct {
	gpu.Device
	log *[]string
}

func (d orderDevice) Map(b gpu.Buffer, off, size int64, done func([]byte, error)) error {
	return d.Device.Map(b, off, size, func(data []byte, err error) {
		*d.log = append(*d.log, fmt.Sprintf("readback %d", size))
		done(data, err)
	})
}

func (d orderDevice) Poll(wait bool) error {
	if wait {
		*d.log = append(*d.log, "wait")
	}
	return d.Device.Poll(wait)
}

// TestFirstTokenWaitsForLogitsAlone reads a prompt with the prefix cache
// on and checks that the reply's first token waited for the device once
// per step of the prompt, for that step's logits: the snapshots of the
// blocks a step completed (megabytes on a real model, which the page's
// first token used to wait for, in a wait of their own) come back after
// the token, in the decode's first wait, or with the next step's logits.
// None is lost: every block is in the cache when the turn returns, and a
// new chat with the prompt restores them and replies the same. plain-tiny
// reads the prompt in one step; cai-tiny, whose rings hold 8 positions,
// stops a step at each block's end, so each block's snapshot is still out
// when the next step starts.
func TestFirstTokenWaitsForLogitsAlone(t *testing.T) {
	for _, tc := range []struct {
		dir           string
		prompt, steps int
	}{
		{"../../testdata/plain-tiny", 100, 1},
		{"../../testdata/cai-tiny", 96, 3},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			ids := make([]int32, tc.prompt)
			for i := range ids {
				ids[i] = int32(3 + (i*2654435761)%380)
			}
			blocks := tc.prompt / 32 * 32
			f, err := format.Open(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			w, err := f.LoadWeights()
			if err != nil {
				t.Fatal(err)
			}
			var log []string
			gm, err := New(orderDevice{device(t), &log}, f.Config(), w, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gm.Close() })
			var forwards int
			m, err := engine.Assemble(f, f.Config(), stepBackend{gm, &forwards}, engine.Options{})
			if err != nil {
				t.Fatal(err)
			}
			reply := func() *engine.Reply {
				t.Helper()
				s, err := m.NewSession("")
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				log = log[:0]
				p := engine.GenParams{MaxTokens: 4, OnToken: func(int32, string) { log = append(log, "token") }}
				r, err := s.Complete(context.Background(), ids, p, nil)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			r := reply()
			// The log of a step's wait: its logits, after the blocks of the
			// step before it (started after that step) where it has some.
			logits := fmt.Sprintf("readback %d", 4*f.Config().Vocab)
			block := func(e string) bool {
				var n int
				_, err := fmt.Sscanf(e, "readback %d", &n)
				return err == nil && e != logits && n > 64 // the decode's picks take a few words
			}
			first := slices.Index(log, "token")
			var want []string
			for i := range tc.steps {
				want = append(want, "wait")
				if i > 0 {
					want = append(want, "blocks")
				}
				want = append(want, logits)
			}
			var got []string
			for _, e := range log[:max(first, 0)] {
				if block(e) {
					e = "blocks"
				}
				got = append(got, e)
			}
			if forwards != tc.steps || !slices.Equal(got, want) {
				t.Errorf("%d steps of the prompt did, before the first token:\n%s\nwant a wait for each step's logits (%s), the blocks of the step before it beside them:\n%s",
					forwards, strings.Join(got, "\n"), logits, strings.Join(want, "\n"))
			}
			if !slices.ContainsFunc(log[max(first, 0):], block) {
				t.Errorf("the last step's blocks did not come back after the first token:\n%s", strings.Join(log, "\n"))
			}
			if held := m.Cache.Held(ids); held != blocks {
				t.Errorf("the prefix cache holds %d tokens of the prompt after the turn, want %d", held, blocks)
			}
			again := reply()
			// The last token is prefilled again: its logits start the reply.
			if again.CachedTokens != (tc.prompt-1)/32*32 || !slices.Equal(again.Tokens, r.Tokens) {
				t.Errorf("a new chat restored %d tokens and replied %v; want %d and %v", again.CachedTokens, again.Tokens, (tc.prompt-1)/32*32, r.Tokens)
			}
		})
	}
}
