package engine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/internal/modeltest"
)

// deviceSeq is a cpu.Sequence that also decodes greedily as a GPU does
// (GreedyDecoder): each step forwards the previous pick and takes the
// argmax, with no logits handed to the session. It records the batches it
// runs and every snapshot the prefix cache takes that its KV could not
// give, so tests can check the rules sessions keep around batches.
type deviceSeq struct {
	*cpu.Sequence
	logits []float32
	log    *deviceLog
}

type deviceLog struct {
	batches    []int // steps of each Greedy call
	badSnaps   int   // Snapshot and Snapshots calls refused by the KV
	deviceToks int   // positions Greedy ran
	ahead      int   // batches a pipelined device had submitted ahead
	firstAhead int   // of them, batches submitted ahead of a prompt's pick
	// clock advances by step for each step Greedy runs: a device of that
	// speed, for a session's clock (now).
	clock time.Time
	step  time.Duration
}

func (l *deviceLog) now() time.Time { return l.clock }

func (s deviceSeq) Greedy(token int32, start, steps int) ([]int32, error) {
	s.log.batches = append(s.log.batches, steps)
	s.log.clock = s.log.clock.Add(time.Duration(steps) * s.log.step)
	ids := make([]int32, steps)
	for i := range ids {
		if err := s.Forward([]int32{token}, start+i, s.logits); err != nil {
			return nil, err
		}
		s.log.deviceToks++
		token = sample.Greedy(s.logits)
		ids[i] = token
	}
	return ids, nil
}

func (s deviceSeq) Snapshot(from, to int) (*kv.Snapshot, error) {
	snap, err := s.Sequence.Snapshot(from, to)
	if err != nil {
		s.log.badSnaps++
	}
	return snap, err
}

func (s deviceSeq) Snapshots(spans []kv.Span) ([]*kv.Snapshot, error) {
	snaps, err := s.Sequence.Snapshots(spans)
	if err != nil {
		s.log.badSnaps++
	}
	return snaps, err
}

type deviceBackend struct {
	Backend
	vocab int
	log   *deviceLog
}

func (b deviceBackend) NewSequence(context int) (Sequence, error) {
	s, err := b.Backend.NewSequence(context)
	if err != nil {
		return nil, err
	}
	return deviceSeq{s.(*cpu.Sequence), make([]float32, b.vocab), b.log}, nil
}

// pipeSeq is a deviceSeq that also pipelines its batches
// (BatchPipeliner) and draws a prompt's first token (PickSubmitter): a
// batch runs when it is submitted, and the device's clock passes its steps
// when its picks are collected, as a device that runs the next batch
// while the host takes this one's picks.
type pipeSeq struct {
	deviceSeq
	*pipeState
}

type pipeState struct {
	queue  [][]int32 // picks of the batches submitted, not collected
	last   int32     // the last batch's last pick (-1: none yet)
	picked bool      // the last batch is a prompt's pick
}

func (s pipeSeq) SubmitPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) error {
	if !p.Argmax() {
		return fmt.Errorf("pipeSeq draws greedily only, not with %+v", p)
	}
	if len(s.queue) == 2 {
		return fmt.Errorf("a third batch in flight")
	}
	if err := s.Forward(tokens, start, s.logits); err != nil {
		return err
	}
	s.last, s.picked = sample.Greedy(s.logits), true
	s.queue = append(s.queue, []int32{s.last})
	return nil
}

func (s pipeSeq) ForwardPick(tokens []int32, start int, p sample.Params, step uint32, history []int32) (int32, error) {
	if err := s.SubmitPick(tokens, start, p, step, history); err != nil {
		return -1, err
	}
	ids, err := s.CollectBatch()
	if err != nil {
		return -1, err
	}
	return ids[0], nil
}

func (s pipeSeq) SubmitBatch(b Batch) error {
	if !b.Params.Argmax() {
		return fmt.Errorf("pipeSeq draws greedily only, not with %+v", b.Params)
	}
	if len(s.queue) == 2 {
		return fmt.Errorf("a third batch in flight")
	}
	token := b.Token
	if b.Continues {
		if s.last < 0 {
			return fmt.Errorf("a batch continues none")
		}
		token = s.last
		s.log.ahead++
		if s.picked {
			s.log.firstAhead++
		}
	}
	clock := s.log.clock
	ids, err := s.Greedy(token, b.Start, b.Steps)
	s.log.clock = clock
	if err != nil {
		return err
	}
	s.last, s.picked = ids[len(ids)-1], false
	s.queue = append(s.queue, ids)
	return nil
}

