package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine/chat"
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
}

// Reply is what one turn produced.
type Reply struct {
	Text         string
	Tokens       []int32 // generated ids, the stop token excluded
	Finish       Finish
	PromptTokens int // tokens of the turn prefilled (new to the KV cache)
	CachedTokens int // tokens of the conversation whose KV was reused
}

// Session is one conversation. Its KV cache lives between turns, so each
// turn prefills only the tokens the cache does not hold.
//
// The conversation is kept as tokens, exactly as the model saw and produced
// them: re-encoding generated text could tokenise it differently and
// needlessly break the cached prefix.
type Session struct {
	m     *Model
	seq   Sequence
	msgs  []chat.Message
	toks  []int32 // the conversation so far
	start []int   // toks offset where each message's rendering begins
	kvLen int     // positions of toks whose KV is in seq
	// open is true while the last message is an assistant reply whose
	// closing suffix has not been appended yet.
	open   bool
	logits []float32
}

// NewSession starts a conversation; system, when not empty, is the system
// prompt (a character card's, see chat.Card).
func (m *Model) NewSession(system string) (*Session, error) {
	seq, err := m.Backend.NewSequence(m.context)
	if err != nil {
		return nil, fmt.Errorf("new session: %w", err)
	}
	s := &Session{m: m, seq: seq, logits: make([]float32, m.Config.Vocab)}
	if system != "" {
		s.msgs = append(s.msgs, chat.Message{Role: chat.System, Content: system})
	}
	return s, nil
}

// Close frees the session's KV cache.
func (s *Session) Close() error { return s.seq.Close() }

// Messages returns the conversation so far.
func (s *Session) Messages() []chat.Message { return append([]chat.Message(nil), s.msgs...) }

// Tokens returns the conversation's tokens so far.
func (s *Session) Tokens() []int32 { return append([]int32(nil), s.toks...) }

// Send adds a user message and generates the reply, streaming its text to
// onText (may be nil) as whole UTF-8 characters.
func (s *Session) Send(ctx context.Context, text string, p GenParams, onText func(string)) (*Reply, error) {
	s.msgs = append(s.msgs, chat.Message{Role: chat.User, Content: text})
	return s.reply(ctx, p, onText)
}

// Regenerate drops the last reply and generates a new one for the same
// user message.
func (s *Session) Regenerate(ctx context.Context, p GenParams, onText func(string)) (*Reply, error) {
	if len(s.msgs) == 0 || s.msgs[len(s.msgs)-1].Role != chat.Assistant {
		return nil, errors.New("regenerate: the last message is not a reply")
	}
	s.truncate(len(s.msgs) - 1)
	return s.reply(ctx, p, onText)
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
	s.open = false
	s.toks = s.toks[:cut]
	if s.kvLen > cut {
		if s.m.layoutCanRewind(s.kvLen, cut) {
			s.kvLen = cut
		} else {
			s.kvLen = 0
		}
	}
}

// render appends the tokens of messages not yet rendered, then opens the
// reply: the assistant message begins where its generation prompt does.
func (s *Session) render() {
	t := s.m.Template
	if len(s.toks) == 0 {
		s.toks = append(s.toks, t.Begin()...)
	}
	if s.open {
		s.toks = append(s.toks, t.AssistantSuffix()...)
		s.open = false
	}
	for i := len(s.start); i < len(s.msgs); i++ {
		s.start = append(s.start, len(s.toks))
		s.toks = append(s.toks, t.EncodeMessage(s.msgs, i)...)
	}
	s.start = append(s.start, len(s.toks))
	s.toks = append(s.toks, t.GenerationPrompt()...)
}

func (s *Session) reply(ctx context.Context, p GenParams, onText func(string)) (*Reply, error) {
	if err := p.Sample.Validate(); err != nil {
		return nil, err
	}
	mark, startMark, openMark := len(s.toks), len(s.start), s.open
	s.render()
	limit := s.seq.Context()
	if len(s.toks) >= limit {
		n := len(s.toks)
		// The turn is not taken: the conversation is left as it was.
		s.toks, s.start, s.open, s.msgs = s.toks[:mark], s.start[:startMark], openMark, s.msgs[:startMark]
		return nil, fmt.Errorf("%w: %d tokens with the new message, the context holds %d", ErrContextFull, n, limit)
	}
	r := &Reply{CachedTokens: s.kvLen, PromptTokens: len(s.toks) - s.kvLen}
	if err := s.seq.Forward(s.toks[s.kvLen:], s.kvLen, s.logits); err != nil {
		return nil, err
	}
	s.kvLen = len(s.toks)
	s.msgs = append(s.msgs, chat.Message{Role: chat.Assistant})
	s.open = true
	sampler := sample.NewSampler(p.Sample)
	dec := s.m.Tokenizer.NewStreamDecoder()
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
		s.msgs[len(s.msgs)-1].Content = r.Text
		s.msgs[len(s.msgs)-1].Tokens = r.Tokens
	}()
	for {
		if err := ctx.Err(); err != nil {
			r.Finish = FinishCancelled
			return r, err
		}
		if p.MaxTokens > 0 && len(r.Tokens) >= p.MaxTokens {
			r.Finish = FinishLength
			return r, nil
		}
		id := sampler.Sample(s.logits, s.toks)
		if s.m.Template.IsStop(id) {
			r.Finish = FinishStop
			return r, nil
		}
		r.Tokens = append(r.Tokens, id)
		s.toks = append(s.toks, id)
		emit(dec.Push(id))
		// The next position must leave room for the assistant suffix to close
		// the turn; stop one short of the limit.
		if len(s.toks)+1 >= limit {
			r.Finish = FinishLength
			return r, nil
		}
		if err := s.seq.Forward(s.toks[s.kvLen:], s.kvLen, s.logits); err != nil {
			return r, err
		}
		s.kvLen = len(s.toks)
	}
}
