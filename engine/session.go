package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/prefix"
	"github.com/wick-run/wick/engine/sample"
)

// ErrContextFull is returned when a conversation no longer fits the
// session's context. The policy is stated, not improvised: wick never drops
// or summarises earlier turns behind the user's back; the caller starts a
// new chat (or, with the prefix cache, a shorter one). Generation that
// reaches the limit mid-reply stops with FinishLength instead.
var ErrContextFull = errors.New("conversation does not fit the context")

// Finish says why a reply ended.
type Finish string

const (
	FinishStop      Finish = "stop"      // the model emitted a stop token
	FinishLength    Finish = "length"    // MaxTokens or the context limit was reached
	FinishCancelled Finish = "cancelled" // the caller's context was cancelled
)

// GenParams control one reply.
type GenParams struct {
	Sample    sample.Params
	MaxTokens int // 0 means until a stop token or the context limit
	// OnToken, when set, is called with every token the reply takes (a
	// stop token is not taken) and the text that token completed: whole
	// UTF-8 characters, often none. The text alone also goes to the
	// onText of Send and its kin; OnToken is for hosts that hand the
	// reply over token by token (the wasm module).
	OnToken func(id int32, text string)
	// OnPrefill, when set, is called as the turn's prompt is read: after
	// each step the session forwards, with the tokens of the turn
	// prefilled so far and in all (KV restored or kept is not counted).
	// On a KVFiller the steps before the last are handed to the device
	// without waiting for them, so "so far" may be ahead of the device.
	// done grows to total; a turn whose prompt is all cached reports
	// nothing. A long prompt is forwarded in steps of at most the
	// sequence's PrefillStep (prefillChunk where it has none) then, so
	// that progress comes in steps, and a cancel ends the reading
	// between them.
	OnPrefill func(done, total int)
}

// Reply is what one turn produced.
type Reply struct {
	Text         string
	Tokens       []int32 // generated ids, the stop token excluded
	Finish       Finish
	PromptTokens int // tokens of the turn prefilled (new to the KV cache)
	CachedTokens int // tokens whose KV was reused: the session's own, or restored from the prefix cache
}

// Session is one conversation. Its KV cache lives between turns, so each
// turn prefills only the tokens the cache does not hold. With the model's
// prefix cache (Model.Cache), a turn first restores the longest prefix of
// the conversation that any session has computed (the same character
// card, the messages before a regenerated or edited one), and the session
// offers every completed block of its own to the cache, which sessions
// may share concurrently. A session itself is used by one goroutine at a
// time.
//
// The conversation is kept as tokens, exactly as the model saw and produced
// them: re-encoding generated text could tokenise it differently and
// needlessly break the cached prefix.
type Session struct {
	m       *Model
	seq     Sequence
	snap    Snapshotter   // seq, when its KV can be copied out (nil otherwise)
	greedy  GreedyDecoder // seq, when it takes the argmax on its device (nil otherwise)
	sampler SampleDecoder // seq, when it samples on its device (nil otherwise)
	picker  FirstPicker   // seq, when it draws a prompt's next token on its device (nil otherwise)
	cache   *prefix.Cache // the model's prefix cache, when on and seq can use it
	msgs    []chat.Message
	toks    []int32 // the conversation so far
	start   []int   // toks offset where each message's rendering begins
	kvLen   int     // positions of toks whose KV is in seq
	// written is one past the highest position seq has written since its
	// KV was last replaced (Restore, or a forward from 0). A greedy batch
	// may run past the reply's end, so it can exceed kvLen; rewinds are
	// judged from it, since those positions overwrote ring slots.
	written int
	// stepTime is the last greedy batch's wall time per step (0: none
	// yet), which sizes the next (batchSteps); now is the clock it is
	// read from (nil: time.Now; tests set their own).
	stepTime time.Duration
	now      func() time.Time
	// open is true while the last message is an assistant reply whose
	// closing suffix has not been appended yet.
	open bool
	// post is the post-history instructions (see SetPostHistory), and
	// postLen how many tokens of them stand before the open reply: they
	// sit between the history and the reply's generation prompt, from the
	// reply message's start on, and are dropped when the reply is closed.
	post    string
	postLen int
	// restored is where the KV last restored from a snapshot ends (0: none
	// since the KV was last filled from the start). A snapshot keeps only
	// the last Window-1 positions of a ring, so a rewind to before it is
	// refilled, whatever the rings' slots would otherwise allow.
	restored int
	logits   []float32
	// starting is the sequence while snapshots remember started are out,
	// and startedTo the end of the last block they take: the blocks up to
	// it count as held for the next ones.
	starting  SnapshotStarter
	startedTo int
	// rememberLater is set when advance left the blocks of the step from
	// rememberFrom on for rememberNow to offer the cache.
	rememberLater bool
	rememberFrom  int
	// first is the token the last prefill drew on the device (FirstPicker)
	// for the reply's first draw, while firstOK: its logits stayed there,
	// so s.logits does not hold them.
	first   int32
	firstOK bool
	// pipe is the reply's decoding on a BatchPipeliner from its prefill
	// on, when the prefill drew the first token (pickFirst): the reply's
	// first batch may be in flight already. generate takes it.
	pipe *batchPipe
}

// NewSession starts a conversation; system, when not empty, is the system
// prompt (a character card's, see chat.Card).
func (m *Model) NewSession(system string) (*Session, error) {
	seq, err := m.Backend.NewSequence(m.context)
	if err != nil {
		return nil, fmt.Errorf("new session: %w", err)
	}
	s := m.newSession(seq)
	if system != "" {
		s.msgs = append(s.msgs, chat.Message{Role: chat.System, Content: system})
	}
	return s, nil
}

func (m *Model) newSession(seq Sequence) *Session {
	s := &Session{m: m, seq: seq, logits: make([]float32, m.Config.Vocab)}
	s.snap, _ = seq.(Snapshotter)
	s.greedy, _ = seq.(GreedyDecoder)
	s.sampler, _ = seq.(SampleDecoder)
	s.picker, _ = seq.(FirstPicker)
	if s.snap != nil {
		s.cache = m.Cache
	}
	return s
}

// Close frees the session's KV cache. Turns finish their snapshots, so
// none is lost here.
func (s *Session) Close() error {
	s.finishSnapshots()
	return s.seq.Close()
}

// Messages returns the conversation so far.
func (s *Session) Messages() []chat.Message { return append([]chat.Message(nil), s.msgs...) }

