//go:build !js && !wasip1

package webgpu

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/internal/modeltest"
	"github.com/wick-run/wick/internal/testmodel"
)

// orderDevice logs, in order, every command list run, every wait for the
// device, and every readback asked for and delivered, with its size.
type orderDevice struct {
	gpu.Device
	log *[]string
}

func (d orderDevice) Map(b gpu.Buffer, off, size int64, done func([]byte, error)) error {
	*d.log = append(*d.log, fmt.Sprintf("ask %d", size))
	return d.Device.Map(b, off, size, func(data []byte, err error) {
		*d.log = append(*d.log, fmt.Sprintf("readback %d", size))
		done(data, err)
	})
}

func (d orderDevice) Run(cmds []byte) error {
	*d.log = append(*d.log, "run")
	return d.Device.Run(cmds)
}

func (d orderDevice) Poll(wait bool) error {
	if wait {
		*d.log = append(*d.log, "wait")
	}
	return d.Device.Poll(wait)
}

// TestFirstTokenWaitsForPickAlone reads a prompt with the prefix cache
// on and checks that the reply's first token waited for the device once,
// for the last step's pick (engine.FirstPicker: one id drawn on the GPU,
// greedy or with the page's default draw; the logits never come back):
// the steps before it compute no logits and are not waited for, and the
// snapshots of the blocks each step completed
// (megabytes on a real model, which the page's first token used to wait
// for, in a wait of their own after each step) come back beside those
// logits, or after the token for the last step's blocks, whose copies are
// not even submitted before the token: between the last step's pick
// and the token only the reply's first decode batch runs, submitted after
// the pick's readback was asked for, so the wait does not cover it
// (engine.PickSubmitter). None is lost:
// every block is in the cache when the turn returns, and a new chat with
// the prompt restores them and replies the same. plain-tiny reads the
// prompt in one step; cai-tiny, whose rings hold 8 positions, stops a step
// at each block's end, so each block's snapshot is still out when the
// next step starts.
func TestFirstTokenWaitsForPickAlone(t *testing.T) {
	for _, tc := range []struct {
		dir           string
		prompt, steps int
	}{
		{"../../testdata/plain-tiny", 100, 1},
		{"../../testdata/cai-tiny", 96, 3},
	} {
		for _, draw := range []struct {
			name string
			p    sample.Params
		}{
			{"greedy", sample.Params{}},
			{"page-defaults", sample.Params{Temperature: 0.8, TopP: 0.95, Seed: 7}},
		} {
			t.Run(tc.dir+"/"+draw.name, func(t *testing.T) {
				ids := make([]int32, tc.prompt)
				for i := range ids {
					ids[i] = int32(3 + (i*2654435761)%380)
				}
				blocks := tc.prompt / 32 * 32
				f, w := modeltest.Load(t, tc.dir)
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
					p := engine.GenParams{Sample: draw.p, MaxTokens: 4, OnToken: func(int32, string) { log = append(log, "token") }}
					r, err := s.Complete(context.Background(), ids, p, nil)
					if err != nil {
						t.Fatal(err)
					}
					return r
				}
				r := reply()
				// One wait: the blocks of the steps before the last, then the
				// last step's pick (one id, in a readback of 8 bytes).
				pick := "readback 8"
				block := func(e string) bool {
					var n int
					_, err := fmt.Sscanf(e, "readback %d", &n)
					return err == nil && n > 64 // the picks take a few words
				}
				first := slices.Index(log, "token")
				want := []string{"wait"}
				for range tc.steps - 1 {
					want = append(want, "blocks")
				}
				want = append(want, pick)
				var got []string
				ran := false // a list run since the last wait
				for _, e := range log[:max(first, 0)] {
					ran = e == "run" || ran && e != "wait"
					if e == "run" || strings.HasPrefix(e, "ask ") {
						continue
					}
					if block(e) {
						e = "blocks"
					}
					got = append(got, e)
				}
				if ran {
					t.Errorf("a command list ran between the wait for the last step's pick and the first token:\n%s", strings.Join(log, "\n"))
				}
				// From the pick's readback asked for to the wait: one list,
				// the reply's first decode batch.
				ask := slices.Index(log, "ask 8")
				if wait := slices.Index(log, "wait"); ask < 0 || wait < ask || !slices.Equal(log[ask:wait], []string{"ask 8", "run"}) {
					t.Errorf("want the pick's readback asked for, then the first decode batch run, then the wait:\n%s", strings.Join(log, "\n"))
				}
				if forwards != tc.steps || !slices.Equal(got, want) {
					t.Errorf("%d steps of the prompt did, before the first token:\n%s\nwant one wait, for the last step's pick (%s), the blocks of the steps before it beside them:\n%s",
						forwards, strings.Join(got, "\n"), pick, strings.Join(want, "\n"))
				}
				if !slices.ContainsFunc(log[max(first, 0):], block) {
					t.Errorf("the last step's blocks did not come back after the first token:\n%s", strings.Join(log, "\n"))
				}
				if held := m.Cache.Held(ids); held != blocks {
					t.Errorf("the prefix cache holds %d tokens of the prompt after the turn, want %d", held, blocks)
				}
				again := reply()
				// The last token is prefilled again: its pick starts the reply.
				if again.CachedTokens != (tc.prompt-1)/32*32 || !slices.Equal(again.Tokens, r.Tokens) {
					t.Errorf("a new chat restored %d tokens and replied %v; want %d and %v", again.CachedTokens, again.Tokens, (tc.prompt-1)/32*32, r.Tokens)
				}
			})
		}
	}
}

