package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/web"
)

// startWriting starts storing model want in b's page through models.js's
// openImport (as import.js does) and puts one shard, without a commit: the
// page holds the model's lock until it commits, aborts or closes. It
// returns the name the import got.
func startWriting(t *testing.T, b *browser, want string) string {
	t.Helper()
	return eval[string](t, b, fmt.Sprintf(`(async () => {
		const m = await import('/models.js');
		window.writing = await m.openImport(%q);
		await window.writing.put('shard-0.bin', new Blob([new Uint8Array(4096)]));
		return window.writing.name;
	})()`, want))
}

// modelsStored maps each model name with stored files to whether its
// .complete marker is among them.
func modelsStored(t *testing.T, b *browser) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, k := range storedKeys(t, b) {
		name, file, ok := strings.Cut(strings.TrimPrefix(k, "/models/"), "/")
		if ok {
			out[name] = out[name] || file == ".complete"
		}
	}
	return out
}

// TestSweepIncomplete leaves models half stored as a tab closed mid-import
// leaves them, reloads the page and checks that its start deletes them,
// keeps a complete model and a saved chat, and leaves alone the model
// another open tab is importing (its lock is held); the swept name is then
// free for the next import, the one being written is not.
func TestSweepIncomplete(t *testing.T) {
	needBrowser(t)
	// A static host of the page: no model server, so no download to keep.
	hs := httptest.NewServer(http.FileServer(http.FS(web.Assets)))
	t.Cleanup(hs.Close)
	b := newBrowser(t, false)
	page := hs.URL + "/?backend=cpu"
	swept := func() []string {
		t.Helper()
		b.do(t, 30*time.Second, "wait for the start's sweep",
			chromedp.Poll[chromedp.Void](`window.wick && window.wick.swept !== null`, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
		var names []string
		if err := json.Unmarshal([]byte(eval[string](t, b, `JSON.stringify(window.wick.swept)`)), &names); err != nil {
			t.Fatal(err)
		}
		return names
	}
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(page))
	if got := swept(); len(got) != 0 {
		t.Fatalf("a fresh profile's start swept %v", got)
	}

	// A complete model (stored as an import commits one) and a chat.
	js(t, b, "store a complete model and a chat", `
		const m = await import('/models.js');
		const w = await m.openImport('done');
		await w.put('shard-0.bin', new Blob([new Uint8Array(4096)]));
		await w.commit(new Uint8Array([1, 2, 3]));
		const s = window.wick.store;
		await s.addChat({ id: 'chat-kept', character: s.characters[0].id, title: 'kept', created: Date.now(), updated: Date.now(), messages: [{ role: 'user', text: 'hi' }] });`)

	// A tab that closes mid-import, and one that goes on importing. They
	// show another file of the origin: the chat page itself would sweep and
	// load a model.
	closed, busy := b.tab(t), b.tab(t)
	for _, tb := range []*browser{closed, busy} {
		tb.do(t, 30*time.Second, "open a tab", chromedp.Navigate(hs.URL+"/style.css"))
	}
	if got := startWriting(t, closed, "orphan"); got != "orphan" {
		t.Fatalf("the first import of orphan was named %q", got)
	}
	if got := startWriting(t, busy, "busy"); got != "busy" {
		t.Fatalf("the first import of busy was named %q", got)
	}
	closed.close()
	// The closed tab's lock goes with it, but not at once: wait for the
	// browser to release it, so that the reload's sweep finds it free.
	b.do(t, 10*time.Second, "wait for the closed tab's lock to go",
		chromedp.Poll[chromedp.Void](`navigator.locks.query().then((q) => !q.held.some((l) => l.name === '/models/orphan/'))`,
			chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if got := modelsStored(t, b); !got["done"] || got["orphan"] || got["busy"] || len(got) != 3 {
		t.Fatalf("before the reload, the stored models (name: complete) are %v, want done complete, orphan and busy not", got)
	}

	b.do(t, 30*time.Second, "reload the page", chromedp.Reload())
	if got := swept(); !slices.Equal(got, []string{"orphan"}) {
		t.Errorf("the start swept %v, want [orphan]", got)
	}
	if got := modelsStored(t, b); len(got) != 2 || !got["done"] || got["busy"] {
		t.Errorf("after the sweep, the stored models (name: complete) are %v, want done complete and busy still being written", got)
	}
	if got := eval[string](t, b, `(window.wick.store.chat('chat-kept') || { messages: [{ text: 'missing' }] }).messages[0].text`); got != "hi" {
		t.Errorf("the saved chat after the sweep: %q", got)
	}

	// The swept name is free again; the one being written is not.
	for _, c := range []struct{ want, got string }{{"orphan", "orphan"}, {"busy", "busy-2"}} {
		name := eval[string](t, b, fmt.Sprintf(`(async () => { const w = await (await import('/models.js')).openImport(%q); await w.abort(); return w.name; })()`, c.want))
		if name != c.got {
			t.Errorf("an import of %s is named %q, want %q", c.want, name, c.got)
		}
	}
}

// TestRemoveWhileWriting removes a model while another tab is importing
// it (holding its lock): models.js's remove must refuse, through the page's
// Remove button too, and leave its files to the import, which would
// otherwise go on storing into a model with files missing and then mark
// it complete. Once the import has committed, the model is removed.
func TestRemoveWhileWriting(t *testing.T) {
	needBrowser(t)
	hs := httptest.NewServer(http.FileServer(http.FS(web.Assets)))
	t.Cleanup(hs.Close)
	b := newBrowser(t, false)
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(hs.URL+"/?backend=cpu"),
		chromedp.Poll[chromedp.Void](`window.wick && window.wick.swept !== null`, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	writer := b.tab(t)
	writer.do(t, 30*time.Second, "open a tab", chromedp.Navigate(hs.URL+"/style.css"))
	if got := startWriting(t, writer, "busy"); got != "busy" {
		t.Fatalf("the import of busy was named %q", got)
	}

	refused := eval[string](t, b, `import('/models.js').then((m) => m.remove('busy')).then(() => '', (e) => e.kind + ': ' + e.message)`)
	if !strings.HasPrefix(refused, "busy: busy is being downloaded or imported") {
		t.Errorf("remove while another tab imports the model: %q, want it refused as busy", refused)
	}
	// The page's Remove, with the model picked (an import in progress is
	// not listed: add it as the list would once it is complete).
	js(t, b, "press Remove", `
		const sel = document.getElementById('model-select');
		sel.add(new Option('busy', 'busy'));
		sel.value = 'busy';
		document.getElementById('delete-btn').click();`)
	b.do(t, 10*time.Second, "wait for the refusal",
		chromedp.Poll[chromedp.Void](`!document.getElementById('error').hidden`, chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if got := eval[string](t, b, `document.getElementById('error').textContent`); !strings.Contains(got, "busy is being downloaded or imported") {
		t.Errorf("the page's Remove while the model is imported says %q", got)
	}
	if got := modelsStored(t, b); len(got) != 1 || got["busy"] {
		t.Fatalf("after the refused removes, the stored models (name: complete) are %v, want busy still being written", got)
	}

	writer.do(t, 30*time.Second, "commit the import", chromedp.Evaluate[chromedp.Void](`window.writing.commit(new Uint8Array([1, 2, 3]))`, chromedp.EvalAwaitPromise))
	if got := modelsStored(t, b); !got["busy"] {
		t.Fatalf("after the commit, the stored models (name: complete) are %v, want busy complete", got)
	}
	if got := eval[string](t, b, `import('/models.js').then((m) => m.remove('busy')).then(() => '', (e) => e.message)`); got != "" {
		t.Fatalf("remove after the import committed: %s", got)
	}
	if got := modelsStored(t, b); len(got) != 0 {
		t.Errorf("after the remove, the stored models (name: complete) are %v, want none", got)
	}
}