// SetPostHistory sets instructions that stand after the conversation,
// before each reply (a character card's post_history_instructions, already
// substituted): rendered as a system message between the history and the
// reply's generation prompt, and not part of the history after it. The
// next reply's rendering therefore differs from the last one's from the
// last reply on, whose KV is computed again (see closeReply): the price
// `wick cachebench -post-history` measures. An open reply keeps the
// instructions it was generated after until it is closed; empty text
// removes them.
func (s *Session) SetPostHistory(text string) { s.post = text }

// PostHistory returns the post-history instructions (see SetPostHistory).
func (s *Session) PostHistory() string { return s.post }

// Tokens returns the conversation's tokens so far.
func (s *Session) Tokens() []int32 { return append([]int32(nil), s.toks...) }

// Send adds a user message and generates the reply, streaming its text to
// onText (may be nil) as whole UTF-8 characters.
func (s *Session) Send(ctx context.Context, text string, p GenParams, onText func(string)) (*Reply, error) {
	s.msgs = append(s.msgs, chat.Message{Role: chat.User, Content: text})
	return s.reply(ctx, p, onText, 1)
}

// Regenerate drops the last reply and generates a new one for the same
// user message.
func (s *Session) Regenerate(ctx context.Context, p GenParams, onText func(string)) (*Reply, error) {
	if len(s.msgs) == 0 || s.msgs[len(s.msgs)-1].Role != chat.Assistant {
		return nil, errors.New("regenerate: the last message is not a reply")
	}
	s.truncate(len(s.msgs) - 1)
	return s.reply(ctx, p, onText, 0)
}

// Continue extends the last reply, which the model goes on writing where
// it stopped (a reply cut short by MaxTokens or a cancel, say): the new
// tokens are appended to the same message, and the Reply holds only them
// (Text the text they add). The reply's KV is reused when the session holds
// it, so only its last token is forwarded again (its logits start the
// continuation); otherwise (after ReplaySession or SetHistory, or after
// RestoreSession on a model with local layers, whose restored rings are
// one position too short for that) the conversation is rendered up to the
// reply and prefilled, from the prefix cache where it holds it. Greedy, a
// reply cut at n tokens and continued gives the tokens of one generated at
// n+MaxTokens in one go; a reply that ended with a stop token mostly ends
// again at once. A failed continuation leaves the conversation as it was.
func (s *Session) Continue(ctx context.Context, p GenParams, onText func(string)) (*Reply, error) {
	if err := p.Sample.Validate(); err != nil {
		return nil, err
	}
	i := len(s.msgs) - 1
	if i < 0 || s.msgs[i].Role != chat.Assistant {
		return nil, errors.New("continue: the last message is not a reply")
	}
	defer s.finishSnapshots()
	saved := s.mark()
	prior := s.msgs[i].Tokens
	if !s.open {
		prior = s.reopen(i)
	}
	if n, limit := len(s.toks), s.seq.Context(); n+1 >= limit {
		s.back(saved)
		return nil, fmt.Errorf("continue: %w: the reply has %d tokens with the conversation, the context holds %d", ErrContextFull, n, limit)
	}
	// The last token is forwarded again: its logits start the
	// continuation, and the session keeps KV, not logits.
	if n := len(s.toks) - 1; s.kvLen > n {
		last := s.toks[n]
		s.cut(n)
		s.toks = append(s.toks, last)
	}
	r, err := s.prefill(ctx, p)
	if err == nil {
		last := &s.msgs[i]
		err = s.generate(ctx, r, p, onText, prior)
		if err == nil || r.Finish == FinishCancelled {
			last.Tokens = append(slices.Clone(prior), r.Tokens...)
			last.Content = s.m.Tokenizer.Decode(last.Tokens)
			return r, err
		}
	}
	s.back(saved)
	s.kvLen = 0
	return nil, err
}

// reopen renders the conversation up to reply i, the last message, as the
// start of a reply being generated: the messages before it, the
// post-history instructions, the generation prompt and the reply's tokens
// (its text encoded where it has none, which reopen returns), with the
// reply left open.
func (s *Session) reopen(i int) []int32 {
	if i < len(s.start) {
		at := s.start[i]
		s.start = s.start[:i]
		s.cut(at)
	}
	t := s.m.Template
	if len(s.toks) == 0 {
		s.toks = append(s.toks, t.Begin()...)
	}
	for j := len(s.start); j < i; j++ {
		s.start = append(s.start, len(s.toks))
		s.toks = append(s.toks, t.EncodeMessage(s.msgs, j)...)
	}
	s.openReply(s.msgs[:i])
	reply := s.msgs[i].Tokens
	if reply == nil {
		reply = s.m.Tokenizer.Encode(s.msgs[i].Content)
	}
	s.toks = append(s.toks, reply...)
	s.open = true
	return reply
}

// EditLast replaces the last user message (dropping any reply to it) and
// generates a new reply.
func (s *Session) EditLast(ctx context.Context, text string, p GenParams, onText func(string)) (*Reply, error) {
	i := len(s.msgs) - 1
	if i >= 0 && s.msgs[i].Role == chat.Assistant {
		i--
	}
	if i < 0 || s.msgs[i].Role != chat.User {
		return nil, errors.New("edit: there is no user message to edit")
	}
	s.truncate(i)
	return s.Send(ctx, text, p, onText)
}

// truncate drops messages from index i on, and their tokens. The KV cache
// is cut back too where the layout allows it; otherwise it is refilled from
// the start on the next turn.
func (s *Session) truncate(i int) {
	cut := len(s.toks)
	if i < len(s.start) {
		cut = s.start[i]
		s.start = s.start[:i]
	}
	s.msgs = s.msgs[:i]
	s.open, s.postLen = false, 0
	s.cut(cut)
}

// cut drops the tokens from n on, and their KV: in place where the layout
// allows the rewind, else all of it, to be refilled from the start.
func (s *Session) cut(n int) {
	s.toks = s.toks[:n]
	if s.kvLen > n {
		if s.m.layout.CanRewind(s.written, n) && (n >= s.restored || !s.m.rings) {
			s.kvLen = n
		} else {
			s.kvLen = 0
		}
	}
}

// render appends the tokens of messages not yet rendered, then opens the
// reply (see openReply).
func (s *Session) render() {
	t := s.m.Template
	if len(s.toks) == 0 {
		s.toks = append(s.toks, t.Begin()...)
	}
	if s.open {
		s.closeReply()
	}
	for i := len(s.start); i < len(s.msgs); i++ {
		s.start = append(s.start, len(s.toks))
		s.toks = append(s.toks, t.EncodeMessage(s.msgs, i)...)
	}
	s.openReply(s.msgs)
}