func (s pipeSeq) CollectBatch() ([]int32, error) {
	if len(s.queue) == 0 {
		return nil, fmt.Errorf("no batch in flight")
	}
	ids := s.queue[0]
	s.queue = s.queue[1:]
	s.log.clock = s.log.clock.Add(time.Duration(len(ids)) * s.log.step)
	return ids, nil
}

// pipeBackend makes pipeSeqs.
type pipeBackend struct{ deviceBackend }

func (b pipeBackend) NewSequence(context int) (Sequence, error) {
	s, err := b.deviceBackend.NewSequence(context)
	if err != nil {
		return nil, err
	}
	return pipeSeq{s.(deviceSeq), &pipeState{last: -1}}, nil
}

// withDevice gives m a backend that decodes on its "device", pipelined or
// not, logging to log.
func withDevice(m *Model, log *deviceLog, pipelined bool) {
	dev := deviceBackend{m.Backend, m.Config.Vocab, log}
	m.Backend = dev
	if pipelined {
		m.Backend = pipeBackend{dev}
	}
}

// withStops replaces m's template by one that also stops at extra: the
// tiny random models rarely pick a real stop token, and the batches'
// handling of stops is what is under test.
func withStops(t *testing.T, m *Model, extra ...int32) {
	t.Helper()
	f := modeltest.Open(t, m.Dir)
	ct := proto.Clone(f.Manifest().GetChat()).(*manifestpb.ChatTemplate)
	ct.StopIds = append(ct.StopIds, extra...)
	tmpl, err := chat.New(ct, m.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	m.Template = tmpl
}

// turnLog is everything a turn shows its caller.
type turnLog struct {
	reply   *Reply
	err     error
	pieces  []string
	tokens  []int32
	kvLen   int
	convo   []int32
	history []chat.Message
}

func (a *turnLog) diff(b *turnLog) string {
	switch {
	case (a.err == nil) != (b.err == nil):
		return fmt.Sprintf("error %v, %v", a.err, b.err)
	case a.reply == nil || b.reply == nil:
		if (a.reply == nil) != (b.reply == nil) {
			return fmt.Sprintf("reply %v, %v", a.reply, b.reply)
		}
	case !slices.Equal(a.reply.Tokens, b.reply.Tokens) || a.reply.Text != b.reply.Text || a.reply.Finish != b.reply.Finish:
		return fmt.Sprintf("reply %v %q (%s), %v %q (%s)", a.reply.Tokens, a.reply.Text, a.reply.Finish, b.reply.Tokens, b.reply.Text, b.reply.Finish)
	case a.reply.PromptTokens != b.reply.PromptTokens || a.reply.CachedTokens != b.reply.CachedTokens:
		return fmt.Sprintf("prompt/cached tokens %d/%d, %d/%d", a.reply.PromptTokens, a.reply.CachedTokens, b.reply.PromptTokens, b.reply.CachedTokens)
	}
	switch {
	case !slices.Equal(a.pieces, b.pieces):
		return fmt.Sprintf("streamed %q, %q", a.pieces, b.pieces)
	case !slices.Equal(a.tokens, b.tokens):
		return fmt.Sprintf("OnToken saw %v, %v", a.tokens, b.tokens)
	case a.kvLen != b.kvLen:
		return fmt.Sprintf("KV of %d tokens, %d", a.kvLen, b.kvLen)
	case !slices.Equal(a.convo, b.convo):
		return fmt.Sprintf("conversation %v, %v", a.convo, b.convo)
	case !slices.EqualFunc(a.history, b.history, sameMessage):
		return fmt.Sprintf("messages %v, %v", a.history, b.history)
	}
	return ""
}

// step is one call on a session, given what to stream to.
type step struct {
	name string
	run  func(s *Session, p GenParams, onText func(string)) (*Reply, error)
}

func send(text string) step {
	return step{"send " + text, func(s *Session, p GenParams, f func(string)) (*Reply, error) {
		return s.Send(context.Background(), text, p, f)
	}}
}

var (
	regenerate = step{"regenerate", func(s *Session, p GenParams, f func(string)) (*Reply, error) {
		return s.Regenerate(context.Background(), p, f)
	}}
	complete = step{"complete", func(s *Session, p GenParams, f func(string)) (*Reply, error) {
		return s.Complete(context.Background(), []int32{5, 6}, p, f)
	}}
)

func edit(text string) step {
	return step{"edit " + text, func(s *Session, p GenParams, f func(string)) (*Reply, error) {
		return s.EditLast(context.Background(), text, p, f)
	}}
}

// cancelAfter cancels the reply once it has streamed n tokens.
func cancelAfter(n int, text string) step {
	return step{fmt.Sprintf("cancel after %d", n), func(s *Session, p GenParams, f func(string)) (*Reply, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		seen, on := 0, p.OnToken
		p.OnToken = func(id int32, piece string) {
			on(id, piece)
			if seen++; seen == n {
				cancel()
			}
		}
		return s.Send(ctx, text, p, f)
	}}
}

func runStep(s *Session, st step, p GenParams) *turnLog {
	l := &turnLog{}
	p.OnToken = func(id int32, piece string) { l.tokens = append(l.tokens, id) }
	l.reply, l.err = st.run(s, p, func(piece string) { l.pieces = append(l.pieces, piece) })
	l.kvLen, l.convo, l.history = s.KVLen(), s.Tokens(), s.Messages()
	return l
}

var conversation = []step{
	send("Hello there, who are you?"),
	send("Tell me about the sea."),
	regenerate,
	complete,
	edit("Tell me about the mountains."),
	cancelAfter(3, "And the rivers?"),
	send("Go on."),
	regenerate,
}

// TestGreedyOnDeviceMatchesLogits runs conversations on a backend that
// decodes greedily on its "device" and on the plain one, and checks that
// every turn is the same: replies, finish, streamed pieces and tokens,
// prompt and cached counts, the KV kept and the conversation. Stops fall
// at every offset within a batch, replies end at MaxTokens and at the
// context limit, cai-tiny's rings (window 8) wrap, and the prefix cache is
// on and off. Afterwards the prefix caches of both models must hold the
// same blocks: a new session restores as much from either.
func TestGreedyOnDeviceMatchesLogits(t *testing.T) {
	for _, dir := range testModels {
		for _, tc := range []struct {
			name      string
			context   int
			cache     int64
			maxTokens int
			stopAt    int // the reply's token at this index of a first reply also stops replies; -1: none
		}{
			{"no extra stop", 0, -1, 24, -1},
			{"stop at 0", 0, -1, 24, 0},
			{"stop at 1", 0, 0, 24, 1},
			{"stop at 2", 0, -1, 24, 2},
			{"stop at 3", 0, 0, 24, 3},
			{"stop at 5", 0, 0, 40, 5},
			{"max tokens 1", 0, 0, 1, -1},
			{"max tokens 2", 0, -1, 2, -1},
			{"max tokens 5", 0, 0, 5, -1},
			{"context limit", 160, 0, 0, -1},
			{"context limit, stops", 160, -1, 0, 4},
		} {
			for _, pipelined := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/cache%d/pipelined=%v", dir, tc.name, tc.cache, pipelined), func(t *testing.T) {
					opts := Options{Context: tc.context, CacheBytes: tc.cache}
					ref := load(t, dir, opts)
					dev := load(t, dir, opts)
					log := &deviceLog{}
					withDevice(dev, log, pipelined)
					p := GenParams{MaxTokens: tc.maxTokens}
					if tc.stopAt >= 0 {
						pick := load(t, dir, Options{CacheBytes: -1}) // leaves ref's cache empty
						r, err := newSession(t, pick, card).Send(context.Background(), "Hello there, who are you?", GenParams{MaxTokens: 12}, nil)
						if err != nil {
							t.Fatal(err)
						}
						withStops(t, ref, r.Tokens[tc.stopAt])
						withStops(t, dev, r.Tokens[tc.stopAt])
					}
					sr, sd := newSession(t, ref, card), newSession(t, dev, card)
					for _, st := range conversation {
						want, got := runStep(sr, st, p), runStep(sd, st, p)
						if d := got.diff(want); d != "" {
							t.Fatalf("%s: on the device, then through the logits: %s", st.name, d)
						}
					}
					if len(log.batches) == 0 {
						t.Fatal("no reply decoded on the device")
					}
					if log.badSnaps != 0 {
						t.Errorf("%d prefix cache snapshots refused: a block held positions run past a reply", log.badSnaps)
					}
					// A new chat with the same card restores as much from the
					// cache either way.
					want := runStep(newSession(t, ref, card), send("Hello there, who are you?"), p)
					got := runStep(newSession(t, dev, card), send("Hello there, who are you?"), p)
					if d := got.diff(want); d != "" {
						t.Errorf("a new session: on the device, then through the logits: %s", d)
					}
					if pipelined && (tc.maxTokens == 0 || tc.maxTokens > maxGreedySteps) && log.ahead == 0 {
						t.Error("no batch submitted ahead")
					}
					if pipelined && log.firstAhead == 0 {
						t.Error("no reply's first batch submitted ahead of its first token")
					}
					t.Logf("%d batches (%d submitted ahead, %d of a first token), %d steps on the device (%.2f per readback)", len(log.batches), log.ahead, log.firstAhead, log.deviceToks, float64(log.deviceToks)/float64(len(log.batches)))
				})
			}
		}
	}
}

