package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
)

func newAPIServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Models == nil {
		cfg.Models = testModelDirs
	}
	cfg.API = true
	cfg.Engine.Backend = "cpu"
	return newTestServer(t, cfg)
}

// post sends body (a value to marshal, or raw bytes) to path.
func post(t *testing.T, hs *httptest.Server, path string, body any) (*http.Response, []byte) {
	t.Helper()
	data, ok := body.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := hs.Client().Post(hs.URL+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

type msg = map[string]any

func request(model string, stream bool, maxTokens int, msgs ...msg) map[string]any {
	return map[string]any{"model": model, "messages": msgs, "stream": stream, "temperature": 0, "max_tokens": maxTokens,
		"stream_options": map[string]any{"include_usage": stream}}
}

// result is what a client makes of a reply, streamed or not.
type result struct {
	text   string
	finish string
	usage  usage
}

// complete sends a chat completion and reads the reply, checking the shape
// of every streamed event on the way.
func complete(t *testing.T, hs *httptest.Server, req map[string]any) result {
	t.Helper()
	resp, body := post(t, hs, "/v1/chat/completions", req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if req["stream"] != true {
		var c struct {
			chatCompletion
			Choices []struct {
				Message      chatReply `json:"message"`
				FinishReason string    `json:"finish_reason"`
			} `json:"choices"`
			Usage usage `json:"usage"`
		}
		if err := json.Unmarshal(body, &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "chat.completion" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Model != req["model"] || c.Created == 0 || len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content == nil {
			t.Fatalf("reply %s", body)
		}
		return result{*c.Choices[0].Message.Content, c.Choices[0].FinishReason, c.Usage}
	}
	return readStream(t, resp, body)
}

func readStream(t *testing.T, resp *http.Response, body []byte) result {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := strings.Split(string(body), "\n\n")
	if events[len(events)-1] != "" || events[len(events)-2] != "data: [DONE]" {
		t.Fatalf("stream does not end with data: [DONE]\\n\\n: %q", body)
	}
	events = events[:len(events)-2]
	var r result
	id := ""
	for i, e := range events {
		data, ok := strings.CutPrefix(e, "data: ")
		if !ok {
			t.Fatalf("event %d is not a data line: %q", i, e)
		}
		var c struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Choices []struct {
				Delta        chatReply `json:"delta"`
				FinishReason *string   `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %d: %v: %s", i, err, data)
		}
		if id == "" {
			id = c.ID
		}
		if c.ID != id || c.Object != "chat.completion.chunk" {
			t.Fatalf("event %d: id %q object %q", i, c.ID, c.Object)
		}
		if c.Usage != nil {
			if i != len(events)-1 || len(c.Choices) != 0 {
				t.Fatalf("usage chunk %d of %d has %d choices", i, len(events), len(c.Choices))
			}
			r.usage = *c.Usage
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("event %d: %d choices", i, len(c.Choices))
		}
		ch := c.Choices[0]
		switch {
		case i == 0:
			if ch.Delta.Role != "assistant" {
				t.Fatalf("first event has no role: %s", data)
			}
		case ch.FinishReason != nil:
			if r.finish != "" {
				t.Fatal("two events with a finish_reason")
			}
			r.finish = *ch.FinishReason
		case r.finish != "":
			t.Fatalf("content after the finish: %s", data)
		}
		if ch.Delta.Content != nil {
			r.text += *ch.Delta.Content
		}
	}
	if r.finish == "" {
		t.Fatal("no event with a finish_reason")
	}
	return r
}

// TestChatCompletion checks streamed and whole replies against the engine
// run directly on the same conversation, and the usage reported.
func TestChatCompletion(t *testing.T) {
	_, hs := newAPIServer(t, Config{})
	conversation := []msg{
		{"role": "system", "content": "You are Ada. You like maps."},
		{"role": "user", "content": "Hello, who are you?"},
		{"role": "assistant", "content": "I am Ada."},
		{"role": "user", "content": []msg{{"type": "text", "text": "Tell me"}, {"type": "text", "text": "about the sea."}}},
	}
	history := []chat.Message{
		{Role: chat.System, Content: "You are Ada. You like maps."},
		{Role: chat.User, Content: "Hello, who are you?"},
		{Role: chat.Assistant, Content: "I am Ada."},
	}
	for i, name := range []string{"cai-tiny", "plain-tiny"} {
		t.Run(name, func(t *testing.T) {
			m, err := engine.Load(testModelDirs[i], engine.Options{Backend: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession("")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.SetHistory(history); err != nil {
				t.Fatal(err)
			}
			want, err := s.Send(context.Background(), "Tell me\nabout the sea.", engine.GenParams{MaxTokens: 12}, nil)
			if err != nil {
				t.Fatal(err)
			}
			whole := complete(t, hs, request(name, false, 12, conversation...))
			streamed := complete(t, hs, request(name, true, 12, conversation...))
			for _, got := range []result{whole, streamed} {
				if got.text != want.Text {
					t.Errorf("reply %q, the engine says %q", got.text, want.Text)
				}
				if got.finish != string(*finishReason(want.Finish)) {
					t.Errorf("finish %q, the engine says %q", got.finish, want.Finish)
				}
				u := got.usage
				if u.PromptTokens != want.PromptTokens+want.CachedTokens || u.CompletionTokens != len(want.Tokens) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
					t.Errorf("usage %+v; the engine prefilled %d tokens and generated %d", u, want.PromptTokens+want.CachedTokens, len(want.Tokens))
				}
			}
			// The second request repeats the first's conversation: with the
			// model's prefix cache on, its KV is reused and reported.
			if c := whole.usage.PromptTokensDetails.CachedTokens; c != 0 {
				t.Errorf("first request: %d cached tokens, want 0", c)
			}
			if c := streamed.usage.PromptTokensDetails.CachedTokens; (c > 0) != (m.Cache != nil) || c >= streamed.usage.PromptTokens {
				t.Errorf("repeated request: %d of %d prompt tokens cached (prefix cache on: %v)", c, streamed.usage.PromptTokens, m.Cache != nil)
			}
		})
	}
}

// TestConcurrentClients runs 8 clients on loopback, each sending a bounded
// number of requests, streamed or not, to two models at once, and checks
// every greedy reply against the same request served alone.
func TestConcurrentClients(t *testing.T) {
	const clients, perClient = 8, 4
	_, hs := newAPIServer(t, Config{})
	var reqs []map[string]any
	for i, prompt := range []string{"Hello there.", "Tell me about maps.", "What is the sea?", "Sing.", "Count to three.", "Who are you?"} {
		model := []string{"cai-tiny", "plain-tiny"}[i%2]
		msgs := []msg{{"role": "user", "content": prompt}}
		if i%3 == 0 {
			msgs = append([]msg{{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}}, msgs...)
		}
		reqs = append(reqs, request(model, i%2 == 0, 10+i, msgs...))
	}
	alone := make([]result, len(reqs))
	for i, r := range reqs {
		alone[i] = complete(t, hs, r)
	}
	var wg sync.WaitGroup
	errs := make(chan string, clients*perClient)
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for k := range perClient {
				i := (c + k*3) % len(reqs)
				r := reqs[i]
				r2 := make(map[string]any, len(r))
				for key, v := range r {
					r2[key] = v
				}
				r2["stream"] = (c+k)%2 == 0 // the same request either way
				r2["stream_options"] = map[string]any{"include_usage": r2["stream"]}
				got := complete(t, hs, r2)
				if got.text != alone[i].text || got.finish != alone[i].finish {
					errs <- fmt.Sprintf("client %d request %d (stream %v): %q (%s), alone %q (%s)", c, i, r2["stream"], got.text, got.finish, alone[i].text, alone[i].finish)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("%d clients x %d requests in %v", clients, perClient, time.Since(start))
}

// TestClientDisconnect checks that a client that goes away mid-stream stops
// its generation and frees the model for the next request.
func TestClientDisconnect(t *testing.T) {
	s, hs := newAPIServer(t, Config{Models: testModelDirs[:1]})
	finished := make(chan engine.Finish, 4)
	s.api.onFinish = func(_ string, f engine.Finish) { finished <- f }
	// Slow the generation down so that the disconnect lands mid-reply; the
	// server notices it when the next events cannot be written.
	s.api.onText = func(ctx context.Context) {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req := request("cai-tiny", true, 200, msg{"role": "user", "content": "Tell me a long story."})
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/v1/chat/completions", bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hs.Client().Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"role":"assistant"`) {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	select {
	case f := <-finished:
		if f != engine.FinishCancelled {
			t.Errorf("generation ended with %q, want cancelled", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the generation did not stop after the client left")
	}
	s.api.onText = nil
	if r := complete(t, hs, request("cai-tiny", false, 3, msg{"role": "user", "content": "Hi."})); r.finish == "" {
		t.Error("the next request got no reply")
	}
}

// TestQueueFull checks that requests beyond the queue's bound are refused
// with 429 while one generates and one waits.
func TestQueueFull(t *testing.T) {
	s, hs := newAPIServer(t, Config{Models: testModelDirs[:1], MaxQueue: 1})
	release := make(chan struct{})
	var once sync.Once
	s.api.onText = func(context.Context) { <-release }
	defer once.Do(func() { close(release) })
	req := request("cai-tiny", true, 2, msg{"role": "user", "content": "Hi."})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { post(t, hs, "/v1/chat/completions", req) })
	}
	am := s.api.models["cai-tiny"]
	for deadline := time.Now().Add(10 * time.Second); am.pending.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two requests did not queue")
		}
	}
	resp, body := post(t, hs, "/v1/chat/completions", req)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"type":"rate_limit_error"`) {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	if n := am.pending.Load(); n != 0 {
		t.Errorf("%d requests still counted after all finished", n)
	}
}

// TestAPIErrors checks that bad requests get 4xx JSON errors that say what
// is wrong and name the parameter.
func TestAPIErrors(t *testing.T) {
	_, hs := newAPIServer(t, Config{MaxBodyBytes: 4096, Engine: engine.Options{Context: 64}})
	user := msg{"role": "user", "content": "Hi."}
	withField := func(k string, v any) map[string]any {
		r := request("cai-tiny", false, 4, user)
		r[k] = v
		return r
	}
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		body       any
		wantStatus int
		wantParam  string
		wantCode   string
		wantMsg    string
	}{
		{"bad JSON", "", "", []byte(`{"model": "cai-tiny", "messages": [`), 400, "", "", "not valid JSON"},
		{"wrong type", "", "", []byte(`{"model": "cai-tiny", "messages": "hi"}`), 400, "messages", "", "want a JSON slice"},
		{"no model", "", "", map[string]any{"messages": []msg{user}}, 400, "model", "", "model is missing"},
		{"unknown model", "", "", request("gpt-4o", false, 4, user), 400, "model", "model_not_found", `no model "gpt-4o"`},
		{"empty messages", "", "", request("cai-tiny", false, 4), 400, "messages", "", "messages is empty"},
		{"bad role", "", "", request("cai-tiny", false, 4, msg{"role": "tool", "content": "x"}, user), 400, "messages[0].role", "", `"tool"`},
		{"no role", "", "", request("cai-tiny", false, 4, msg{"content": "x"}), 400, "messages[0].role", "", "no role"},
		{"last not from the user", "", "", request("cai-tiny", false, 4, user, msg{"role": "assistant", "content": "x"}), 400, "messages[1].role", "", "replies to a user message"},
		{"user content missing", "", "", request("cai-tiny", false, 4, msg{"role": "user"}), 400, "messages[0].content", "", "missing"},
		{"image part", "", "", request("cai-tiny", false, 4, msg{"role": "user", "content": []msg{{"type": "image_url"}}}), 400, "messages[0].content", "", "only text"},
		{"temperature", "", "", withField("temperature", 5), 400, "temperature", "", "0 (greedy) to 2"},
		{"top_p", "", "", withField("top_p", 0), 400, "top_p", "", "top_p"},
		{"max_tokens", "", "", withField("max_tokens", 0), 400, "max_tokens", "", "1 or more"},
		{"n", "", "", withField("n", 3), 400, "n", "", "one choice"},
		{"stop", "", "", withField("stop", []string{"\n"}), 400, "stop", "", "not supported"},
		{"too long for the context", "", "", request("cai-tiny", false, 4, msg{"role": "user", "content": strings.Repeat("A long message. ", 20)}), 400, "messages", "context_length_exceeded", "holds 64"},
		{"body too large", "", "", request("cai-tiny", false, 4, msg{"role": "user", "content": strings.Repeat("x", 5000)}), 413, "", "", "limit of 4096 bytes"},
		{"GET chat completions", "GET", "/v1/chat/completions", nil, 405, "", "", "use POST"},
		{"POST models", "POST", "/v1/models", nil, 405, "", "", "use GET"},
		{"unknown endpoint", "GET", "/v1/embeddings", nil, 404, "", "", "no endpoint"},
		{"unknown model by id", "GET", "/v1/models/gpt-4o", nil, 404, "model", "model_not_found", "gpt-4o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			var body []byte
			if tc.method == "" {
				resp, body = post(t, hs, "/v1/chat/completions", tc.body)
			} else {
				resp, body = do(t, hs, tc.method, tc.path, nil)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, tc.wantMsg) {
				t.Errorf("error %+v, want a message with %q", e.Error, tc.wantMsg)
			}
			if got := deref(e.Error.Param); got != tc.wantParam {
				t.Errorf("param %q, want %q", got, tc.wantParam)
			}
			if got := deref(e.Error.Code); got != tc.wantCode {
				t.Errorf("code %q, want %q", got, tc.wantCode)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestModels checks GET /v1/models, and that /v1/ says the API is off when
// it is.
func TestModels(t *testing.T) {
	_, hs := newAPIServer(t, Config{})
	resp, body := do(t, hs, "GET", "/v1/models", nil)
	var list struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v: %s", resp.StatusCode, err, body)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.ContextLength == 0 {
			t.Errorf("model %+v", m)
		}
	}
	if list.Object != "list" || !slices.Equal(ids, []string{"cai-tiny", "plain-tiny"}) {
		t.Errorf("list %s", body)
	}
	if resp, body := do(t, hs, "GET", "/v1/models/plain-tiny", nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"id":"plain-tiny"`) {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}

	_, off := newTestServer(t, Config{Models: testModelDirs[:1]})
	resp, body = post(t, off, "/v1/chat/completions", request("cai-tiny", false, 4, msg{"role": "user", "content": "Hi."}))
	if resp.StatusCode != 404 || !strings.Contains(string(body), "-api") {
		t.Errorf("API off: status %d: %s", resp.StatusCode, body)
	}
}

// TestSampledReplyRepeats checks that a seeded, non-greedy request gives
// the same reply twice: the seed reaches the sampler.
func TestSampledReplyRepeats(t *testing.T) {
	_, hs := newAPIServer(t, Config{Models: testModelDirs[:1]})
	req := request("cai-tiny", false, 16, msg{"role": "user", "content": "Say something."})
	req["temperature"], req["top_p"], req["seed"] = 1.0, 0.9, 42
	a, b := complete(t, hs, req), complete(t, hs, req)
	if a.text != b.text {
		t.Errorf("seeded replies differ: %q, %q", a.text, b.text)
	}
}