// openReply begins an assistant message after the conversation msgs: the
// message starts with the post-history instructions, when there are any,
// and the generation prompt follows, which the reply's tokens follow.
func (s *Session) openReply(msgs []chat.Message) {
	t := s.m.Template
	s.start = append(s.start, len(s.toks))
	post := t.PostHistory(msgs, s.post)
	s.toks = append(s.toks, post...)
	s.postLen = len(post)
	s.toks = append(s.toks, t.GenerationPrompt()...)
}

// closeReply closes the open reply, the last message rendered, as
// history. Without post-history instructions before it, that is appending
// the assistant suffix: the KV only grows. With them, the reply is rendered again from
// its message's start without them, since they are not history: its KV
// is computed again.
func (s *Session) closeReply() {
	i := len(s.start) - 1 // the open reply; a Send has appended its message after it
	if s.postLen > 0 {
		s.cut(s.start[i])
		s.toks = append(s.toks, s.m.Template.EncodeMessage(s.msgs, i)...)
	} else {
		s.toks = append(s.toks, s.m.Template.AssistantSuffix()...)
	}
	s.open, s.postLen = false, 0
}

// turnMark is what a turn changes of the conversation, so that a turn that
// is not taken leaves it as it was.
type turnMark struct {
	toks    []int32
	start   int
	msgs    int
	open    bool
	postLen int
}

func (s *Session) mark() turnMark {
	return turnMark{toks: slices.Clone(s.toks), start: len(s.start), msgs: len(s.msgs), open: s.open, postLen: s.postLen}
}

// back returns the conversation to m. The KV of the tokens it keeps stays
// valid only where the turn wrote none (the caller resets kvLen otherwise).
func (s *Session) back(m turnMark) {
	n := 0
	for n < len(s.toks) && n < len(m.toks) && s.toks[n] == m.toks[n] {
		n++
	}
	s.kvLen = min(s.kvLen, n)
	s.toks, s.start, s.msgs, s.open, s.postLen = m.toks, s.start[:m.start], s.msgs[:m.msgs], m.open, m.postLen
}

// reply generates a reply to the conversation, whose last added messages
// (the user message of a Send) the turn adds: they are dropped again when
// the turn is not taken.
func (s *Session) reply(ctx context.Context, p GenParams, onText func(string), added int) (*Reply, error) {
	if err := p.Sample.Validate(); err != nil {
		s.msgs = s.msgs[:len(s.msgs)-added]
		return nil, err
	}
	defer s.finishSnapshots()
	saved := s.mark()
	saved.msgs -= added
	s.render()
	limit := s.seq.Context()
	if len(s.toks) >= limit {
		n := len(s.toks)
		// The turn is not taken: the conversation is left as it was.
		s.back(saved)
		return nil, fmt.Errorf("%w: %d tokens with the new message, the context holds %d", ErrContextFull, n, limit)
	}
	// A turn that fails (a GPU error, say) is not taken either: the
	// conversation is left as it was, so the next turn can simply run. Its
	// KV is refilled from the start (or the prefix cache): a failed step
	// may have written ring slots that earlier positions still need.
	undo := func() {
		s.back(saved)
		s.kvLen = 0
	}
	r, err := s.prefill(ctx, p)
	if err != nil {
		undo()
		return nil, err
	}
	s.msgs = append(s.msgs, chat.Message{Role: chat.Assistant})
	s.open = true
	err = s.generate(ctx, r, p, onText, nil)
	if err != nil && r.Finish != FinishCancelled {
		undo()
		return nil, err
	}
	// A cancelled reply is kept as far as it went (with ctx's error).
	last := &s.msgs[len(s.msgs)-1]
	last.Content, last.Tokens = r.Text, r.Tokens
	return r, err
}

// Complete continues the conversation's tokens with raw token ids, without
// the chat template, and generates after them: for checks against other
// implementations and for debugging. The ids and the reply stay in the
// conversation's tokens (see Tokens) but belong to no message; a later
// Send renders its messages after them.
func (s *Session) Complete(ctx context.Context, ids []int32, p GenParams, onText func(string)) (*Reply, error) {
	if err := p.Sample.Validate(); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, errors.New("complete: no token ids")
	}
	for i, id := range ids {
		if id < 0 || int(id) >= s.m.Config.Vocab {
			return nil, fmt.Errorf("complete: token %d at index %d outside the vocabulary of %d", id, i, s.m.Config.Vocab)
		}
	}
	if n, limit := len(s.toks)+len(ids), s.seq.Context(); n >= limit {
		return nil, fmt.Errorf("complete: %w: %d tokens, the context holds %d", ErrContextFull, n, limit)
	}
	defer s.finishSnapshots()
	mark := len(s.toks)
	s.toks = append(s.toks, ids...)
	r, err := s.prefill(ctx, p)
	if err != nil {
		s.cut(mark)
		return nil, err
	}
	return r, s.generate(ctx, r, p, onText, nil)
}

// prefill computes the KV of the tokens the session lacks, restoring what
// the prefix cache holds first, and leaves the last token's logits in
// s.logits, or, where the reply p asks for decodes on the device and the
// sequence is a FirstPicker, the reply's first token in s.first, drawn
// there. The reply it returns counts them. With p.OnPrefill, a long prompt
// is read in steps, and a cancel of ctx between them ends the reading
// early (without an error: the turn's generate then ends at once, as
// cancelled, and the rest is read by the next turn).
func (s *Session) prefill(ctx context.Context, p GenParams) (*Reply, error) {
	s.restoreCached()
	r := &Reply{CachedTokens: s.kvLen}
	from := s.kvLen
	var draw *sample.Params
	s.pipe = nil
	if s.picker != nil && s.onDevice(p.Sample, r) != nil {
		draw = &p.Sample
		if q, ok := s.seq.(BatchPipeliner); ok {
			s.pipe = &batchPipe{q: q, p: p.Sample, maxTokens: p.MaxTokens}
		}
	}
	err := s.advance(p.OnPrefill, ctx.Done(), draw)
	r.PromptTokens = s.kvLen - from
	if err != nil && s.pipe != nil {
		// No generate follows to take the batch the pick left in flight.
		if derr := s.pipe.drain(); derr != nil {
			err = errors.Join(err, fmt.Errorf("decode batch submitted ahead: %w", derr))
		}
		s.pipe = nil
	}
	return r, err
}

