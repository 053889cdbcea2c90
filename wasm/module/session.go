//go:build wasip1

package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/sample"
)

// session is one conversation, kept as tokens exactly as the model saw and
// produced them, with the KV of the first kvLen of them on the backend: a
// turn prefills only what the cache does not hold. It follows
// engine.Session's turn semantics token for token, so the module and the
// native engine give the same replies.
type session struct {
	ld       *loaded
	seq      engine.Sequence
	msgs     []chat.Message
	rendered int // messages whose tokens are in toks
	toks     []int32
	kvLen    int
	open     bool // the last message is a reply whose closing suffix is not in toks yet
	logits   []float32
}

// turnInput is wick_send's and wick_complete's input (JSON).
type turnInput struct {
	Text        string  `json:"text"` // wick_send: the user message
	IDs         []int32 `json:"ids"`  // wick_complete: raw token ids, no chat template
	MaxTokens   int     `json:"max_tokens"`
	Temperature float32 `json:"temperature"`
	TopP        float32 `json:"top_p"`
	TopK        int     `json:"top_k"`
	RepPenalty  float32 `json:"rep_penalty"`
	Seed        uint64  `json:"seed"`
}

func (in *turnInput) params() sample.Params {
	return sample.Params{Temperature: in.Temperature, TopP: in.TopP, TopK: in.TopK, RepetitionPenalty: in.RepPenalty, Seed: in.Seed}
}

// reply is a turn's result (wick_output after the final statusDone).
type reply struct {
	Tokens []int32 `json:"tokens"`
	Text   string  `json:"text"`
	Finish string  `json:"finish"` // stop, length or cancelled
	Prompt int     `json:"prompt_tokens"`
	Cached int     `json:"cached_tokens"`
}

// tokenOut is the output of each statusToken pause.
type tokenOut struct {
	Token int32  `json:"token"`
	Text  string `json:"text"` // whole UTF-8 characters completed by this token
}

// greedySequence is a backend that takes the argmax on its device:
// Greedy(token, start, steps) runs token at start and steps-1 of its own
// picks after it, and returns the steps picked ids.
type greedySequence interface {
	Greedy(token int32, start, steps int) ([]int32, error)
}

// lookahead is how many steps one device greedy call runs. Each call runs
// the accepted token and then the device's own pick before the host has
// seen it, so a stop (or the token limit) is noticed one step late. One
// discarded step is always safe for the KV cache, even for rings: it writes
// only the position the next turn rewrites first.
const lookahead = 2

func newSession(ld *loaded, system string) (*session, error) {
	seq, err := ld.newSeq(ld.context)
	if err != nil {
		return nil, fmt.Errorf("new session: %w", err)
	}
	s := &session{ld: ld, seq: seq, logits: make([]float32, ld.cfg.Vocab)}
	if system != "" {
		s.msgs = append(s.msgs, chat.Message{Role: chat.System, Content: system})
	}
	return s, nil
}

// send adds a user message and generates the reply.
func (s *session) send(t *task, in *turnInput) (*reply, error) {
	if err := in.params().Validate(); err != nil {
		return nil, err
	}
	if in.MaxTokens < 0 {
		return nil, fmt.Errorf("max_tokens %d: want 0 (no limit) or more", in.MaxTokens)
	}
	mark, open, nmsg, rendered := len(s.toks), s.open, len(s.msgs), s.rendered
	s.msgs = append(s.msgs, chat.Message{Role: chat.User, Content: in.Text})
	tm := s.ld.tmpl
	if len(s.toks) == 0 {
		s.toks = append(s.toks, tm.Begin()...)
	}
	if s.open {
		s.toks = append(s.toks, tm.AssistantSuffix()...)
		s.open = false
	}
	for ; s.rendered < len(s.msgs); s.rendered++ {
		s.toks = append(s.toks, tm.EncodeMessage(s.msgs, s.rendered)...)
	}
	s.toks = append(s.toks, tm.GenerationPrompt()...)
	if n := len(s.toks); n >= s.seq.Context() {
		// The turn is not taken: the conversation is left as it was.
		s.toks, s.open, s.msgs, s.rendered = s.toks[:mark], open, s.msgs[:nmsg], rendered
		return nil, fmt.Errorf("%w: %d tokens with the new message, the context holds %d", engine.ErrContextFull, n, s.seq.Context())
	}
	s.msgs = append(s.msgs, chat.Message{Role: chat.Assistant})
	s.rendered++
	r, err := s.generate(t, in)
	if r != nil {
		s.msgs[len(s.msgs)-1].Content, s.msgs[len(s.msgs)-1].Tokens = r.Text, r.Tokens
		s.open = true
	}
	return r, err
}

