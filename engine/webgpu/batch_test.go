//go:build !js && !wasip1

package webgpu

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/internal/testmodel"
)

// countingDevice counts the calls that would each cross into JS in a
// browser.
type countingDevice struct {
	gpu.Device
	runs, maps, waits, makes, frees int
	copies                          int // buffer copies in the command lists run
}

func (d *countingDevice) Run(cmds []byte) error {
	d.runs++
	d.copies += listCopies(cmds)
	return d.Device.Run(cmds)
}

// listCopies counts the copy commands of a command list (the encoding of
// engine/gpu's Encoder: write 1, buffer, offset, length, data words;
// dispatch 2 and copy 3 with five operands each).
func listCopies(cmds []byte) int {
	n := 0
	for i := 0; i+4 <= len(cmds); {
		switch op := binary.LittleEndian.Uint32(cmds[i:]); op {
		case 1:
			i += 16 + int(binary.LittleEndian.Uint32(cmds[i+12:])+3)&^3
		case 3:
			n++
			fallthrough
		default:
			i += 24
		}
	}
	return n
}
func (d *countingDevice) Map(b gpu.Buffer, off, size int64, done func([]byte, error)) error {
	d.maps++
	return d.Device.Map(b, off, size, done)
}
func (d *countingDevice) Poll(wait bool) error {
	if wait {
		d.waits++
	}
	return d.Device.Poll(wait)
}
func (d *countingDevice) NewBuffer(size int64, u gpu.Usage, label string) (gpu.Buffer, error) {
	d.makes++
	return d.Device.NewBuffer(size, u, label)
}
func (d *countingDevice) NewBindGroup(k gpu.Kernel, b []gpu.Binding) (gpu.BindGroup, error) {
	d.makes++
	return d.Device.NewBindGroup(k, b)
}
func (d *countingDevice) FreeBuffer(b gpu.Buffer)       { d.frees++; d.Device.FreeBuffer(b) }
func (d *countingDevice) FreeBindGroup(g gpu.BindGroup) { d.frees++; d.Device.FreeBindGroup(g) }

// TestBatchIsOneCommandList decodes greedy and sampled batches and checks
// that each is one command list, one readback and one wait, and that a
// batch no larger than the ones before makes and frees nothing. The picks
// of a batch of k steps must be those of k batches of one step (the
// sampler's step and history carried from batch to batch), so every step
// of a batch reads its own position's Step block and RoPE rows.
func TestBatchIsOneCommandList(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	w := testmodel.Random(cfg, 3)
	const start, steps = 5, 8
	prompt := testmodel.Tokens(start+1, testVocab, 9)
	for _, tc := range []struct {
		name string
		p    *sample.Params // nil: greedy
	}{
		{"greedy", nil},
		{"sampled", &sample.Params{Temperature: 0.9, TopP: 0.95, RepetitionPenalty: 1.2, Seed: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cd := &countingDevice{Device: device(t)}
			_, s := gpuSequence(t, cd, cfg, w, Options{}, 64)
			logits := make([]float32, cfg.Vocab)
			decode := func(token int32, pos, k int, history []int32) []int32 {
				t.Helper()
				var ids []int32
				var err error
				if tc.p == nil {
					ids, err = s.Greedy(token, pos, k)
				} else {
					ids, err = s.Sample(token, pos, k, *tc.p, uint32(pos-start), history)
				}
				if err != nil {
					t.Fatal(err)
				}
				return ids
			}
			// Every run starts from the prompt's KV again: the local
			// layers' rings hold only the last window of positions.
			prefill := func() {
				t.Helper()
				if err := s.Forward(prompt[:start], 0, logits); err != nil {
					t.Fatal(err)
				}
			}
			// Step by step: batches of one.
			prefill()
			history := slices.Clone(prompt)
			var one []int32
			for i := range steps {
				id := decode(history[len(history)-1], start+i, 1, history)[0]
				one = append(one, id)
				history = append(history, id)
			}
			// The same steps as one batch, twice: the second batch must
			// reuse what the first made.
			for try := range 2 {
				prefill()
				before := *cd
				got := decode(prompt[start], start, steps, prompt)
				if !slices.Equal(got, one) {
					t.Fatalf("try %d: a batch of %d picked %v, batches of one %v", try, steps, got, one)
				}
				d := fmt.Sprintf("runs %d, maps %d, waits %d", cd.runs-before.runs, cd.maps-before.maps, cd.waits-before.waits)
				if d != "runs 1, maps 1, waits 1" {
					t.Errorf("try %d: a batch of %d steps made %s; want one of each", try, steps, d)
				}
				if try == 1 && (cd.makes != before.makes || cd.frees != before.frees) {
					t.Errorf("a second batch made %d objects and freed %d; want none", cd.makes-before.makes, cd.frees-before.frees)
				}
			}
		})
	}
}