// generate decodes after s.toks, whose last token's logits are in s.logits,
// until a stop token, p.MaxTokens, the context limit or ctx ends it,
// appending the reply to s.toks and r. prior are the tokens of the reply
// that a continuation extends: text is decoded after them, so a character
// or a word they began comes out as decoding the whole reply gives it.
//
// Greedy replies on a GreedyDecoder take the argmax on the device, in
// batches (see maxGreedySteps): tokens the batch has already run are taken
// from its picks, and a stop token among them is noticed after the
// positions behind it have run. Those positions are simply not counted in
// kvLen. Everything else, the tokens, the finish, kvLen and what is
// streamed, is exactly what decoding through Forward and the sampler
// gives; only the timing differs (a batch's tokens arrive together).
func (s *Session) generate(ctx context.Context, r *Reply, p GenParams, onText func(string), prior []int32) (err error) {
	limit := s.seq.Context()
	sampler := sample.NewSampler(p.Sample)
	dec := s.m.Tokenizer.NewStreamDecoder()
	for _, id := range prior {
		dec.Push(id)
	}
	var text []byte
	emit := func(piece string) {
		text = append(text, piece...)
		if onText != nil && piece != "" {
			onText(piece)
		}
	}
	defer func() {
		emit(dec.Flush())
		r.Text = string(text)
	}()
	gd := s.onDevice(p.Sample, r)
	defer func() { s.firstOK = false }()
	pipe := s.pipe
	s.pipe = nil
	if q, ok := s.seq.(BatchPipeliner); ok && gd != nil && pipe == nil {
		pipe = &batchPipe{q: q, p: p.Sample, maxTokens: p.MaxTokens}
	}
	if pipe != nil {
		defer func() {
			// A batch submitted ahead of a stop, a cancel or the limit ran
			// past the reply: its picks are dropped, its positions are
			// past kvLen like any batch's past a stop token.
			if derr := pipe.drain(); derr != nil && err == nil {
				err = fmt.Errorf("decode batch submitted ahead: %w", derr)
			}
		}()
	}
	// ahead holds the picks of the last greedy batch not yet taken; all
	// but the last have run.
	var ahead []int32
	for {
		if err := ctx.Err(); err != nil {
			r.Finish = FinishCancelled
			return err
		}
		if p.MaxTokens > 0 && len(r.Tokens) >= p.MaxTokens {
			r.Finish = FinishLength
			return nil
		}
		var id int32
		switch {
		case len(ahead) > 0:
			id, ahead = ahead[0], ahead[1:]
		case s.firstOK:
			// Drawn by the prefill on the device, as the step-0 draw of the
			// device's sampler (see FirstPicker).
			id, s.firstOK = s.first, false
		default:
			id = sampler.Sample(s.logits, s.toks)
		}
		if s.m.Template.IsStop(id) {
			r.Finish = FinishStop
			return nil
		}
		r.Tokens = append(r.Tokens, id)
		s.toks = append(s.toks, id)
		piece := dec.Push(id)
		emit(piece)
		if p.OnToken != nil {
			p.OnToken(id, piece)
		}
		// The next position must leave room for the assistant suffix to close
		// the turn; stop one short of the limit.
		if len(s.toks)+1 >= limit {
			r.Finish = FinishLength
			return nil
		}
		var stepErr error
		switch {
		case len(ahead) > 0: // id has run in the last batch
			s.took()
		case pipe != nil:
			ahead, stepErr = s.pipelinedBatch(pipe, len(r.Tokens))
		case gd != nil:
			ahead, stepErr = s.greedyBatch(gd, len(r.Tokens), p.MaxTokens)
		default:
			stepErr = s.advance(nil, nil, nil)
		}
		if stepErr != nil {
			return stepErr
		}
	}
}

// onDevice returns how the reply r decodes on the device: the session's
// GreedyDecoder when p picks the argmax of the logits as they are
// (temperature 0, no repetition penalty), its SampleDecoder for any other
// p, or nil.
func (s *Session) onDevice(p sample.Params, r *Reply) GreedyDecoder {
	greedy := p.Argmax()
	switch {
	case greedy && s.greedy != nil:
		return s.greedy
	case !greedy && s.sampler != nil:
		return sampledBatch{s, p, r}
	}
	return nil
}

// sampledBatch runs a SampleDecoder as a GreedyDecoder batch of reply r:
// the reply's first token took the sampler's step 0 on the host, so pick
// i of a batch after n tokens takes step n+i, and its history is the
// conversation up to the batch's first position, as sample.Sampler sees it.
type sampledBatch struct {
	s *Session
	p sample.Params
	r *Reply
}

func (b sampledBatch) Greedy(token int32, start, steps int) ([]int32, error) {
	return b.s.sampler.Sample(token, start, steps, b.p, uint32(len(b.r.Tokens)), b.s.toks[:start+1])
}

// A greedy batch (one GreedyDecoder call) runs several steps per readback.
// A browser's readback round trip (mapAsync, back to the event loop, into
// the module again) costs milliseconds, more than a decode step of a small
// model on a real GPU, and the GPU idles through it unless the next batch
// is already submitted (BatchPipeliner, see pipelinedBatch). Natively the
// round trip is short and still counts: 128-token replies of
// models/wick-cai-21m on an H200 (BenchmarkSessionDecode in engine/webgpu)
// ran at 570 tokens/s through the logits, 585 with the argmax on the GPU
// and a readback per step, 725 at two steps and 840 at four. A batch is
// one command list (engine/webgpu's SubmitBatch), so in a browser it
// crosses into JS twice (run and map) whatever its length.
//
// The price of a long batch is steps run past a stop token, once per reply,
// and tokens streamed in bursts. So a batch runs as many steps as fit in
// greedyBurst at the session's last measured time per step, between one
// and maxGreedySteps (a session's first batch runs maxGreedySteps): a slow
// GPU, at tens of ms a step, then streams a token or two at a time instead
// of stalling for half a second between bursts. Eight steps at most were
// measured on the page's path on an H200 (bench/BROWSER.md, 2026-12-03):
// no faster than four, since dawn.node encoded an 8-step list of 1,553
// commands at 8-9.5 us a command against 4.8 for a 4-step one (12-14.7 ms
// a list against 4.1), which ate the round trips saved (1B after a
// 600-id prompt: 383-412 tok/s greedy against 427-435). A ring that has
// wrapped allows kv.RingRoom+1 positions past the reply (see batchSteps),
// more than maxGreedySteps-1.
const (
	maxGreedySteps = 4
	greedyBurst    = 100 * time.Millisecond
)

