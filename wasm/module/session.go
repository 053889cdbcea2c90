//go:build wasip1

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/sample"
)

// Sessions are engine.Sessions: the module adds only the boundary, JSON in
// and out and a pause after every token, so its replies are the native
// engine's token for token (prefix cache, greedy decoding on the GPU and
// saved conversations included).

// turnInput is the input of the exports that generate (JSON).
type turnInput struct {
	Text        string  `json:"text"` // wick_send, wick_edit_last: the user message
	IDs         []int32 `json:"ids"`  // wick_complete: raw token ids, no chat template
	MaxTokens   int     `json:"max_tokens"`
	Temperature float32 `json:"temperature"`
	TopP        float32 `json:"top_p"`
	TopK        int     `json:"top_k"`
	RepPenalty  float32 `json:"rep_penalty"`
	Seed        uint64  `json:"seed"`
	// Progress asks for a statusProgress pause after each chunk of the
	// prompt the turn reads (prefillOut); hosts that do not ask never see
	// that status.
	Progress bool `json:"progress"`
}

// reply is a turn's result (wick_output after the final statusDone).
type reply struct {
	Tokens []int32 `json:"tokens"`
	Text   string  `json:"text"`
	Finish string  `json:"finish"` // stop, length or cancelled
	Prompt int     `json:"prompt_tokens"`
	Cached int     `json:"cached_tokens"`
	// Content is the whole reply message after the turn: for wick_continue,
	// the reply continued (Text is only what the continuation added).
	Content string `json:"content"`
	// ReplyTokens are the whole reply message's tokens (its Tokens).
	ReplyTokens []int32 `json:"reply_tokens"`
}

// prefillOut is the output of each statusProgress pause: the tokens of the
// turn's prompt read so far, and in all.
type prefillOut struct {
	Done  int `json:"prefill_done"`
	Total int `json:"prefill_total"`
}

// tokenOut is the output of each statusToken pause.
type tokenOut struct {
	Token int32  `json:"token"`
	Text  string `json:"text"` // whole UTF-8 characters completed by this token
}

// generator is one of engine.Session's turns, given the input.
type generator func(ctx context.Context, s *engine.Session, in *turnInput, p engine.GenParams) (*engine.Reply, error)

func sendTurn(ctx context.Context, s *engine.Session, in *turnInput, p engine.GenParams) (*engine.Reply, error) {
	return s.Send(ctx, in.Text, p, nil)
}

func completeTurn(ctx context.Context, s *engine.Session, in *turnInput, p engine.GenParams) (*engine.Reply, error) {
	if len(in.IDs) == 0 {
		return nil, errors.New("no token ids (field \"ids\")")
	}
	return s.Complete(ctx, in.IDs, p, nil)
}

func regenerateTurn(ctx context.Context, s *engine.Session, _ *turnInput, p engine.GenParams) (*engine.Reply, error) {
	return s.Regenerate(ctx, p, nil)
}

func continueTurn(ctx context.Context, s *engine.Session, _ *turnInput, p engine.GenParams) (*engine.Reply, error) {
	return s.Continue(ctx, p, nil)
}

func editTurn(ctx context.Context, s *engine.Session, in *turnInput, p engine.GenParams) (*engine.Reply, error) {
	return s.EditLast(ctx, in.Text, p, nil)
}

