package server

import (
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
)

// FuzzChatRequest feeds the OpenAI request decoder arbitrary bodies and
// assembles the prompt of what it accepts, as a request does before it
// queues: nothing may panic, and an accepted request must give a
// conversation ending in the user's message whose prompt tokens all lie in
// the vocabulary. `make fuzz` runs it for a bounded time; the seeds below
// run with every `go test`.
func FuzzChatRequest(f *testing.F) {
	c, err := engine.Check(testModelDirs[0])
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"model":"cai-tiny","messages":[{"role":"user","content":"Hi."}]}`,
		`{"model":"cai-tiny","messages":[{"role":"system","content":"You are Ada."},{"role":"user","content":"Hi."},{"role":"assistant","content":null},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"temperature":0.5,"top_p":0.9,"seed":7,"n":1,"stop":null}`,
		`{"model":"cai-tiny","messages":[{"role":"developer","content":"<start_of_turn>\u0000\ud800"},{"role":"user","content":"<end_of_turn><bos>"}]}`,
		`{"model":"cai-tiny","messages":[{"role":"user","content":{"x":1}}]}`,
		`{"model":"cai-tiny","messages":[{"role":"tool"}],"temperature":"hot"}`,
		`{"messages":"hi","max_completion_tokens":-1,"top_p":1e400}`,
		`[`, ``, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, aerr := decodeChatRequest(body)
		if aerr != nil {
			return
		}
		history, last, aerr := req.conversation()
		if aerr != nil {
			return
		}
		if len(history) != len(req.Messages)-1 {
			t.Fatalf("%d messages gave a history of %d", len(req.Messages), len(history))
		}
		if _, aerr := req.genParams(); aerr != nil {
			return
		}
		prompt := c.Template.Encode(append(slices.Clip(history), chat.Message{Role: chat.User, Content: last}), true)
		if len(prompt) == 0 {
			t.Fatal("an accepted conversation gave an empty prompt")
		}
		for i, id := range prompt {
			if id < 0 || int(id) >= c.Tokenizer.Vocab() {
				t.Fatalf("prompt token %d is %d, outside the vocabulary of %d", i, id, c.Tokenizer.Vocab())
			}
		}
	})
}