// greedyBatch runs the token just taken (the last of s.toks, at position
// s.kvLen; n is the reply's length with it) and the device's picks after
// it, and returns the picks.
func (s *Session) greedyBatch(gd GreedyDecoder, n, maxTokens int) ([]int32, error) {
	s.rememberNow()
	pos := s.kvLen
	steps := s.batchSteps(pos, n, maxTokens)
	t0 := s.clock()
	ids, err := gd.Greedy(s.toks[pos], pos, steps)
	s.stepTime = s.clock().Sub(t0) / time.Duration(steps)
	s.wrote(pos, pos+steps)
	if err == nil {
		err = s.checkPicks(ids, steps)
	}
	if err != nil {
		return nil, fmt.Errorf("greedy decode at position %d: %w", pos, err)
	}
	s.took()
	return ids, nil
}

// checkPicks reports picks that are not a batch of steps vocabulary ids.
func (s *Session) checkPicks(ids []int32, steps int) error {
	if len(ids) != steps {
		return fmt.Errorf("%d ids for %d steps", len(ids), steps)
	}
	for i, id := range ids {
		if id < 0 || int(id) >= s.m.Config.Vocab {
			return fmt.Errorf("pick %d is token %d, outside the vocabulary of %d", i, id, s.m.Config.Vocab)
		}
	}
	return nil
}

// batchPipe is a reply's decoding on a BatchPipeliner: its draw and
// MaxTokens, the batch submitted ahead (ahead steps from position aheadAt;
// 0: none), the batches in flight, and when the last picks came back.
type batchPipe struct {
	q         BatchPipeliner
	p         sample.Params
	maxTokens int
	ahead     int
	aheadAt   int
	inFlight  int
	collected time.Time
}

// drain collects the batches still in flight, dropping their picks.
func (pl *batchPipe) drain() error {
	var errs []error
	for ; pl.inFlight > 0; pl.inFlight-- {
		if _, err := pl.q.CollectBatch(); err != nil {
			errs = append(errs, err)
		}
	}
	pl.ahead = 0
	return errors.Join(errs...)
}

// pipelinedBatch is greedyBatch on a BatchPipeliner: it runs the token
// just taken (at s.kvLen; n is the reply's length with it) and the
// device's picks after it, in the batch the last call submitted ahead or
// in one submitted now; submits the batch after it ahead where aheadSteps
// allows; and returns this batch's picks. So the device runs the next
// batch while the session streams these picks, and the host's round trip
// and its encoding of the next list hide behind the device's work.
func (s *Session) pipelinedBatch(pl *batchPipe, n int) ([]int32, error) {
	maxTokens := pl.maxTokens
	s.rememberNow()
	pos := s.kvLen
	start := s.clock()
	steps := pl.ahead
	if steps > 0 {
		if pl.aheadAt != pos {
			return nil, fmt.Errorf("decode at position %d: the batch submitted ahead runs from %d", pos, pl.aheadAt)
		}
		// It has run since the last picks came back.
		start, pl.ahead = pl.collected, 0
	} else {
		steps = s.batchSteps(pos, n, maxTokens)
		b := Batch{Token: s.toks[pos], Start: pos, Steps: steps, Params: pl.p, Step: uint32(n), History: s.toks[:pos+1]}
		if err := pl.q.SubmitBatch(b); err != nil {
			return nil, fmt.Errorf("decode at position %d: %w", pos, err)
		}
		pl.inFlight++
		s.wrote(pos, pos+steps)
	}
	if k := s.aheadSteps(pos, steps, n, maxTokens); k > 0 {
		if err := s.submitAhead(pl, pos+steps, k); err != nil {
			return nil, fmt.Errorf("decode at position %d, submitted ahead: %w", pos+steps, err)
		}
	}
	ids, err := s.collect(pl)
	s.stepTime = pl.collected.Sub(start) / time.Duration(steps)
	if err == nil {
		err = s.checkPicks(ids, steps)
	}
	if err != nil {
		return nil, fmt.Errorf("decode at position %d: %w", pos, err)
	}
	s.took()
	return ids, nil
}

// submitAhead submits the batch of k steps from at that continues the
// last one submitted, before that one's picks are back.
func (s *Session) submitAhead(pl *batchPipe, at, k int) error {
	if err := pl.q.SubmitBatch(Batch{Start: at, Steps: k, Params: pl.p, Continues: true}); err != nil {
		return err
	}
	pl.inFlight++
	pl.ahead, pl.aheadAt = k, at
	s.wrote(at, at+k)
	return nil
}

// collect waits for the oldest batch in flight and returns its picks.
func (s *Session) collect(pl *batchPipe) ([]int32, error) {
	ids, err := pl.q.CollectBatch()
	pl.inFlight--
	pl.collected = s.clock()
	return ids, err
}

// aheadSteps is how many steps the batch after the one at pos (steps
// long; n is the reply's length with pos's token) may run when submitted
// before that batch's picks are back, 0 for none. Its token, the batch's
// last pick, must be one the reply takes and runs (MaxTokens, the context
// limit), its steps are batchSteps' at its position, and since any pick
// of the batch at pos may be a stop token, every position of both batches
// after pos must be one the layout can take back. A prefix cache block
// that the batch at pos completes is captured after the batch ahead has
// run: the rings' room keeps the block's live part (see remember).
func (s *Session) aheadSteps(pos, steps, n, maxTokens int) int {
	next := pos + steps
	switch {
	case maxTokens > 0 && n+steps > maxTokens:
		return 0
	case next+2 >= s.seq.Context():
		return 0
	}
	k := s.batchSteps(next, n+steps, maxTokens)
	for k > 0 && !s.m.layout.CanRewind(max(s.written, next+k), pos+1) {
		k--
	}
	return k
}