// TestSamplingHistoryGrowsByDoubling draws batches after a conversation
// that grows by 64 ids a batch from 200 to 2,048: after the first batch
// (which makes the sampler's buffers, its history room 256 ids), the
// history buffer and its bind groups are made afresh three times (512,
// 1,024, 2,048), not at every batch.
func TestSamplingHistoryGrowsByDoubling(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	cd := &countingDevice{Device: device(t)}
	_, s := gpuSequence(t, cd, cfg, testmodel.Random(cfg, 3), Options{}, 64)
	if err := s.Forward(testmodel.Tokens(5, testVocab, 9), 0, make([]float32, cfg.Vocab)); err != nil {
		t.Fatal(err)
	}
	history := testmodel.Tokens(2048, testVocab, 4)
	p := sample.Params{Temperature: 0.8, TopP: 0.95, Seed: 7}
	const steps = 2
	var before countingDevice
	for n := 200; n+steps <= len(history); n += 64 {
		if n == 264 {
			before = *cd
		}
		// The same position each time: the history is the sampler's
		// alone, and the KV past the prompt is rewritten.
		if _, err := s.Sample(history[n-1], 5, steps, p, 0, history[:n]); err != nil {
			t.Fatal(err)
		}
	}
	perGrowth := 1 + samplingKernels // the buffer and every kernel's bind group
	if made := cd.makes - before.makes; made != 3*perGrowth {
		t.Errorf("%d buffers and bind groups made over %d batches after the first: %.1f times the history buffer and its bind groups, want 3", made, (len(history)-264)/64, float64(made)/float64(perGrowth))
	}
}

// TestPipelinedBatchesMatchOne submits a batch and, before its picks are
// back, one that continues it (engine.BatchPipeliner), and checks that
// the two return the picks of one batch as long as both: the second
// embeds the first's last pick where the GPU left it and draws on from the
// sampler's step and history there, also where its history outgrows the
// state buffer (grown by a copy on the GPU). Each batch is one command
// list and one readback, and the second's readback is asked for only once
// the first's picks are back: a host's wait delivers every readback asked
// for, so asking earlier would wait for both.
func TestPipelinedBatchesMatchOne(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	w := testmodel.Random(cfg, 3)
	const start, first, second = 5, 3, 4
	prompt := testmodel.Tokens(start+1, testVocab, 9)
	for _, tc := range []struct {
		name    string
		p       sample.Params
		history int // ids of history before the prompt's last (the sampler's alone)
	}{
		{"greedy", sample.Params{}, 0},
		{"sampled", sample.Params{Temperature: 0.9, TopP: 0.95, RepetitionPenalty: 1.2, Seed: 7}, 0},
		// 256-first ids fill the first batch's state buffer exactly (256
		// ids at least), so the second's picks need a larger one.
		{"sampled, history grows", sample.Params{Temperature: 1.1, TopK: 40, RepetitionPenalty: 1.5, Seed: 8}, 256 - first - start - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cd := &countingDevice{Device: device(t)}
			_, s := gpuSequence(t, cd, cfg, w, Options{}, 64)
			history := append(testmodel.Tokens(tc.history, testVocab, 4), prompt...)
			prefill := func() {
				t.Helper()
				if err := s.Forward(prompt[:start], 0, make([]float32, cfg.Vocab)); err != nil {
					t.Fatal(err)
				}
			}
			prefill()
			before := *cd
			b := engine.Batch{Token: prompt[start], Start: start, Steps: first, Params: tc.p, Step: 3, History: history}
			if err := s.SubmitBatch(b); err != nil {
				t.Fatal(err)
			}
			histCap := s.batch.histCap
			if err := s.SubmitBatch(engine.Batch{Start: start + first, Steps: second, Params: tc.p, Continues: true}); err != nil {
				t.Fatal(err)
			}
			// (Its batch buffers grow too: 4 steps after 3, while the
			// first batch still uses the old ones.)
			if grew := s.batch.histCap > histCap; grew != (tc.history > 0) {
				t.Errorf("the second batch grew the sampling state (%d ids after %d): %v, want %v", s.batch.histCap, histCap, grew, tc.history > 0)
			}
			runs := 2
			if tc.history > 0 {
				runs++ // the state's copy into the larger buffer
			}
			if d := fmt.Sprintf("runs %d, maps %d, waits %d", cd.runs-before.runs, cd.maps-before.maps, cd.waits-before.waits); d != fmt.Sprintf("runs %d, maps 1, waits 0", runs) {
				t.Errorf("two batches submitted: %s; want %d runs and the first's readback asked for", d, runs)
			}
			if err := s.SubmitBatch(engine.Batch{Start: start + first + second, Steps: 1, Params: tc.p, Continues: true}); err == nil {
				t.Error("a third batch in flight was taken")
			}
			a, err := s.CollectBatch()
			if err != nil {
				t.Fatal(err)
			}
			if d := fmt.Sprintf("maps %d, waits %d", cd.maps-before.maps, cd.waits-before.waits); d != "maps 2, waits 1" {
				t.Errorf("the first batch collected: %s; want the second's readback asked for after one wait", d)
			}
			c, err := s.CollectBatch()
			if err != nil {
				t.Fatal(err)
			}
			// The same steps as one batch.
			prefill()
			want, err := s.Sample(prompt[start], start, first+second, tc.p, 3, history)
			if tc.p.Temperature == 0 {
				want, err = s.Greedy(prompt[start], start, first+second)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := append(a, c...); !slices.Equal(got, want) {
				t.Errorf("batches of %d and %d picked %v %v, one batch of %d %v", first, second, a, c, first+second, want)
			}
			if _, err := s.CollectBatch(); err == nil {
				t.Error("a batch was collected with none in flight")
			}
			// A batch that continues none in flight is refused.
			if err := s.SubmitBatch(engine.Batch{Start: start + first + second, Steps: 1, Params: tc.p, Continues: true}); err == nil {
				t.Error("a batch continuing none in flight was taken")
			}
		})
	}
}