// generate runs turn g of s inside task t: every token the reply takes is
// handed to the host with statusToken, and a wick_cancel there ends the
// reply (finish "cancelled", the tokens so far kept), which is a result,
// not an error.
func generate(t *task, s *engine.Session, g generator, in *turnInput) (*reply, error) {
	if in.MaxTokens < 0 {
		return nil, fmt.Errorf("max_tokens %d: want 0 (no limit) or more", in.MaxTokens)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := engine.GenParams{
		Sample:    sample.Params{Temperature: in.Temperature, TopP: in.TopP, TopK: in.TopK, RepetitionPenalty: in.RepPenalty, Seed: in.Seed},
		MaxTokens: in.MaxTokens,
		OnToken: func(id int32, text string) {
			out, _ := json.Marshal(tokenOut{Token: id, Text: text})
			setOutput(out)
			if t.pause(statusToken) != nil {
				cancel()
			}
		},
	}
	if in.Progress {
		p.OnPrefill = func(done, total int) {
			out, _ := json.Marshal(prefillOut{Done: done, Total: total})
			setOutput(out)
			if t.pause(statusProgress) != nil {
				cancel() // the reply ends before its first token
			}
		}
	}
	r, err := g(ctx, s, in, p)
	if err != nil && !(r != nil && r.Finish == engine.FinishCancelled && errors.Is(err, context.Canceled)) {
		return nil, err
	}
	out := &reply{Tokens: r.Tokens, Text: r.Text, Finish: string(r.Finish), Prompt: r.PromptTokens, Cached: r.CachedTokens}
	if msgs := s.Messages(); len(msgs) > 0 && msgs[len(msgs)-1].Role == chat.Assistant {
		out.Content, out.ReplyTokens = msgs[len(msgs)-1].Content, msgs[len(msgs)-1].Tokens
	}
	return out, nil
}

// message is a conversation message as JSON: wick_set_history's input and
// wick_restore's output. An assistant message's tokens are the reply's, as
// wick_send returned them: with them the session keeps the KV of a
// conversation it already holds; without them the text is encoded again.
type message struct {
	Role    string  `json:"role"` // system, user or assistant
	Content string  `json:"content"`
	Tokens  []int32 `json:"tokens,omitempty"`
}

var roles = map[string]chat.Role{"system": chat.System, "user": chat.User, "assistant": chat.Assistant}

// historyInput is wick_set_history's input.
type historyInput struct {
	Messages    []message `json:"messages"`
	PostHistory *string   `json:"post_history"`
}

func (h *historyInput) messages(vocab int) ([]chat.Message, error) {
	msgs := make([]chat.Message, len(h.Messages))
	for i, m := range h.Messages {
		role, ok := roles[m.Role]
		if !ok {
			return nil, fmt.Errorf("message %d: unknown role %q (want system, user or assistant)", i, m.Role)
		}
		if len(m.Tokens) > 0 && role != chat.Assistant {
			return nil, fmt.Errorf("message %d: only assistant messages carry tokens", i)
		}
		for j, id := range m.Tokens {
			if id < 0 || int(id) >= vocab {
				return nil, fmt.Errorf("message %d: token %d at index %d outside the vocabulary of %d", i, id, j, vocab)
			}
		}
		msgs[i] = chat.Message{Role: role, Content: m.Content, Tokens: m.Tokens}
	}
	return msgs, nil
}

func messagesOut(msgs []chat.Message) []message {
	out := make([]message, len(msgs))
	for i, m := range msgs {
		out[i] = message{Role: m.Role.String(), Content: m.Content, Tokens: m.Tokens}
	}
	return out
}

// restored is wick_restore's output.
type restored struct {
	Session int32 `json:"session"`
	// KVTokens is how many of the conversation's tokens came back with
	// their KV: the next turn prefills only what follows them.
	KVTokens int `json:"kv_tokens"`
	// Replayed is true when the saved KV was another model's or mode's:
	// only the messages came back, and the next turn prefills them all.
	// Reason then says why the KV was refused.
	Replayed bool      `json:"replayed"`
	Reason   string    `json:"reason,omitempty"`
	Messages []message `json:"messages"`
	// PostHistory is the instructions the session puts before each reply,
	// as saved ("" for saves made before there were any).
	PostHistory string `json:"post_history"`
}

// restore continues a saved conversation in a new session of m: with its
// KV when the file is m's (engine.Model.RestoreSession), else from its
// messages alone (ReplaySession). A damaged file is an error.
func restore(m *engine.Model, data []byte) (*engine.Session, *restored, error) {
	s, err := m.RestoreSession(data)
	if err == nil {
		return s, &restored{KVTokens: s.KVLen(), Messages: messagesOut(s.Messages()), PostHistory: s.PostHistory()}, nil
	}
	if !errors.Is(err, kv.ErrSnapshotModel) {
		return nil, nil, err
	}
	s, rerr := m.ReplaySession(data)
	if rerr != nil {
		return nil, nil, rerr
	}
	return s, &restored{Replayed: true, Reason: err.Error(), Messages: messagesOut(s.Messages()), PostHistory: s.PostHistory()}, nil
}