// clock is the time on the session's clock.
func (s *Session) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// batchSteps is how many steps a greedy batch from position pos runs.
// Pick j of the batch is the reply's token n+j+1 at position pos+1+j, and
// the batch runs it (j < steps-1) only where decoding through Forward would
// run it too: when MaxTokens takes it and it leaves room for the closing
// suffix. So only a stop token (or a cancel) leaves positions past the
// reply, and batchSteps keeps the worst case, every pick after the first
// discarded, a rewind the layout allows. With the prefix cache on, a batch
// ends at the next block boundary at the latest: the block is captured when
// the sequence's last write ends there, before anything past it runs. It
// runs at most as many steps as take greedyBurst at the last batch's time
// per step (see maxGreedySteps).
func (s *Session) batchSteps(pos, n, maxTokens int) int {
	steps := maxGreedySteps
	if s.stepTime > 0 {
		steps = int(min(greedyBurst/s.stepTime, maxGreedySteps))
	}
	steps = min(steps, s.seq.Context()-pos-2)
	if maxTokens > 0 {
		steps = min(steps, maxTokens-n+1)
	}
	if s.cache != nil {
		B := s.cache.Block()
		steps = min(steps, (pos/B+1)*B-pos)
	}
	for steps > 2 && !s.m.layout.CanRewind(max(s.written, pos+steps), pos+1) {
		steps--
	}
	return max(steps, 1)
}

// took counts the KV of the token at s.kvLen, which a greedy batch has
// run, and offers a block it completes to the prefix cache.
func (s *Session) took() {
	s.rememberNow()
	s.kvLen++
	if s.cache != nil && s.kvLen%s.cache.Block() == 0 {
		s.remember(s.kvLen - 1)
	}
}

// wrote records that seq has just written positions [from, to).
func (s *Session) wrote(from, to int) {
	if from == 0 {
		// Every position the rings hold is fresh again.
		s.written, s.restored = to, 0
		return
	}
	s.written = max(s.written, to)
}

// restoreCached restores the longest prefix of the conversation that the
// prefix cache holds, when it is longer than the KV the session has. The
// last token is always left to prefill: its logits start the reply, and
// snapshots hold KV, not logits.
func (s *Session) restoreCached() {
	if s.cache == nil {
		return
	}
	B := s.cache.Block()
	if s.kvLen >= (len(s.toks)-1)/B*B {
		return // the cache cannot hold more of it than the session has
	}
	n, parts := s.cache.Lookup(s.toks[:len(s.toks)-1])
	if n <= s.kvLen {
		return
	}
	if err := s.snap.Restore(parts); err != nil {
		return // the cache is an optimisation: prefill instead
	}
	s.kvLen, s.written, s.restored = n, n, n
}

// advance computes the KV of s.toks[s.kvLen:] and leaves the logits of the
// last token in s.logits, or with draw the token drawn after it with draw's
// parameters on the device (s.picker) in s.first. With progress, it forwards a step of at most
// prefillStep tokens at a time, reports each step, and stops early,
// leaving the rest unread, once cancelled is closed. With a prefix cache it
// offers every block a step completed to the cache after the step, in one
// Snapshots call: a local layer's ring holds only the last window
// positions, so a step ends where the first block it completes would leave
// the ring (kv.Layout.CaptureBound), which on a model of 512-token windows
// and 32-token blocks is 480 tokens past that block's end, and on one
// whose window is not longer than a block is that block's end; a step
// that stops before the prompt's end stops at a block boundary. The
// per-token arithmetic does not depend on the steps, so neither do the
// logits.
func (s *Session) advance(progress func(done, total int), cancelled <-chan struct{}, draw *sample.Params) error {
	s.rememberNow()
	s.firstOK = false
	from, end := s.kvLen, len(s.toks)
	for s.kvLen < end {
		if progress != nil {
			select {
			case <-cancelled:
				return nil
			default:
			}
		}
		start, stop := s.kvLen, end
		if progress != nil {
			stop = min(stop, start+s.prefillStep())
		}
		if s.cache != nil {
			B := s.cache.Block()
			first := (start/B + 1) * B // the end of the first block the step can complete
			if bound := s.m.layout.CaptureBound(first-B, first); bound < first+B {
				stop = min(stop, first) // no second block fits: end at the first
			} else {
				stop = min(stop, bound)
			}
			if stop < end && stop >= first {
				// A step that stops short of the prompt's end stops at a block's:
				// the next starts where a step per block would, so each block
				// of query rows of the GPU's flash attention (a power of two
				// tokens, at most 16) starts at the same position, its keys in
				// the same tiles, and even float32 KV comes out bit for bit as
				// a step per block gives it. (A turn's first step starts where
				// the KV ends; a step per block would stop at the block's end,
				// so in float32 a local layer's rounding may differ there.)
				stop = stop / B * B
			}
		}
		// Recorded first: a pick submits the reply's first batch after the
		// step (pickFirst), which writes past it.
		s.wrote(start, stop)
		var err error
		if f, ok := s.seq.(KVFiller); ok && stop < end {
			// Not the prompt's last step: its logits would be overwritten
			// unread, so it is not waited for either.
			err = f.Fill(s.toks[start:stop], start)
		} else if draw != nil && stop == end {
			// The reply's first draw, at step 0 of its sampler, with the
			// whole conversation as its history.
			s.first, err = s.pickFirst(s.toks[start:stop], start, *draw)
			if err == nil && (s.first < 0 || int(s.first) >= s.m.Config.Vocab) {
				err = fmt.Errorf("prefill: the first pick is token %d, outside the vocabulary of %d", s.first, s.m.Config.Vocab)
			}
			s.firstOK = err == nil
		} else {
			err = s.seq.Forward(s.toks[start:stop], start, s.logits)
		}
		if err != nil {
			return err
		}
		s.kvLen = stop
		if s.cache != nil {
			if stop == end {
				// The prompt's last step: its blocks are taken once its
				// token is out (rememberNow), before anything else runs
				// on the sequence, so the token does not wait even for
				// the copies' encoding and submission.
				s.rememberFrom, s.rememberLater = start, true
			} else {
				s.remember(start)
			}
		}
		if progress != nil {
			progress(stop-from, end-from)
		}
	}
	return nil
}

// pickFirst forwards the prompt's last step, tokens at start, and returns
// the reply's first token, drawn with p at step 0 of its sampler with the
// conversation as history on the device (FirstPicker). On a PickSubmitter
// the pick is submitted as a batch and the reply's first decode batch
// after it (firstAheadSteps) before the token is back: generate then finds
// that batch in s.pipe, as the batch submitted ahead of the token it runs.
func (s *Session) pickFirst(tokens []int32, start int, p sample.Params) (int32, error) {
	ps, ok := s.seq.(PickSubmitter)
	pl := s.pipe
	if !ok || pl == nil {
		return s.picker.ForwardPick(tokens, start, p, 0, s.toks)
	}
	if err := ps.SubmitPick(tokens, start, p, 0, s.toks); err != nil {
		return -1, err
	}
	pl.inFlight++
	end := start + len(tokens)
	if k := s.firstAheadSteps(start, end, pl.maxTokens); k > 0 {
		if err := s.submitAhead(pl, end, k); err != nil {
			return -1, fmt.Errorf("the reply's first decode batch, at %d: %w", end, err)
		}
	}
	ids, err := s.collect(pl)
	if err == nil && len(ids) != 1 {
		err = fmt.Errorf("%d ids for one pick", len(ids))
	}
	if err != nil {
		return -1, err
	}
	return ids[0], nil
}