// TestPickThenBatchMatches submits a prompt's pick (SubmitPick) and the
// first decode batch continuing it before the pick is collected, as a
// session's reply starts, and checks them against ForwardPick and a batch
// of the token it returned: the same first token and picks, greedy and
// sampled (the batch draws on at step 1 from the pick's state, its
// history the prompt and the pick). The pick's readback is asked for
// before the batch is submitted, so the first token waits for the prompt
// alone.
func TestPickThenBatchMatches(t *testing.T) {
	cfg := testmodel.CAIShaped(testVocab, model.Int8)
	w := testmodel.Random(cfg, 4)
	const n, steps = 21, 3
	prompt := testmodel.Tokens(n, testVocab, 10)
	for _, tc := range []struct {
		name string
		p    sample.Params
	}{
		{"greedy", sample.Params{}},
		{"page defaults", sample.Params{Temperature: 0.8, TopP: 0.95, Seed: 3}},
		{"penalty", sample.Params{Temperature: 1.1, TopK: 40, RepetitionPenalty: 1.3, Seed: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cd := &countingDevice{Device: device(t)}
			_, s := gpuSequence(t, cd, cfg, w, Options{Chunk: 16}, 64)
			if err := s.SubmitPick(prompt, 0, tc.p, 0, prompt); err != nil {
				t.Fatal(err)
			}
			maps := cd.maps
			if err := s.SubmitBatch(engine.Batch{Start: n, Steps: steps, Params: tc.p, Continues: true}); err != nil {
				t.Fatal(err)
			}
			if cd.maps != maps || cd.waits != 0 {
				t.Errorf("the batch after the pick asked for %d readbacks and waited %d times; want the pick's alone, asked before it", cd.maps-maps, cd.waits)
			}
			first, err := s.CollectBatch()
			if err != nil {
				t.Fatal(err)
			}
			picks, err := s.CollectBatch()
			if err != nil {
				t.Fatal(err)
			}
			// The same through ForwardPick and a batch of its token.
			tok, err := s.ForwardPick(prompt, 0, tc.p, 0, prompt)
			if err != nil {
				t.Fatal(err)
			}
			history := append(slices.Clone(prompt), tok)
			want, err := s.Sample(tok, n, steps, tc.p, 1, history)
			if tc.p.Argmax() {
				want, err = s.Greedy(tok, n, steps)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(first) != 1 || first[0] != tok || !slices.Equal(picks, want) {
				t.Errorf("pick %v then a batch continuing it %v; ForwardPick %d then a batch of it %v", first, picks, tok, want)
			}
			// A pick with a batch in flight is refused.
			if err := s.SubmitBatch(engine.Batch{Token: tok, Start: n, Steps: 1, Params: tc.p, Step: 1, History: history}); err != nil {
				t.Fatal(err)
			}
			if err := s.SubmitPick(prompt, 0, tc.p, 0, prompt); err == nil {
				t.Error("a pick was submitted with a batch in flight")
			}
			if _, err := s.CollectBatch(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
