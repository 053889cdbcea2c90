package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/sample"
)

// This file holds the OpenAI wire format: request parsing and checking,
// response and error bodies. api.go runs the requests.

// chatRequest is the body of POST /v1/chat/completions. Fields wick does not
// use (logprobs, tools, ...) are ignored, as OpenAI-compatible servers
// commonly do; fields it cannot honour are refused by check.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"` // OpenAI's newer name for max_tokens
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	N                   *int            `json:"n"`
	Stop                json.RawMessage `json:"stop"`
	User                string          `json:"user"` // the conversation key when no X-Conversation-Id is sent (routing.go)
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"` // a string, or an array of {type: "text", text}
}

// decodeChatRequest parses a request body, naming the field of a type error.
func decodeChatRequest(body []byte) (*chatRequest, *apiError) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalid(te.Field, "", "%s: want a JSON %s, got %s", te.Field, te.Type.Kind(), te.Value)
		}
		return nil, invalid("", "", "the body is not valid JSON: %v", err)
	}
	return &req, nil
}

// conversation returns the request's messages before the last, and the last
// one's text, which must be the user's: wick generates a reply to a user
// message.
func (req *chatRequest) conversation() (history []chat.Message, last string, aerr *apiError) {
	if len(req.Messages) == 0 {
		return nil, "", invalid("messages", "", "messages is empty: send at least one user message")
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, m := range req.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		switch m.Role {
		case "system", "developer": // "developer" is OpenAI's newer name for system
			msgs[i].Role = chat.System
		case "user":
			msgs[i].Role = chat.User
		case "assistant":
			msgs[i].Role = chat.Assistant
		case "":
			return nil, "", invalid(param+".role", "", "%s has no role", param)
		default:
			return nil, "", invalid(param+".role", "", "%s.role is %q: wick accepts system, user and assistant", param, m.Role)
		}
		text, err := messageText(m.Content, msgs[i].Role == chat.Assistant)
		if err != nil {
			return nil, "", invalid(param+".content", "", "%s.content: %v", param, err)
		}
		msgs[i].Content = text
	}
	n := len(msgs) - 1
	if msgs[n].Role != chat.User {
		return nil, "", invalid(fmt.Sprintf("messages[%d].role", n), "", "the last message is from %s: wick replies to a user message", req.Messages[n].Role)
	}
	return msgs[:n], msgs[n].Content, nil
}

// messageText returns a message's text: a string, or the text parts of an
// array joined by newlines. Null is allowed for an assistant message (its
// tool calls carry the content in OpenAI's format).
func messageText(raw json.RawMessage, nullOK bool) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		if nullOK {
			return "", nil
		}
		return "", errors.New("missing")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("want a string or an array of text parts")
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("part %d has type %q: wick accepts only text", i, p.Type)
		}
		texts[i] = p.Text
	}
	return strings.Join(texts, "\n"), nil
}

// genParams turns the sampling fields into the engine's parameters, with
// the defaults of wick's chat page and terminal (DefaultTemperature,
// DefaultTopP) and a random seed when none is given.
// The sampling defaults of every wick front end (engine/sample's): the
// chat page, wick chat and wick gen use the same.
const (
	DefaultTemperature = sample.DefaultTemperature
	DefaultTopP        = sample.DefaultTopP
)

func (req *chatRequest) genParams() (engine.GenParams, *apiError) {
	var p engine.GenParams
	if req.N != nil && *req.N != 1 {
		return p, invalid("n", "", "n is %d: wick generates one choice per request", *req.N)
	}
	if len(req.Stop) > 0 {
		switch s := string(bytes.TrimSpace(req.Stop)); s {
		case "null", `""`, "[]":
		default:
			return p, invalid("stop", "", "stop sequences are not supported; generation ends at the model's stop tokens")
		}
	}
	max := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		max = req.MaxCompletionTokens
	}
	if max != nil {
		if *max < 1 {
			return p, invalid("max_tokens", "", "max_tokens is %d: want 1 or more", *max)
		}
		p.MaxTokens = *max
	}
	temp, topP := DefaultTemperature, DefaultTopP
	if req.Temperature != nil {
		temp = *req.Temperature
	}
	if req.TopP != nil {
		topP = *req.TopP
	}
	if math.IsNaN(temp) || temp < 0 || temp > 2 {
		return p, invalid("temperature", "", "temperature is %v: want 0 (greedy) to 2", temp)
	}
	if math.IsNaN(topP) || topP <= 0 || topP > 1 {
		return p, invalid("top_p", "", "top_p is %v: want a value above 0, at most 1", topP)
	}
	p.Sample = sample.Params{Temperature: float32(temp), TopP: float32(topP), Seed: rand.Uint64()}
	if req.Seed != nil {
		p.Sample.Seed = uint64(*req.Seed)
	}
	return p, nil
}

// apiError is an error response: a status and OpenAI's error body.
type apiError struct {
	status int
	body   apiErr
}

// apiErr is OpenAI's error object; param and code are null when empty.
type apiErr struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.body.Message }

// invalid is a 400 invalid_request_error about param (may be empty), with
// an OpenAI error code (may be empty).
func invalid(param, code, format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, "invalid_request_error", param, code, fmt.Sprintf(format, args...))
}

func newAPIError(status int, typ, param, code, msg string) *apiError {
	e := &apiError{status: status, body: apiErr{Message: msg, Type: typ}}
	if param != "" {
		e.body.Param = &param
	}
	if code != "" {
		e.body.Code = &code
	}
	return e
}

func (e *apiError) write(w http.ResponseWriter) { writeError(w, e.status, e.body) }

// writeError writes {"error": body} with status.
func writeError(w http.ResponseWriter, status int, body apiErr) {
	writeJSON(w, status, struct {
		Error apiErr `json:"error"`
	}{body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// Responses.

type chatCompletion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"` // "chat.completion" or "chat.completion.chunk"
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

type choice struct {
	Index        int        `json:"index"`
	Message      *chatReply `json:"message,omitempty"` // whole replies
	Delta        *chatReply `json:"delta,omitempty"`   // stream chunks
	FinishReason *string    `json:"finish_reason"`     // null until the last chunk
	Logprobs     *struct{}  `json:"logprobs"`          // always null
}

type chatReply struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type usage struct {
	PromptTokens        int           `json:"prompt_tokens"` // the whole conversation, cached tokens included
	CompletionTokens    int           `json:"completion_tokens"`
	TotalTokens         int           `json:"total_tokens"`
	PromptTokensDetails promptDetails `json:"prompt_tokens_details"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func replyUsage(r *engine.Reply) *usage {
	prompt := r.PromptTokens + r.CachedTokens
	return &usage{
		PromptTokens: prompt, CompletionTokens: len(r.Tokens), TotalTokens: prompt + len(r.Tokens),
		PromptTokensDetails: promptDetails{CachedTokens: r.CachedTokens},
	}
}

// finishReason maps the engine's reasons onto OpenAI's.
func finishReason(f engine.Finish) *string {
	s := "stop"
	if f == engine.FinishLength {
		s = "length"
	}
	return &s
}

type modelObject struct {
	ID            string `json:"id"`
	Object        string `json:"object"` // "model"
	Created       int64  `json:"created"`
	OwnedBy       string `json:"owned_by"`
	ContextLength int    `json:"context_length"` // positions a conversation may use
}