// firstAheadSteps is how many steps the reply's first decode batch, from
// end (the prompt's length, where the first token runs), may run when
// submitted before that token is back, 0 for none: the steps batchSteps
// gives it once the token is taken, where the token would run at all
// (the context limit), the layout can take back every one of them (the
// token may be a stop), and the blocks that the prompt's last step (from
// start) completes stay capturable after them (they are taken once the
// token is out; see rememberNow).
func (s *Session) firstAheadSteps(start, end, maxTokens int) int {
	if end+2 >= s.seq.Context() {
		return 0
	}
	var blocks []kv.Span
	if s.cache != nil {
		blocks = s.blockSpans(start, end)
	}
	k := s.batchSteps(end, 1, maxTokens)
	for k > 0 && (!s.m.layout.CanRewind(max(s.written, end+k), end) || !s.capturable(blocks, max(s.written, end+k))) {
		k--
	}
	return k
}

// prefillStep is the most tokens one forward of a prompt takes when its
// progress is reported: the sequence's own step (PrefillStepper), else
// prefillChunk.
func (s *Session) prefillStep() int {
	if st, ok := s.seq.(PrefillStepper); ok {
		return max(st.PrefillStep(), 1)
	}
	return prefillChunk
}

// prefillChunk is the most tokens one forward of a prompt takes when its
// progress is reported on a sequence that does not say (a CPU backend):
// small enough that a slow backend (a browser's CPU one) reports every few
// seconds at worst.
const prefillChunk = 64

// remember offers the prefix cache the blocks that end in (start, s.kvLen],
// which the sequence has just written, with one Snapshots call. Failures
// only cost future reuse, so they are not errors of the turn. On a
// SnapshotStarter the snapshots are only started: the blocks go into the
// cache when their bytes are back, after the turn's first token at the
// latest (see finishSnapshots), so the token does not wait for them.
func (s *Session) remember(start int) {
	spans := s.blockSpans(start, s.kvLen)
	if len(spans) == 0 || !s.capturable(spans, s.written) {
		return
	}
	// The tokens as they are now: s.toks may be cut and written over
	// before the snapshots are back.
	toks, cache := slices.Clone(s.toks[:s.kvLen]), s.cache
	insert := func(snaps []*kv.Snapshot, err error) {
		if err != nil {
			return
		}
		for i, sp := range spans {
			if cache.Insert(toks[:sp.To], snaps[i]) != nil {
				return
			}
		}
	}
	if st, ok := s.snap.(SnapshotStarter); ok {
		if st.StartSnapshots(spans, insert) == nil {
			s.starting, s.startedTo = st, spans[len(spans)-1].To
		}
		return
	}
	insert(s.snap.Snapshots(spans))
}

// blockSpans are the blocks remember offers the cache after a write of
// the positions [start, end): those ending in (start, end] after the
// blocks it holds (none where a block before them is missing: they could
// not be restored).
func (s *Session) blockSpans(start, end int) []kv.Span {
	B := s.cache.Block()
	first := (start/B + 1) * B // the first block end the write reached
	held := s.cache.Held(s.toks[:end])
	if s.startedTo > held && s.startedTo <= end {
		held = s.startedTo // blocks started this turn, not back yet: they go in first
	}
	if held+B < first {
		return nil
	}
	var spans []kv.Span
	for b := max(first, held+B); b <= end; b += B {
		spans = append(spans, kv.Span{From: b - B, To: b})
	}
	return spans
}

// capturable reports whether every span can be copied out once the
// sequence has written up to end. Positions written past the reply (a
// batch run past a stop token, or submitted ahead) are outside every
// block, and leave a block capturable while the rings still hold its live
// part.
func (s *Session) capturable(spans []kv.Span, end int) bool {
	for _, sp := range spans {
		if !s.m.layout.CanCapture(end, sp.From, sp.To) {
			return false
		}
	}
	return true
}

// rememberNow offers the cache the blocks of the step advance left for
// later (the prompt's last), if any: the session calls it before the
// sequence's next forward, decode batch or the turn's end.
func (s *Session) rememberNow() {
	if s.rememberLater {
		s.rememberLater = false
		s.remember(s.rememberFrom)
	}
}

// finishSnapshots puts the blocks whose snapshots remember started into
// the prefix cache, waiting for their bytes where they are not back yet
// (usually they are: any wait for the device delivers them). Every turn
// ends with it, so the blocks a turn computed are in the cache for the
// next turn of any session, and Close never leaves a readback behind.
func (s *Session) finishSnapshots() {
	s.rememberNow()
	if s.starting != nil {
		s.starting.FinishSnapshots() // a failure only costs the blocks
		s.starting, s.startedTo = nil, 0
	}
}

// KVLen is how many of the conversation's tokens have their KV in the
// session: the rest are prefilled by the next turn.
func (s *Session) KVLen() int { return s.kvLen }

// savedChat is what a saved conversation keeps besides tokens and KV, as
// the snapshot file's meta (JSON: small, and readable when debugging).
type savedChat struct {
	Messages []savedMessage `json:"messages"`
	Start    []int          `json:"start"` // token offset of each rendered message
	Open     bool           `json:"open"`  // the last reply's suffix is not yet appended
	// Post is the post-history instructions, PostLen how many tokens of
	// them stand before the open reply (at its message's start). Saves
	// made before they existed have neither: their tokens are the
	// rendering of the history alone, which is still valid.
	Post    string `json:"post_history,omitempty"`
	PostLen int    `json:"post_tokens,omitempty"`
}

type savedMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Tokens  []int32 `json:"tokens,omitempty"`
}

var roles = map[string]chat.Role{"system": chat.System, "user": chat.User, "assistant": chat.Assistant}

