package host

import (
	"context"
	"encoding/json"
	"fmt"
)

// call calls an export and wraps a trap: after a trap the instance's state
// is unknown, so the caller must drop it.
func (i *Instance) call(ctx context.Context, name string, args ...uint64) (uint64, error) {
	f := i.mod.ExportedFunction(name)
	if f == nil {
		return 0, fmt.Errorf("the module has no export %s", name)
	}
	res, err := f.Call(withState(ctx, i.st), args...)
	if err != nil {
		return 0, fmt.Errorf("%s trapped (the instance is unusable): %w", name, err)
	}
	if len(res) == 0 {
		return 0, nil
	}
	return res[0], nil
}

// put copies data into the module's input buffer (wick_buf).
func (i *Instance) put(ctx context.Context, data []byte) error {
	p, err := i.call(ctx, "wick_buf", uint64(len(data)))
	if err != nil {
		return err
	}
	if !i.mod.Memory().Write(uint32(p), data) {
		return fmt.Errorf("wick_buf returned %#x, outside memory for %d bytes", p, len(data))
	}
	return nil
}

// packed reads the ptr<<32|len result of wick_output or wick_error.
func (i *Instance) packed(ctx context.Context, name string) ([]byte, error) {
	v, err := i.call(ctx, name)
	if err != nil {
		return nil, err
	}
	b, ok := i.mod.Memory().Read(uint32(v>>32), uint32(v))
	if !ok {
		return nil, fmt.Errorf("%s returned %#x, outside memory", name, v)
	}
	return append([]byte(nil), b...), nil
}

// run puts input, calls export with args and the input's length, and drives
// the call to its end: it completes the readbacks the module waits for, and
// hands each generated token to onToken (which returns false to cancel the
// turn). It returns the final output.
func (i *Instance) run(ctx context.Context, onToken func([]byte) bool, export string, input []byte, args ...uint64) ([]byte, error) {
	if err := i.put(ctx, input); err != nil {
		return nil, err
	}
	return i.drive(ctx, onToken, export, append(args, uint64(len(input)))...)
}