// TestGreedyBatches checks the batch sizes a device's speed gets: a
// session's first batch runs maxGreedySteps, and each after it as many
// steps as the last batch ran in greedyBurst, up to maxGreedySteps, on an
// all-global model and after cai-tiny's rings (window 8) have wrapped:
// their kv.RingRoom slots let a batch that ran past a stop token be taken
// back (with none, a wrapped ring took back one position, and long chats
// decoded two steps a batch).
func TestGreedyBatches(t *testing.T) {
	for _, dir := range testModels {
		for _, tc := range []struct {
			step time.Duration // the device's time per step
			mid  int           // steps of a batch mid-reply
		}{
			{time.Millisecond, maxGreedySteps},
			{greedyBurst / 3, 3},
			{greedyBurst / 2, 2},
			{2 * greedyBurst, 1},
		} {
			for _, pipelined := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%v/pipelined=%v", dir, tc.step, pipelined), func(t *testing.T) {
					m := load(t, dir, Options{CacheBytes: -1})
					log := &deviceLog{step: tc.step}
					withDevice(m, log, pipelined)
					s := newSession(t, m, "")
					s.now = log.now
					if _, err := s.Send(context.Background(), "Hello.", GenParams{MaxTokens: 40}, nil); err != nil {
						t.Fatal(err)
					}
					// Mid-reply, 20 tokens before the end, is past a ring's slots:
					// the rings have wrapped.
					if slots := 8 + kv.RingRoom; s.KVLen()-20 <= slots {
						t.Fatalf("%d positions: too few to wrap a ring of %d slots by mid-reply", s.KVLen(), slots)
					}
					if n := len(log.batches); n < 2 || log.batches[0] != maxGreedySteps || slices.Max(log.batches) > maxGreedySteps {
						t.Fatalf("batches %v: want a first of %d steps, and none of more", log.batches, maxGreedySteps)
					}
					// The steady state, away from the reply's start and end.
					if mid := log.batches[len(log.batches)/2]; mid != tc.mid {
						t.Errorf("batches %v: want %d steps mid-reply", log.batches, tc.mid)
					}
					if pipelined && log.ahead < len(log.batches)/2 {
						t.Errorf("%d of %d batches submitted ahead: want most past the first", log.ahead, len(log.batches))
					}
				})
			}
		}
	}
}

