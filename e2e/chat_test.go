package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
)

// The page's default character (web/store.js); its greeting is shown but,
// as the module's ABI has no way to add it to a session, not part of the
// model's conversation, so the native reference leaves it out too.
var card = chat.Card{Name: "Maren", Persona: "A baker who climbs the lighthouse every evening to watch the boats come in."}

// maxTokens keeps replies short: SwiftShader is slow.
const maxTokens = 10

// nativeReplies returns the token ids the native engine generates, greedy,
// for the user messages of one conversation with card, turn by turn.
func nativeReplies(t *testing.T, msgs ...string) [][]int32 {
	t.Helper()
	m, err := engine.Load(modelDir, engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatalf("native engine: %v", err)
	}
	defer m.Close()
	s, err := m.NewSession(card.SystemPrompt())
	if err != nil {
		t.Fatalf("native session: %v", err)
	}
	defer s.Close()
	var out [][]int32
	for _, msg := range msgs {
		r, err := s.Send(context.Background(), msg, engine.GenParams{MaxTokens: maxTokens}, nil)
		if err != nil {
			t.Fatalf("native send %q: %v", msg, err)
		}
		out = append(out, r.Tokens)
	}
	return out
}

// pageReply is what the page's hooks (window.wick) say about the last turn.
type pageReply struct {
	Streamed []int32 `json:"streamed"`
	Reply    struct {
		Tokens []int32 `json:"tokens"`
		Text   string  `json:"text"`
		Finish string  `json:"finish"`
		Cached int     `json:"cached_tokens"`
	} `json:"reply"`
	Stats    turnStats `json:"stats"`
	LastText string    `json:"lastText"`
}