// drive calls export with args (no input) and drives the call to its end,
// as run does.
func (i *Instance) drive(ctx context.Context, onToken func([]byte) bool, export string, args ...uint64) ([]byte, error) {
	v, err := i.call(ctx, export, args...)
	if err != nil {
		return nil, err
	}
	for {
		switch st := int32(v); st {
		case statusDone:
			return i.packed(ctx, "wick_output")
		case statusError:
			msg, err := i.packed(ctx, "wick_error")
			if err != nil {
				return nil, err
			}
			return nil, &Error{Msg: string(msg)}
		case statusToken:
			next, args := "wick_resume", []uint64{0}
			if onToken != nil {
				out, err := i.packed(ctx, "wick_output")
				if err != nil {
					return nil, err
				}
				if !onToken(out) {
					next, args = "wick_cancel", nil
				}
			}
			v, err = i.call(ctx, next, args...)
		case statusProgress:
			next, args := "wick_resume", []uint64{0}
			if i.onProgress != nil {
				out, err := i.packed(ctx, "wick_output")
				if err != nil {
					return nil, err
				}
				cancel, err := i.onProgress(out)
				if err != nil {
					return nil, fmt.Errorf("%s: progress: %w", export, err)
				}
				if cancel {
					next, args = "wick_cancel", nil
				}
			}
			v, err = i.call(ctx, next, args...)
		case statusWait:
			if err := i.deliver(ctx); err != nil {
				return nil, err
			}
			// This host's device reports every failure as it happens:
			// there is no asynchronous status to hand over.
			v, err = i.call(ctx, "wick_resume", 0)
		default:
			return nil, fmt.Errorf("%s: unknown status %d", export, st)
		}
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// deliver waits for the GPU and hands the module every readback it asked for.
func (i *Instance) deliver(ctx context.Context) error {
	st := i.st
	if st.dev != nil {
		if err := st.dev.Poll(true); err != nil {
			return fmt.Errorf("wasm host: poll: %w", err)
		}
	}
	done := st.done
	st.done = nil
	for _, d := range done {
		data, failed := d.data, uint64(0)
		if d.err != nil {
			data, failed = []byte(d.err.Error()), 1
		}
		if err := i.put(ctx, data); err != nil {
			return err
		}
		v, err := i.call(ctx, "wick_mapped", uint64(d.req), uint64(len(data)), failed)
		if err != nil {
			return err
		}
		if int32(v) != statusDone {
			msg, _ := i.packed(ctx, "wick_error")
			return fmt.Errorf("wasm host: deliver readback %d: %s", d.req, msg)
		}
	}
	return nil
}

// Session is one conversation inside the module.
type Session struct {
	i  *Instance
	id int32
}

// NewSession starts a conversation with an optional system prompt.
func (i *Instance) NewSession(ctx context.Context, system string) (*Session, error) {
	out, err := i.run(ctx, nil, "wick_session", []byte(system))
	if err != nil {
		return nil, fmt.Errorf("wasm session: %w", err)
	}
	var r struct {
		Session int32 `json:"session"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("wasm session: result: %w", err)
	}
	return &Session{i: i, id: r.Session}, nil
}

// Close frees the conversation's KV cache.
func (s *Session) Close(ctx context.Context) error {
	v, err := s.i.call(ctx, "wick_close", uint64(uint32(s.id)))
	if err == nil && int32(v) != statusDone {
		msg, _ := s.i.packed(ctx, "wick_error")
		err = &Error{Msg: string(msg)}
	}
	return err
}

// Turn is one reply's request: the user message (Send) or raw token ids
// (Complete), and how to generate.
type Turn struct {
	Text        string  `json:"text,omitempty"`
	IDs         []int32 `json:"ids,omitempty"`
	MaxTokens   int     `json:"max_tokens"`
	Temperature float32 `json:"temperature,omitempty"`
	TopP        float32 `json:"top_p,omitempty"`
	TopK        int     `json:"top_k,omitempty"`
	RepPenalty  float32 `json:"rep_penalty,omitempty"`
	Seed        uint64  `json:"seed,omitempty"`
	// OnProgress, when set, is called as the turn's prompt is read, with
	// its tokens read so far and in all (engine.GenParams.OnPrefill).
	OnProgress func(done, total int) `json:"-"`
	Progress   bool                  `json:"progress,omitempty"` // set from OnProgress
}

// Reply is what a turn produced.
type Reply struct {
	Tokens []int32 `json:"tokens"`
	Text   string  `json:"text"`
	Finish string  `json:"finish"`
	Prompt int     `json:"prompt_tokens"`
	Cached int     `json:"cached_tokens"`
	// Content and ReplyTokens are the whole reply after the turn: for
	// Continue, the reply continued (Text and Tokens are what it added).
	Content     string  `json:"content"`
	ReplyTokens []int32 `json:"reply_tokens"`
}

// Token is one streamed token.
type Token struct {
	ID   int32  `json:"token"`
	Text string `json:"text"`
}

// Send adds a user message (t.Text) and generates the reply, streaming each
// token to onToken (may be nil; returning false cancels the turn).
func (s *Session) Send(ctx context.Context, t Turn, onToken func(Token) bool) (*Reply, error) {
	return s.turn(ctx, "wick_send", t, onToken)
}

// Complete continues the conversation with raw token ids (t.IDs), no chat
// template, and generates after them.
func (s *Session) Complete(ctx context.Context, t Turn, onToken func(Token) bool) (*Reply, error) {
	return s.turn(ctx, "wick_complete", t, onToken)
}

// Regenerate drops the last reply and generates a new one for the same
// user message (t's text is not used).
func (s *Session) Regenerate(ctx context.Context, t Turn, onToken func(Token) bool) (*Reply, error) {
	t.Text = ""
	return s.turn(ctx, "wick_regenerate", t, onToken)
}

// Continue extends the last reply (t's text is not used): the model goes
// on writing it, in the same message.
func (s *Session) Continue(ctx context.Context, t Turn, onToken func(Token) bool) (*Reply, error) {
	t.Text = ""
	return s.turn(ctx, "wick_continue", t, onToken)
}

// EditLast replaces the last user message by t.Text, dropping any reply to
// it, and generates a new reply.
func (s *Session) EditLast(ctx context.Context, t Turn, onToken func(Token) bool) (*Reply, error) {
	return s.turn(ctx, "wick_edit_last", t, onToken)
}

// Message is a conversation message as the module takes and gives it.
type Message struct {
	Role    string  `json:"role"` // system, user or assistant
	Content string  `json:"content"`
	Tokens  []int32 `json:"tokens,omitempty"` // an assistant reply's tokens, as Reply.Tokens
}

// SetHistory replaces the conversation by msgs without generating; the
// module keeps the KV of the leading messages it already holds.
func (s *Session) SetHistory(ctx context.Context, msgs []Message) error {
	in, err := json.Marshal(map[string][]Message{"messages": msgs})
	if err != nil {
		return err
	}
	if _, err := s.i.run(ctx, nil, "wick_set_history", in, uint64(uint32(s.id))); err != nil {
		return fmt.Errorf("wasm set history: %w", err)
	}
	return nil
}

// Save returns the conversation with its KV, for Instance.Restore (in this
// instance or another of the same model).
func (s *Session) Save(ctx context.Context) ([]byte, error) {
	out, err := s.i.drive(ctx, nil, "wick_save", uint64(uint32(s.id)))
	if err != nil {
		return nil, fmt.Errorf("wasm save: %w", err)
	}
	return out, nil
}

// Restored is what the module reports about a restored conversation.
type Restored struct {
	KVTokens int       `json:"kv_tokens"` // tokens whose KV came back: the next turn does not prefill them
	Replayed bool      `json:"replayed"`  // the KV was another model's or mode's: only the messages came back
	Reason   string    `json:"reason"`    // why the KV was refused, when Replayed
	Messages []Message `json:"messages"`
}

// Restore continues a conversation that Session.Save returned, as a new
// session.
func (i *Instance) Restore(ctx context.Context, data []byte) (*Session, *Restored, error) {
	out, err := i.run(ctx, nil, "wick_restore", data)
	if err != nil {
		return nil, nil, fmt.Errorf("wasm restore: %w", err)
	}
	var r struct {
		Session int32 `json:"session"`
		Restored
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, nil, fmt.Errorf("wasm restore: result: %w", err)
	}
	return &Session{i: i, id: r.Session}, &r.Restored, nil
}

func (s *Session) turn(ctx context.Context, export string, t Turn, onToken func(Token) bool) (*Reply, error) {
	t.Progress = t.OnProgress != nil
	if t.OnProgress != nil {
		s.i.onProgress = func(out []byte) (bool, error) {
			var p struct {
				Done  int `json:"prefill_done"`
				Total int `json:"prefill_total"`
			}
			if err := json.Unmarshal(out, &p); err != nil {
				return false, err
			}
			t.OnProgress(p.Done, p.Total)
			return false, nil
		}
	}
	defer func() { s.i.onProgress = nil }()
	in, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var cb func([]byte) bool
	if onToken != nil {
		cb = func(b []byte) bool {
			var tok Token
			if json.Unmarshal(b, &tok) != nil {
				return true
			}
			return onToken(tok)
		}
	}
	out, err := s.i.run(ctx, cb, export, in, uint64(uint32(s.id)))
	if err != nil {
		return nil, err
	}
	var r Reply
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("%s: result: %w", export, err)
	}
	return &r, nil
}
