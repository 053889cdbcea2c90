package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/internal/modeltest"
)

// The page's default character (web/store.js). The page gives the model
// its greeting as the character's first message (chat.Card.Messages), so
// the native reference does too.
var card = chat.Card{
	Name:     "Maren",
	Persona:  "A baker who climbs the lighthouse every evening to watch the boats come in.",
	Greeting: "You are late. The bread is still warm, sit down.",
}

// maxTokens keeps replies short: SwiftShader is slow.
const maxTokens = 10

// A step is one turn of a scripted conversation: op is send, regenerate
// or edit (of the last user message), text the user message.
type step struct{ op, text string }

// nativeReply is one turn as the native engine gives it.
type nativeReply struct {
	Tokens         []int32
	Prompt, Cached int
}

// nativeChat runs steps, greedy, in one native session (Backend "cpu")
// that starts from the card's messages, and returns each turn's reply.
func nativeChat(t testing.TB, steps ...step) []nativeReply {
	t.Helper()
	return nativeChatOn(t, modelDir, steps...)
}

// nativeChatOn is nativeChat with the model in dir.
func nativeChatOn(t testing.TB, dir string, steps ...step) []nativeReply {
	t.Helper()
	m, err := engine.Load(dir, engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatalf("native engine: %v", err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatalf("native session: %v", err)
	}
	defer s.Close()
	if err := s.SetHistory(card.Messages()); err != nil {
		t.Fatalf("native session: %v", err)
	}
	var out []nativeReply
	p := engine.GenParams{MaxTokens: maxTokens}
	for _, st := range steps {
		var r *engine.Reply
		switch st.op {
		case "send":
			r, err = s.Send(context.Background(), st.text, p, nil)
		case "regenerate":
			r, err = s.Regenerate(context.Background(), p, nil)
		case "edit":
			r, err = s.EditLast(context.Background(), st.text, p, nil)
		default:
			t.Fatalf("native: unknown step %q", st.op)
		}
		if err != nil {
			t.Fatalf("native %s %q: %v", st.op, st.text, err)
		}
		out = append(out, nativeReply{Tokens: r.Tokens, Prompt: r.PromptTokens, Cached: r.CachedTokens})
	}
	return out
}

// foreignSave returns a saved conversation of another model (plain-tiny)
// with the given user messages and replies, as its wick_save would write.
func foreignSave(t testing.TB, msgs []chat.Message) []byte {
	t.Helper()
	m, err := engine.Load("../testdata/plain-tiny", engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatalf("native engine: %v", err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatalf("native session: %v", err)
	}
	defer s.Close()
	if err := s.SetHistory(append(card.Messages(), msgs...)); err != nil {
		t.Fatalf("native session: %v", err)
	}
	data, err := s.MarshalBinary()
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	return data
}

// pageReply is what the page's hooks (window.wick) say about the last turn.
type pageReply struct {
	Streamed []int32 `json:"streamed"`
	Reply    struct {
		Tokens []int32 `json:"tokens"`
		Text   string  `json:"text"`
		Finish string  `json:"finish"`
		Prompt int     `json:"prompt_tokens"`
		Cached int     `json:"cached_tokens"`
		Save   struct {
			Bytes   int     `json:"bytes"`
			SaveMs  float64 `json:"saveMs"`  // wick_save
			WriteMs float64 `json:"writeMs"` // the atomic write into OPFS
			Error   string  `json:"error"`
		} `json:"save"`
	} `json:"reply"`
	Stats    turnStats `json:"stats"`
	LastText string    `json:"lastText"`
}

// send types msg into the page greedily and waits for the whole reply.
func send(t testing.TB, b *browser, msg string) pageReply { return sendN(t, b, msg, maxTokens) }

// sendN is send with a reply of at most n tokens.
func sendN(t testing.TB, b *browser, msg string, n int) pageReply {
	t.Helper()
	js, _ := json.Marshal(msg)
	b.do(t, 10*time.Second, "send a message", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		window.wick.lastReply = null;
		document.getElementById('temperature').value = 0;
		document.getElementById('max-tokens').value = %d;
		document.getElementById('input').value = %s;
		document.getElementById('composer').requestSubmit();
	})()`, n, js)))
	return waitReply(t, b)
}

// click clicks the button with id and waits for the turn it starts.
func click(t testing.TB, b *browser, id string) pageReply {
	t.Helper()
	b.do(t, 10*time.Second, "click "+id, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.wick.lastReply = null; document.getElementById(%q).click()`, id)))
	return waitReply(t, b)
}