// TestGreedyOnDeviceOnlyWhenGreedy checks that sampled replies, and greedy
// ones with a repetition penalty, never use the device's argmax.
func TestGreedyOnDeviceOnlyWhenGreedy(t *testing.T) {
	for _, sp := range []sample.Params{
		{Temperature: 0.8, Seed: 1},
		{RepetitionPenalty: 1.3},
	} {
		t.Run(fmt.Sprintf("%+v", sp), func(t *testing.T) {
			m := load(t, testModels[1], Options{})
			log := &deviceLog{}
			m.Backend = deviceBackend{m.Backend, m.Config.Vocab, log}
			if _, err := newSession(t, m, "").Send(context.Background(), "Hello.", GenParams{MaxTokens: 8, Sample: sp}, nil); err != nil {
				t.Fatal(err)
			}
			if len(log.batches) != 0 {
				t.Errorf("%d batches decoded on the device", len(log.batches))
			}
		})
	}
}

// TestSaveRestoreAfterDeviceReply saves a conversation whose replies were
// decoded on the device and continues it in a new model: the reply is the
// uninterrupted chat's, and the saved KV is all reused.
func TestSaveRestoreAfterDeviceReply(t *testing.T) {
	for _, dir := range testModels {
		t.Run(dir, func(t *testing.T) {
			ctx := context.Background()
			m := load(t, dir, Options{})
			m.Backend = deviceBackend{m.Backend, m.Config.Vocab, &deviceLog{}}
			s := newSession(t, m, card)
			for _, msg := range []string{"Hello, Ada.", "Which map is oldest?"} {
				if _, err := s.Send(ctx, msg, greedy, nil); err != nil {
					t.Fatal(err)
				}
			}
			data, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			saved := len(s.Tokens())
			uninterrupted, err := s.Send(ctx, "And the newest?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			m2 := load(t, dir, Options{CacheBytes: -1})
			m2.Backend = deviceBackend{m2.Backend, m2.Config.Vocab, &deviceLog{}}
			s2, err := m2.RestoreSession(data)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s2.Close() })
			r, err := s2.Send(ctx, "And the newest?", greedy, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.CachedTokens != saved || r.PromptTokens != uninterrupted.PromptTokens || !slices.Equal(r.Tokens, uninterrupted.Tokens) {
				t.Errorf("restored chat: %v, %d cached, %d prompt; uninterrupted %v, %d, %d", r.Tokens, r.CachedTokens, r.PromptTokens, uninterrupted.Tokens, saved, uninterrupted.PromptTokens)
			}
		})
	}
}