// send types msg into the page greedily and waits for the whole reply.
func send(t *testing.T, b *browser, msg string) pageReply {
	t.Helper()
	js, _ := json.Marshal(msg)
	b.do(t, 10*time.Second, "send a message", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		window.wick.lastReply = null;
		document.getElementById('temperature').value = 0;
		document.getElementById('max-tokens').value = %d;
		document.getElementById('input').value = %s;
		document.getElementById('composer').requestSubmit();
	})()`, maxTokens, js)))
	return waitReply(t, b)
}

// waitReply waits for the turn in flight to end and returns what the page
// says about it.
func waitReply(t *testing.T, b *browser) pageReply {
	t.Helper()
	b.do(t, 150*time.Second, "wait for the reply",
		chromedp.Poll[chromedp.Void](`window.wick.lastReply !== null || (document.getElementById('error').textContent !== '' && !document.getElementById('error').hidden)`,
			chromedp.WithPollingTimeout(150*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	raw := eval[string](t, b, `JSON.stringify({streamed: window.wick.streamed, reply: window.wick.lastReply, stats: window.wick.lastStats,
		lastText: [...document.querySelectorAll('#messages .msg.assistant .text')].pop().textContent})`)
	var r pageReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("page reply %s: %v", raw, err)
	}
	if r.Reply.Tokens == nil && r.Reply.Finish == "" {
		t.Fatalf("no reply: %s\nconsole:\n%s", b.pageStatus(), b.logs)
	}
	return r
}

// TestChat opens the page on WebGPU, waits for the model, chats, and
// checks the streamed greedy reply token for token against the native
// engine; then reloads the page and checks that nothing is downloaded
// again and that the chat, restored from storage, goes on exactly as an
// uninterrupted conversation does.
func TestChat(t *testing.T) {
	b := newBrowser(t, true)
	s := startSite(t, "")
	msgs := []string{"Hello! Who are you?", "What do you bake?"}
	want := nativeReplies(t, msgs...)

	start := time.Now()
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(s.URL+"/"))
	b.waitState(t, "ready", 120*time.Second)
	t.Logf("page ready after %v: %s", time.Since(start).Round(time.Millisecond), b.pageStatus())
	if got := s.shards.Load(); got == 0 {
		t.Fatalf("the first load made no shard requests")
	}
	backend := eval[string](t, b, `window.wick.loaded.backend`)
	if !strings.HasPrefix(backend, "webgpu") {
		t.Fatalf("the page loaded the model on %q, want webgpu", backend)
	}

	r := send(t, b, msgs[0])
	if !slices.Equal(r.Streamed, want[0]) || !slices.Equal(r.Reply.Tokens, want[0]) {
		t.Fatalf("turn 1: streamed %v (reply %v), the native engine generates %v", r.Streamed, r.Reply.Tokens, want[0])
	}
	if r.LastText != r.Reply.Text {
		t.Errorf("the page shows %q, the reply's text is %q", r.LastText, r.Reply.Text)
	}
	report(t, "webgpu", r)

	shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil || !isPNG(shot) {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s", writeArtifact(t, "chat.png", shot))

	// Reload: the model comes from the Cache API, the chat from storage.
	before := s.shards.Load()
	b.do(t, 30*time.Second, "reload", chromedp.Reload())
	b.waitState(t, "ready", 120*time.Second)
	if got := s.shards.Load() - before; got != 0 {
		t.Errorf("the second load made %d shard requests, want 0", got)
	}
	shown := eval[int](t, b, `document.querySelectorAll('#messages .msg.user').length`)
	if shown != 1 {
		t.Fatalf("after the reload the chat shows %d user messages, want 1", shown)
	}
	r = send(t, b, msgs[1])
	if !slices.Equal(r.Streamed, want[1]) {
		t.Fatalf("turn 2 after a reload: streamed %v, the native engine generates %v", r.Streamed, want[1])
	}

	// Regenerate the last reply: greedy, it must come back the same, and
	// the chat must still hold two turns.
	b.do(t, 10*time.Second, "regenerate", chromedp.Evaluate[chromedp.Void](`window.wick.lastReply = null; document.getElementById('regen').click()`))
	r = waitReply(t, b)
	if !slices.Equal(r.Streamed, want[1]) {
		t.Fatalf("regenerated turn 2: streamed %v, the native engine generates %v", r.Streamed, want[1])
	}
	if n := eval[int](t, b, `document.querySelectorAll('#messages .msg.user').length`); n != 2 {
		t.Fatalf("after regenerate the chat shows %d user messages, want 2", n)
	}
}

// turnStats is the page's measurement of one turn (web/worker.js).
type turnStats struct {
	Tokens     int     `json:"tokens"`
	Ms         float64 `json:"ms"`
	FirstMs    float64 `json:"firstMs"`
	DecodeRate float64 `json:"decodeTokensPerSec"`
	Prefill    traffic `json:"prefill"`
	Decode     traffic `json:"decode"`
}

// traffic counts crossings of the boundary.
type traffic struct {
	Imports     float64 `json:"imports"`     // wasm-to-JS calls (wick_gpu imports)
	ExportCalls float64 `json:"exportCalls"` // JS-to-wasm calls
	GPUCalls    float64 `json:"gpuCalls"`    // WebGPU API calls
	Runs        float64 `json:"runs"`        // command lists replayed
	RunMs       float64 `json:"runMs"`       // time spent decoding and encoding them
	Commands    float64 `json:"commands"`
}

// report logs the boundary traffic per decoded token and writes it as an
// artifact (bench/BROWSER.md records the numbers).
func report(t *testing.T, name string, r pageReply) {
	t.Helper()
	st := r.Stats
	t.Logf("%s: %d tokens in %.0f ms, first after %.0f ms (prefill: %.0f WebGPU calls, %.0f runs, %.1f ms encoding), %.2f tokens/s decoding",
		name, st.Tokens, st.Ms, st.FirstMs, st.Prefill.GPUCalls, st.Prefill.Runs, st.Prefill.RunMs, st.DecodeRate)
	if n := float64(st.Tokens - 1); n > 0 {
		d := st.Decode
		t.Logf("%s: per decoded token: %.1f wasm-to-JS calls, %.1f JS-to-wasm calls, %.1f WebGPU calls, %.2f command lists, %.1f commands each, %.3f ms to encode one list",
			name, d.Imports/n, d.ExportCalls/n, d.GPUCalls/n, d.Runs/n, d.Commands/max(d.Runs, 1), d.RunMs/max(d.Runs, 1))
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	writeArtifact(t, "stats-"+name+".json", append(data, '\n'))
}

// TestCorruptShard serves one shard with a flipped byte: the page must
// refuse it with a visible error and store nothing of it.
func TestCorruptShard(t *testing.T) {
	f, err := format.Open(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	shards := f.Manifest().GetShards()
	bad := shards[len(shards)/2].GetFile()
	b := newBrowser(t, true)
	s := startSite(t, bad)
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(s.URL+"/"))
	b.waitState(t, "error", 120*time.Second)
	msg := eval[string](t, b, `document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`)
	if !strings.Contains(msg, bad) || !strings.Contains(msg, "corrupted") {
		t.Fatalf("the page's error is %q, want one naming %s as corrupted", msg, bad)
	}
	stored := eval[[]string](t, b, `import('/models.js').then((m) => m.storedFiles('cai-tiny'))`)
	kept := 0
	for _, name := range stored {
		if name == bad || name == ".complete" {
			t.Fatalf("after the refused download the cache holds %q (all: %v)", name, stored)
		}
		if strings.HasPrefix(name, "shard-") {
			kept++
		}
	}

	// Once the server is mended, Download resumes at the refused shard:
	// the shards already stored are not fetched again.
	s.corrupt.Store("")
	before := s.shards.Load()
	b.do(t, 10*time.Second, "download again", chromedp.Evaluate[chromedp.Void](`window.wick.state = 'switching'; document.getElementById('download-btn').click()`))
	b.waitState(t, "ready", 120*time.Second)
	if got, want := s.shards.Load()-before, int64(len(shards)-kept); got != want {
		t.Fatalf("the resumed download made %d shard requests, want %d (%d of %d were stored)", got, want, kept, len(shards))
	}
}

// TestNoWebGPU runs Chromium without WebGPU: the page must say so and offer
// the CPU backend, which then chats with the same replies as the native
// engine.
func TestNoWebGPU(t *testing.T) {
	b := newBrowser(t, false)
	s := startSite(t, "")
	want := nativeReplies(t, "Hi there.")
	wantEdited := nativeReplies(t, "Good evening.")
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(s.URL+"/"))
	b.waitState(t, "no-webgpu", 60*time.Second)
	text := eval[string](t, b, `document.getElementById('notice-text').textContent`)
	if !strings.Contains(text, "WebGPU") || !strings.Contains(text, "CPU") {
		t.Fatalf("the page's notice is %q, want it to say WebGPU is missing and offer the CPU", text)
	}
	b.do(t, 10*time.Second, "choose the CPU", chromedp.Evaluate[chromedp.Void](`window.wick.state = 'switching'; document.getElementById('use-cpu').click()`))
	b.waitState(t, "ready", 120*time.Second)
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "cpu") {
		t.Fatalf("backend %q, want cpu", got)
	}
	r := send(t, b, "Hi there.")
	if !slices.Equal(r.Streamed, want[0]) {
		t.Fatalf("cpu in the browser streamed %v, the native engine generates %v", r.Streamed, want[0])
	}
	report(t, "cpu", r)

	// Edit the last message: it and its reply are replaced, so the chat is
	// the edited message alone.
	b.do(t, 10*time.Second, "edit", chromedp.Evaluate[chromedp.Void](`document.getElementById('edit').click()`))
	if got := eval[string](t, b, `document.getElementById('input').value`); got != "Hi there." {
		t.Fatalf("edit put %q into the message box, want the last message", got)
	}
	r = send(t, b, "Good evening.")
	if !slices.Equal(r.Streamed, wantEdited[0]) {
		t.Fatalf("after an edit the page streamed %v, the native engine generates %v", r.Streamed, wantEdited[0])
	}
	if n := eval[int](t, b, `document.querySelectorAll('#messages .msg.user').length`); n != 1 {
		t.Fatalf("after the edit the chat shows %d user messages, want 1", n)
	}
}