// TestFillMatchesForward checks that Fill writes the KV Forward writes:
// a prompt filled in steps (the last 5 tokens forwarded) gives the logits
// and the KV, bit for bit, of the prompt forwarded whole, in a sequence
// whose arena held other KV before.
func TestFillMatchesForward(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	w := testmodel.Random(cfg, 5)
	d := device(t)
	prompt := testmodel.Tokens(45, testVocab, 11)
	_, a := gpuSequence(t, d, cfg, w, Options{Chunk: 16}, 64)
	_, b := gpuSequence(t, d, cfg, w, Options{Chunk: 16}, 64)
	want, got := make([]float32, cfg.Vocab), make([]float32, cfg.Vocab)
	if err := a.Forward(testmodel.Tokens(60, testVocab, 12), 0, got); err != nil { // poison a's arena
		t.Fatal(err)
	}
	if err := b.Forward(prompt, 0, want); err != nil {
		t.Fatal(err)
	}
	if err := a.Fill(prompt[:40], 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Forward(prompt[40:], 40, got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f32bytes(got), f32bytes(want)) {
		t.Error("the logits after Fill and Forward are not those of one Forward")
	}
	sa, err := a.Snapshot(0, len(prompt))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Snapshot(0, len(prompt))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sa.Data, sb.Data) {
		t.Error("the KV Fill wrote is not the KV Forward wrote")
	}
}

// TestForwardPickMatchesForward draws the token after prompts of one and
// of several steps (Chunk 16) on the GPU (ForwardPick) and checks it
// against engine/sample over the logits Forward reads back from a second
// sequence: greedy, the page's default draw, top-k with a repetition
// penalty. The pick's sequence then holds the prompt's KV: its next
// Forward gives the reference's logits bit for bit.
func TestForwardPickMatchesForward(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	w := testmodel.Random(cfg, 5)
	d := device(t)
	for _, n := range []int{1, 16, 45} {
		for _, p := range []sample.Params{
			{},
			{Temperature: 0.8, TopP: 0.95, Seed: 7},
			{Temperature: 1.1, TopK: 5, RepetitionPenalty: 1.3, Seed: 3},
		} {
			t.Run(fmt.Sprintf("%d/%+v", n, p), func(t *testing.T) {
				prompt := testmodel.Tokens(n, testVocab, uint64(20+n))
				history := append(testmodel.Tokens(9, testVocab, 1), prompt...)
				_, a := gpuSequence(t, d, cfg, w, Options{Chunk: 16}, 64)
				_, b := gpuSequence(t, d, cfg, w, Options{Chunk: 16}, 64)
				if err := a.Forward(testmodel.Tokens(60, testVocab, 12), 0, make([]float32, cfg.Vocab)); err != nil { // poison a's arena
					t.Fatal(err)
				}
				logits := make([]float32, cfg.Vocab)
				if err := b.Forward(prompt, 0, logits); err != nil {
					t.Fatal(err)
				}
				want := sample.NewSampler(p).Sample(logits, history)
				got, err := a.ForwardPick(prompt, 0, p, 0, history)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("picked %d on the GPU, engine/sample %d from the logits", got, want)
				}
				next, ref := make([]float32, cfg.Vocab), make([]float32, cfg.Vocab)
				if err := a.Forward([]int32{want}, n, next); err != nil {
					t.Fatal(err)
				}
				if err := b.Forward([]int32{want}, n, ref); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(f32bytes(next), f32bytes(ref)) {
					t.Error("after the pick, the next position's logits are not those after Forward")
				}
			})
		}
	}
}