// waitReply waits for the turn in flight to end and returns what the page
// says about it.
//
// It waits as long as the turn moves: a software GPU on a loaded machine
// reads a prompt slowly (SwiftShader read TestChat's first prompt, 192
// tokens, in 53 s at a load average of 10, about 140 ms a token, and the
// fixed 150 s this wait had ran out at load 24-28), so a deadline for the
// whole turn measured the machine's load rather than the page. It fails
// when neither a chunk of the prompt (the page's progress reports) nor a
// token has come for replyStall, or after replyLimit in all.
func waitReply(t testing.TB, b *browser) pageReply {
	t.Helper()
	const (
		replyStall = 120 * time.Second
		replyLimit = 480 * time.Second
	)
	done := `window.wick.lastReply !== null || (document.getElementById('error').textContent !== '' && !document.getElementById('error').hidden)`
	moved := `JSON.stringify([(window.wick.progress || []).length, (window.wick.streamed || []).length])`
	start, last, mark := time.Now(), time.Now(), ""
	for !eval[bool](t, b, done) {
		if m := eval[string](t, b, moved); m != mark {
			mark, last = m, time.Now()
		}
		if time.Since(last) > replyStall || time.Since(start) > replyLimit {
			t.Fatalf("wait for the reply: nothing came for %v (%v in all; prompt chunks and tokens %s)\npage status: %s\nconsole:\n%s",
				time.Since(last).Round(time.Second), time.Since(start).Round(time.Second), mark, b.pageStatus(), b.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	raw := eval[string](t, b, `JSON.stringify({streamed: window.wick.streamed, reply: window.wick.lastReply, stats: window.wick.lastStats,
		lastText: [...document.querySelectorAll('#messages .msg.assistant .text')].pop().textContent})`)
	var r pageReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("page reply %s: %v", raw, err)
	}
	if r.Reply.Tokens == nil && r.Reply.Finish == "" {
		t.Fatalf("no reply: %s\nconsole:\n%s", b.pageStatus(), b.logs)
	}
	if r.Reply.Save.Error != "" || r.Reply.Save.Bytes == 0 {
		t.Fatalf("the turn was not saved: %+v", r.Reply.Save)
	}
	return r
}

// checkTurn fails the test unless the page's turn gave the native engine's
// tokens; with counts, also its prompt and cached token counts.
func checkTurn(t testing.TB, what string, r pageReply, want nativeReply, counts bool) {
	t.Helper()
	if !slices.Equal(r.Streamed, want.Tokens) || !slices.Equal(r.Reply.Tokens, want.Tokens) {
		t.Fatalf("%s: streamed %v (reply %v), the native engine generates %v", what, r.Streamed, r.Reply.Tokens, want.Tokens)
	}
	if r.LastText != r.Reply.Text {
		t.Errorf("%s: the page shows %q, the reply's text is %q", what, r.LastText, r.Reply.Text)
	}
	if counts && (r.Reply.Prompt != want.Prompt || r.Reply.Cached != want.Cached) {
		t.Fatalf("%s: prompt %d tokens prefilled, %d cached; the native engine: %d and %d", what, r.Reply.Prompt, r.Reply.Cached, want.Prompt, want.Cached)
	}
}

// restoreInfo is what the page's worker reports after opening a chat's
// session (web/worker.js, op open).
type restoreInfo struct {
	Session  int     `json:"session"`
	KVTokens int     `json:"kv_tokens"`
	Replayed bool    `json:"replayed"`
	Reason   string  `json:"reason"`
	Refused  string  `json:"refused"`
	Source   string  `json:"source"`
	Bytes    int     `json:"bytes"`
	Ms       float64 `json:"ms"` // reading the save and wick_restore
	Note     string  `json:"note"`
}

// reload reloads the page, waits for the model and for the open chat's
// session, and returns how the session was opened.
func reload(t testing.TB, b *browser) restoreInfo {
	t.Helper()
	b.do(t, 30*time.Second, "reload", chromedp.Reload())
	b.waitState(t, "ready", 120*time.Second)
	b.do(t, 60*time.Second, "wait for the chat's session",
		chromedp.Poll[chromedp.Void](`window.wick.lastRestore !== null`, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	raw := eval[string](t, b, `JSON.stringify({...window.wick.lastRestore, note: document.getElementById('note').hidden ? '' : document.getElementById('note').textContent})`)
	var r restoreInfo
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("restore %s: %v", raw, err)
	}
	return r
}

// openChat is the id of the chat the page has open.
const openChat = `window.wick.openChat`

// rewriteSave replaces the open chat's saved session in the page's storage
// by f(bytes) (a JS function body over a Uint8Array b, returning bytes).
func rewriteSave(t testing.TB, b *browser, f string) {
	t.Helper()
	n := eval[int](t, b, fmt.Sprintf(`import('/saves.js').then(async (m) => {
		const saves = await m.openSaves(), chat = %s;
		const s = (await saves.all()).find((x) => x.chat === chat);
		if (!s) throw new Error('no save of chat ' + chat);
		const b = await saves.read(s, chat);
		const out = ((b) => { %s })(b);
		await saves.write(s, chat, out);
		return out.length;
	})`, openChat, f))
	t.Logf("the open chat's save is now %d bytes", n)
}

// userMessages is how many user messages the page shows.
func userMessages(t testing.TB, b *browser) int {
	return eval[int](t, b, `document.querySelectorAll('#messages .msg.user').length`)
}

// TestChat opens the page on WebGPU, waits for the model, chats, and
// checks the streamed greedy reply token for token against the native
// engine; then reloads the page and checks that nothing is downloaded
// again, that the chat comes back from its save and goes on exactly as an
// uninterrupted conversation does, and that regenerate gives the native
// engine's Regenerate.
func TestChat(t *testing.T) {
	b := newBrowser(t, true)
	s := startSite(t, "")
	steps := []step{{"send", "Hello! Who are you?"}, {"send", "What do you bake?"}, {"regenerate", ""}}
	want := nativeChat(t, steps...)

	// WebGPU by name: on SwiftShader, a software adapter, the page would
	// otherwise choose its CPU backend.
	start := time.Now()
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(s.URL+"/?backend=webgpu"))
	b.waitState(t, "ready", 120*time.Second)
	t.Logf("page ready after %v: %s", time.Since(start).Round(time.Millisecond), b.pageStatus())
	if got := s.shards.Load(); got == 0 {
		t.Fatalf("the first load made no shard requests")
	}
	backend := eval[string](t, b, `window.wick.loaded.backend`)
	if !strings.HasPrefix(backend, "webgpu") {
		t.Fatalf("the page loaded the model on %q, want webgpu", backend)
	}

	r := send(t, b, steps[0].text)
	checkTurn(t, "turn 1", r, want[0], true)
	report(t, "webgpu", r)

	shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil || !isPNG(shot) {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s", writeArtifact(t, "chat.png", shot))

	// Reload: the model comes from the Cache API, the chat from its save.
	before := s.shards.Load()
	rs := reload(t, b)
	if got := s.shards.Load() - before; got != 0 {
		t.Errorf("the second load made %d shard requests, want 0", got)
	}
	if rs.Source != "saved" || rs.Refused != "" || rs.Replayed {
		t.Fatalf("after the reload the chat's session was not restored from its save: %+v", rs)
	}
	if n := userMessages(t, b); n != 1 {
		t.Fatalf("after the reload the chat shows %d user messages, want 1", n)
	}
	r = send(t, b, steps[1].text)
	// The GPU backend's saves carry KV once it can copy its KV out; until
	// then kv_tokens is 0 and the turn prefills the whole conversation.
	checkTurn(t, "turn 2 after a reload", r, want[1], rs.KVTokens > 0)
	if r.Reply.Cached != rs.KVTokens || r.Reply.Prompt+r.Reply.Cached != want[1].Prompt+want[1].Cached {
		t.Fatalf("turn 2 after a reload: %d tokens prefilled, %d cached, with %d restored; the native engine's turn covers %d",
			r.Reply.Prompt, r.Reply.Cached, rs.KVTokens, want[1].Prompt+want[1].Cached)
	}
	t.Logf("webgpu: the save of %d bytes restored %d tokens of KV in %.0f ms; turn 2 prefilled %d tokens, and its save took %.0f ms (wick_save) + %.0f ms (IndexedDB, with the chat)",
		rs.Bytes, rs.KVTokens, rs.Ms, r.Reply.Prompt, r.Reply.Save.SaveMs, r.Reply.Save.WriteMs)

	// Regenerate: the engine's own, which keeps the KV before the reply.
	// Where the cut lies inside a local layer's ring that has wrapped, the
	// engine restores the kept prefix from the prefix cache, else prefills
	// it: the counts then depend on the backend's cache, the tokens never.
	r = click(t, b, "regen")
	checkTurn(t, "regenerated turn 2", r, want[2], false)
	if r.Reply.Prompt+r.Reply.Cached != want[2].Prompt+want[2].Cached {
		t.Fatalf("regenerated turn 2: %d tokens prefilled, %d cached; the native engine's turn covers %d", r.Reply.Prompt, r.Reply.Cached, want[2].Prompt+want[2].Cached)
	}
	t.Logf("webgpu regenerate: %d tokens prefilled, %d cached (native cpu: %d and %d)", r.Reply.Prompt, r.Reply.Cached, want[2].Prompt, want[2].Cached)
	if n := userMessages(t, b); n != 2 {
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

// traffic counts crossings of the boundary: imports (wasm-to-JS calls,
// the wick_gpu imports), exportCalls (JS-to-wasm calls), gpuCalls (WebGPU
// API calls), runs (command lists replayed), runMs (time spent decoding
// and encoding them), commands; and per name, "import:run",
// "export:wick_resume" and so on.
type traffic map[string]float64

// perName lists the counts of kind ("import" or "export") per name,
// divided by n.
func (tr traffic) perName(kind string, n float64) string {
	var parts []string
	for k, v := range tr {
		if name, ok := strings.CutPrefix(k, kind+":"); ok && v > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, v/n))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// report logs the boundary traffic per decoded token and writes it as an
// artifact (bench/BROWSER.md records the numbers).
func report(t testing.TB, name string, r pageReply) {
	t.Helper()
	st := r.Stats
	t.Logf("%s: %d tokens in %.0f ms, first after %.0f ms (prefill: %.0f WebGPU calls, %.0f runs, %.1f ms encoding), %.2f tokens/s decoding",
		name, st.Tokens, st.Ms, st.FirstMs, st.Prefill["gpuCalls"], st.Prefill["runs"], st.Prefill["runMs"], st.DecodeRate)
	if n := float64(st.Tokens - 1); n > 0 {
		d := st.Decode
		runs := max(d["runs"], 1)
		t.Logf("%s: per decoded token: %.2f wasm-to-JS calls (%s), %.2f JS-to-wasm calls (%s), %.1f WebGPU calls, %.2f command lists, %.1f commands each, %.3f ms to encode one list",
			name, d["imports"]/n, d.perName("import", n), d["exportCalls"]/n, d.perName("export", n), d["gpuCalls"]/n, d["runs"]/n, d["commands"]/runs, d["runMs"]/runs)
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	writeArtifact(t, "stats-"+name+".json", append(data, '\n'))
}

// TestCorruptShard serves one shard with a flipped byte: the page must
// refuse it with a visible error and store nothing of it.
func TestCorruptShard(t *testing.T) {
	f := modeltest.Open(t, modelDir)
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
// engine. The CPU backend's saves carry KV, so this is also where a
// reloaded chat must go on without prefilling what it restored; then its
// save is corrupted (refused, the chat goes on from its messages), then
// replaced by another model's (its KV refused, its messages kept), and the
// last message is edited: every reply stays the native engine's.
func TestNoWebGPU(t *testing.T) {
	b := newBrowser(t, false)
	s := startSite(t, "")
	steps := []step{{"send", "Hi there."}, {"send", "What do you bake?"}, {"send", "Tell me about the boats."}, {"edit", "Good evening."}}
	want := nativeChat(t, steps...)
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
	r := send(t, b, steps[0].text)
	checkTurn(t, "cpu turn 1", r, want[0], true)
	report(t, "cpu", r)

	// Reload: the session comes back with its KV, and the next turn
	// prefills only its own tokens, exactly as the uninterrupted chat.
	rs := reload(t, b)
	if rs.Source != "saved" || rs.Refused != "" || rs.Replayed || rs.KVTokens == 0 {
		t.Fatalf("after the reload the chat's session was not restored with its KV: %+v", rs)
	}
	if rs.KVTokens != want[1].Cached {
		t.Fatalf("the save restored %d tokens of KV; the uninterrupted chat holds %d before turn 2", rs.KVTokens, want[1].Cached)
	}
	if saved := eval[bool](t, b, openChat+` in window.wick.saved && !!document.querySelector('#chats li.selected .saved')`); !saved {
		t.Errorf("the chat list does not mark the open chat as saved")
	}
	r = send(t, b, steps[1].text)
	checkTurn(t, "cpu turn 2 after a reload", r, want[1], true)
	t.Logf("cpu: the save of %d bytes restored %d tokens of KV in %.0f ms; turn 2 prefilled %d tokens, and its save took %.0f ms (wick_save) + %.0f ms (IndexedDB, with the chat)",
		rs.Bytes, rs.KVTokens, rs.Ms, r.Reply.Prompt, r.Reply.Save.SaveMs, r.Reply.Save.WriteMs)

	// A corrupted save is refused with a visible note; the chat goes on
	// from the page's messages (recomputed), with the same replies.
	rewriteSave(t, b, `b[b.length >> 1] ^= 0xff; return b;`)
	rs = reload(t, b)
	if rs.Refused == "" || !strings.Contains(rs.Note, "refused") {
		t.Fatalf("a corrupted save was not refused with a note: %+v", rs)
	}
	t.Logf("corrupted save: %s", rs.Refused)
	if n := userMessages(t, b); n != 2 {
		t.Fatalf("after the refused save the chat shows %d user messages, want 2", n)
	}
	r = send(t, b, steps[2].text)
	checkTurn(t, "cpu turn 3 after a refused save", r, want[2], false)
	if r.Reply.Cached != 0 || r.Reply.Prompt != want[2].Prompt+want[2].Cached {
		t.Fatalf("turn 3 after a refused save: %d tokens prefilled, %d cached; want all %d prefilled", r.Reply.Prompt, r.Reply.Cached, want[2].Prompt+want[2].Cached)
	}

	// Another model's save of the chat: its KV is refused, its messages
	// are kept, and the page's own copy (with this model's tokens) wins.
	msgs := []chat.Message{{Role: chat.User, Content: steps[0].text}}
	foreign := foreignSave(t, msgs)
	rewriteSave(t, b, fmt.Sprintf(`return Uint8Array.from(atob(%q), (c) => c.charCodeAt(0));`, base64.StdEncoding.EncodeToString(foreign)))
	rs = reload(t, b)
	if !rs.Replayed || rs.Reason == "" || !strings.Contains(rs.Note, "another model") {
		t.Fatalf("another model's save was not refused with a note: %+v", rs)
	}
	t.Logf("another model's save: %s", rs.Reason)

	// Edit the last message: it and its reply are replaced.
	b.do(t, 10*time.Second, "edit", chromedp.Evaluate[chromedp.Void](`document.getElementById('edit').click()`))
	if got := eval[string](t, b, `document.getElementById('input').value`); got != steps[2].text {
		t.Fatalf("edit put %q into the message box, want the last message", got)
	}
	r = send(t, b, steps[3].text)
	checkTurn(t, "cpu edit", r, want[3], false)
	if n := userMessages(t, b); n != 3 {
		t.Fatalf("after the edit the chat shows %d user messages, want 3", n)
	}
}