// complete continues the session's tokens with raw ids (no chat template)
// and generates after them: for debugging and for checks against other
// implementations.
func (s *session) complete(t *task, in *turnInput) (*reply, error) {
	if err := in.params().Validate(); err != nil {
		return nil, err
	}
	if len(in.IDs) == 0 {
		return nil, errors.New("complete: no token ids (field \"ids\")")
	}
	for i, id := range in.IDs {
		if id < 0 || int(id) >= s.ld.cfg.Vocab {
			return nil, fmt.Errorf("complete: token %d at index %d outside the vocabulary of %d", id, i, s.ld.cfg.Vocab)
		}
	}
	if n := len(s.toks) + len(in.IDs); n >= s.seq.Context() {
		return nil, fmt.Errorf("%w: %d tokens, the context holds %d", engine.ErrContextFull, n, s.seq.Context())
	}
	s.toks = append(s.toks, in.IDs...)
	return s.generate(t, in)
}

// generate prefills the tokens the cache lacks, then decodes until a stop
// token, MaxTokens or the context limit, pausing with statusToken after
// every token. Greedy decoding on a GPU keeps the picks on the device (see
// lookahead); otherwise each step reads the logits back and samples here.
func (s *session) generate(t *task, in *turnInput) (*reply, error) {
	r := &reply{Cached: s.kvLen, Prompt: len(s.toks) - s.kvLen}
	if err := s.seq.Forward(s.toks[s.kvLen:], s.kvLen, s.logits); err != nil {
		s.toks = s.toks[:s.kvLen]
		return nil, err
	}
	s.kvLen = len(s.toks)
	p := in.params()
	sampler := sample.NewSampler(p)
	gs, onDevice := s.seq.(greedySequence)
	onDevice = onDevice && p.Temperature == 0 && (p.RepetitionPenalty == 0 || p.RepetitionPenalty == 1)
	dec := s.ld.tok.NewStreamDecoder()
	var text []byte
	defer func() { r.Text = string(append(text, dec.Flush()...)) }()
	limit := s.seq.Context()
	next := sampler.Sample(s.logits, s.toks)
	var ahead []int32 // device picks whose tokens already ran
	for {
		if in.MaxTokens > 0 && len(r.Tokens) >= in.MaxTokens {
			r.Finish = string(engine.FinishLength)
			return r, nil
		}
		id := next
		if s.ld.tmpl.IsStop(id) {
			r.Finish = string(engine.FinishStop)
			return r, nil
		}
		r.Tokens = append(r.Tokens, id)
		s.toks = append(s.toks, id)
		piece := dec.Push(id)
		text = append(text, piece...)
		out, _ := json.Marshal(tokenOut{Token: id, Text: piece})
		setOutput(out)
		if err := t.pause(statusToken); err != nil {
			r.Finish = string(engine.FinishCancelled)
			s.kvLen = min(s.kvLen, len(s.toks))
			return r, nil
		}
		// The next position must leave room for the assistant suffix to
		// close the turn; stop one short of the limit.
		if len(s.toks)+1 >= limit {
			r.Finish = string(engine.FinishLength)
			return r, nil
		}
		switch {
		case len(ahead) > 0: // id already ran on the device
			next, ahead = ahead[0], ahead[1:]
		case onDevice:
			steps := 1
			if (in.MaxTokens == 0 || len(r.Tokens) < in.MaxTokens) && len(s.toks)+2 < limit {
				steps = lookahead
			}
			ids, err := gs.Greedy(id, s.kvLen, steps)
			if err != nil {
				return r, err
			}
			next, ahead = ids[0], ids[1:]
		default:
			if err := s.seq.Forward(s.toks[s.kvLen:], s.kvLen, s.logits); err != nil {
				return r, err
			}
			next = sampler.Sample(s.logits, s.toks)
		}
		s.kvLen = len(s.toks)
	}
}