// MarshalBinary saves the conversation: its messages, its tokens and the
// KV of those the session holds, in the kv snapshot file format, stamped
// with the model's identity. The browser stores the bytes in OPFS; natively,
// Save writes them to a file. When the sequence cannot copy its KV out (a
// backend without Snapshotter, or a ring cut back past what it holds), the
// file holds no KV and the restored session re-prefills. A greedy batch
// that ran past a stop token (see GreedyDecoder) is such a cut once a
// ring has wrapped, under kv.Layout.CanCapture's rule.
func (s *Session) MarshalBinary() ([]byte, error) {
	meta := savedChat{Start: s.start, Open: s.open, Post: s.post, PostLen: s.postLen}
	for _, m := range s.msgs {
		meta.Messages = append(meta.Messages, savedMessage{Role: m.Role.String(), Content: m.Content, Tokens: m.Tokens})
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("save session: %w", err)
	}
	lay := s.m.layout
	snap := &kv.Snapshot{DType: lay.DType, KVHeads: lay.KVHeads, HeadDim: lay.HeadDim}
	if s.snap != nil && s.kvLen > 0 {
		if x, err := s.snap.Snapshot(0, s.kvLen); err == nil {
			snap = x
		}
	}
	return (&kv.File{Identity: s.m.identity, Tokens: s.toks, Meta: mb, KV: snap}).Encode()
}

// Save writes the conversation to path (see MarshalBinary) atomically: a
// temporary file in the same directory, synced, then renamed over path, so
// a crash leaves the old file or the new one, never a mix.
func (s *Session) Save(path string) error {
	data, err := s.MarshalBinary()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".wick-chat-*.tmp")
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save session to %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save session to %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save session to %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save session to %s: %w", path, err)
	}
	return nil
}

// RestoreSession continues a conversation saved by MarshalBinary: its
// messages and tokens come back, and its KV is loaded into a new sequence,
// so the next turn prefills only its own new tokens. Data saved by another
// model or mode gives an error wrapping kv.ErrSnapshotModel (ReplaySession
// still recovers its messages); a damaged, truncated or unknown-version
// file an error wrapping kv.ErrSnapshotCorrupt or kv.ErrSnapshotVersion.
func (m *Model) RestoreSession(data []byte) (*Session, error) {
	f, err := kv.DecodeFile(data, m.identity)
	if err != nil {
		return nil, fmt.Errorf("restore session: %w", err)
	}
	meta, err := m.decodeChat(f)
	if err != nil {
		return nil, err
	}
	if len(f.Tokens) >= m.context {
		return nil, fmt.Errorf("restore session: %w: %d tokens, the context holds %d", ErrContextFull, len(f.Tokens), m.context)
	}
	for i, t := range f.Tokens {
		if t < 0 || int(t) >= m.Config.Vocab {
			return nil, fmt.Errorf("restore session: %w: token %d at %d outside the vocabulary of %d", kv.ErrSnapshotCorrupt, t, i, m.Config.Vocab)
		}
	}
	seq, err := m.Backend.NewSequence(m.context)
	if err != nil {
		return nil, fmt.Errorf("restore session: %w", err)
	}
	s := m.newSession(seq)
	s.msgs, s.toks, s.start, s.open = meta.msgs, f.Tokens, meta.Start, meta.Open
	s.post, s.postLen = meta.Post, meta.PostLen
	if f.KV.End > 0 && s.snap != nil {
		if err := s.snap.Restore([]*kv.Snapshot{f.KV}); err != nil {
			seq.Close()
			return nil, fmt.Errorf("restore session: %w", err)
		}
		s.kvLen, s.written, s.restored = f.KV.End, f.KV.End, f.KV.End
	}
	return s, nil
}

// ReplaySession recovers only the messages of a saved conversation, from
// any model: the next turn renders and prefills them all. It is the
// fallback when RestoreSession refuses a file of another model or mode.
// Replies are re-encoded from their text, since their saved tokens may
// belong to another tokenizer.
func (m *Model) ReplaySession(data []byte) (*Session, error) {
	f, err := kv.DecodeFile(data, m.identity)
	if err != nil && !errors.Is(err, kv.ErrSnapshotModel) {
		return nil, fmt.Errorf("replay session: %w", err)
	}
	meta, err := m.decodeChat(f)
	if err != nil {
		return nil, err
	}
	seq, err := m.Backend.NewSequence(m.context)
	if err != nil {
		return nil, fmt.Errorf("replay session: %w", err)
	}
	s := m.newSession(seq)
	s.post = meta.Post
	for _, msg := range meta.msgs {
		msg.Tokens = nil
		s.msgs = append(s.msgs, msg)
	}
	return s, nil
}

// restoredChat is a saved conversation's meta, checked.
type restoredChat struct {
	savedChat
	msgs []chat.Message
}

func (m *Model) decodeChat(f *kv.File) (*restoredChat, error) {
	var c restoredChat
	if err := json.Unmarshal(f.Meta, &c.savedChat); err != nil {
		return nil, fmt.Errorf("restore session: %w: messages: %v", kv.ErrSnapshotCorrupt, err)
	}
	for i, sm := range c.Messages {
		role, ok := roles[sm.Role]
		if !ok {
			return nil, fmt.Errorf("restore session: %w: message %d has unknown role %q", kv.ErrSnapshotCorrupt, i, sm.Role)
		}
		c.msgs = append(c.msgs, chat.Message{Role: role, Content: sm.Content, Tokens: sm.Tokens})
	}
	if len(c.Start) > len(c.msgs) || (c.Open && (len(c.msgs) == 0 || c.msgs[len(c.msgs)-1].Role != chat.Assistant)) {
		return nil, fmt.Errorf("restore session: %w: %d message offsets for %d messages (open reply %v)", kv.ErrSnapshotCorrupt, len(c.Start), len(c.msgs), c.Open)
	}
	for i, at := range c.Start {
		if at < 0 || at > len(f.Tokens) || (i > 0 && at < c.Start[i-1]) {
			return nil, fmt.Errorf("restore session: %w: message %d starts at token %d of %d", kv.ErrSnapshotCorrupt, i, at, len(f.Tokens))
		}
	}
	if c.PostLen != 0 && (c.PostLen < 0 || !c.Open || len(c.Start) != len(c.msgs) || c.Start[len(c.Start)-1]+c.PostLen > len(f.Tokens)) {
		return nil, fmt.Errorf("restore session: %w: %d tokens of post-history instructions before the last reply (open %v, %d offsets for %d messages)", kv.ErrSnapshotCorrupt, c.PostLen, c.Open, len(c.Start), len(c.msgs))
	}
	return &c, nil
}
