package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/badimport"
	"github.com/wick-run/wick/web"
)

const hfDir = "../testdata/hf"

// importResult is what the page's hooks say about the last import.
type importResult struct {
	Name        string  `json:"name"`
	Arch        string  `json:"arch"`
	LargestRead int64   `json:"largest_read"`
	InputBytes  int64   `json:"input_bytes"`
	StartMs     float64 `json:"start_ms"`
	ConvertMs   float64 `json:"convert_ms"`
	Error       string  `json:"error"`
	Progress    []convert.Progress
}

// importInto picks input (a folder or a .gguf file) in the page's import
// controls and waits for the import to end.
func importInto(t *testing.T, b *browser, input string, gguf bool) importResult {
	t.Helper()
	sel := "#import-model-dir"
	if gguf {
		sel = "#import-model-gguf"
	}
	b.do(t, 10*time.Second, "reset the import hooks", chromedp.Evaluate[chromedp.Void](`window.wick.lastImport = null`))
	b.do(t, 30*time.Second, "pick "+input, chromedp.SetUploadFiles(chromedp.CSS(sel), []string{input}))
	b.do(t, 120*time.Second, "wait for the import of "+input,
		chromedp.Poll[chromedp.Void](`window.wick.lastImport !== null`, chromedp.WithPollingTimeout(120*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	raw := eval[string](t, b, `JSON.stringify({...window.wick.lastImport, Progress: window.wick.importProgress})`)
	var r importResult
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("import result %s: %v", raw, err)
	}
	return r
}

// storedKeys lists the model files the page keeps.
func storedKeys(t *testing.T, b *browser) []string {
	t.Helper()
	raw := eval[string](t, b, `(async () => JSON.stringify((await (await caches.open('wick-models-v1')).keys()).map((r) => new URL(r.url).pathname)))()`)
	var keys []string
	if err := json.Unmarshal([]byte(raw), &keys); err != nil {
		t.Fatal(err)
	}
	return keys
}

// sameStored fails unless the page stored model name with the same files,
// byte for byte, as the native conversion in dir.
func sameStored(t *testing.T, b *browser, name, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		got := eval[string](t, b, fmt.Sprintf(`(async () => {
			const r = await (await caches.open('wick-models-v1')).match(%q);
			if (!r) return 'missing';
			return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', await r.arrayBuffer())), (x) => x.toString(16).padStart(2, '0')).join('');
		})()`, "/models/"+name+"/"+e.Name()))
		if got != hex.EncodeToString(sum[:]) {
			t.Errorf("the page stored %s of %s as %s; the native conversion's sha256 is %x", e.Name(), name, got, sum)
		}
	}
}

// needConverter is needBrowser for the import tests, which need the
// converter module too.
func needConverter(t *testing.T) {
	t.Helper()
	needBrowser(t)
	if _, err := fs.Stat(web.Assets, "convert.wasm"); err != nil {
		t.Fatalf("web/convert.wasm is not built (make wasm), so the page cannot import: %v", err)
	}
}

// importAndChat imports input (a folder whose checkpoint file is
// checkpoint, or a .gguf file when checkpoint is "") in the page, checks
// its progress, that the files were read by ranges and that the stored
// model is the native conversion's bytes, and chats with it in a new chat:
// the tokens must be the native engine's.
func importAndChat(t *testing.T, b *browser, input, checkpoint string) {
	t.Helper()
	in, _ := filepath.Abs(input)
	start := time.Now()
	r := importInto(t, b, in, checkpoint == "")
	if r.Error != "" {
		t.Fatalf("import failed: %s\nconsole:\n%s", r.Error, b.logs)
	}
	t.Logf("imported %s as %s (%s) in %v (module %.0f ms, conversion and storing %.0f ms), %d progress reports",
		input, r.Name, r.Arch, time.Since(start).Round(time.Millisecond), r.StartMs, r.ConvertMs, len(r.Progress))
	if len(r.Progress) < 2 {
		t.Fatalf("%d progress reports, want several", len(r.Progress))
	}
	if last := r.Progress[len(r.Progress)-1]; last.Tensors != last.TotalTensors || last.Bytes != last.TotalBytes {
		t.Errorf("the last progress is %+v, want every tensor and byte", last)
	}
	file := in
	if checkpoint != "" {
		file = filepath.Join(in, checkpoint)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if r.LargestRead == 0 || r.LargestRead >= fi.Size() {
		t.Errorf("the largest read of the picked files was %d bytes; %s has %d: it must be read by ranges", r.LargestRead, file, fi.Size())
	}
	b.waitState(t, "ready", 120*time.Second)
	if got := eval[string](t, b, `window.wick.loaded.model`); got != r.Name {
		t.Fatalf("the page loaded %q after importing %q", got, r.Name)
	}

	native := filepath.Join(t.TempDir(), r.Name)
	if _, err := convert.Convert(in, native, convert.Options{DType: model.Int8}); err != nil {
		t.Fatal(err)
	}
	sameStored(t, b, r.Name, native)
	want := nativeChatOn(t, native, step{"send", "Hello! Who are you?"})
	// A new chat: the one open may hold turns with another model.
	js(t, b, "a new chat", `document.getElementById('new-chat').click(); await new Promise((r) => setTimeout(r, 300));`)
	got := send(t, b, "Hello! Who are you?")
	checkTurn(t, "the imported "+r.Name, got, want[0], true)
}

// TestImportModel serves the page from a plain static host (no model
// server at all), imports a Hugging Face folder from disk through the
// page's folder picker and chats with it: the tokens must be the native
// engine's on the natively converted model. A cancelled import keeps
// nothing, and bad checkpoints are refused in one sentence with nothing
// kept.
func TestImportModel(t *testing.T) {
	needConverter(t)
	hs := httptest.NewServer(http.FileServer(http.FS(web.Assets)))
	t.Cleanup(hs.Close)
	b := newBrowser(t, false)
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(hs.URL+"/?backend=cpu"))
	b.do(t, 30*time.Second, "wait for the page to say there are no models",
		chromedp.Poll[chromedp.Void](`document.getElementById('status').textContent.includes('import one')`, chromedp.WithPollingTimeout(30*time.Second)))

	t.Run("llama", func(t *testing.T) { importAndChat(t, b, filepath.Join(hfDir, "llama"), "model.safetensors") })

	t.Run("cancelled", func(t *testing.T) {
		before := storedKeys(t, b)
		in, _ := filepath.Abs(filepath.Join(hfDir, "llama"))
		b.do(t, 10*time.Second, "reset the import hooks", chromedp.Evaluate[chromedp.Void](`window.wick.lastImport = null`))
		// Cancel as soon as the import starts: the worker takes a second to
		// start the module, and hears the cancel at its first progress
		// report (or within 0.1 s of the conversion).
		b.do(t, 30*time.Second, "pick "+in+" and cancel", chromedp.SetUploadFiles(chromedp.CSS("#import-model-dir"), []string{in}),
			chromedp.Poll[chromedp.Void](`window.wick.state === 'importing'`, chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('import-model-cancel').click()`))
		b.do(t, 60*time.Second, "wait for the cancelled import",
			chromedp.Poll[chromedp.Void](`window.wick.lastImport !== null`, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
		if got := eval[string](t, b, `window.wick.lastImport.error || ''`); !strings.Contains(got, "cancelled") {
			t.Fatalf("a cancelled import ended with %q", got)
		}
		if after := storedKeys(t, b); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("a cancelled import changed the stored files: before %v, after %v", before, after)
		}
	})

	t.Run("refused", func(t *testing.T) {
		before := storedKeys(t, b)
		for _, bad := range badimport.Checkpoints(t, hfDir) {
			gguf := strings.HasSuffix(bad.Path, ".gguf")
			r := importInto(t, b, bad.Path, gguf)
			shown := eval[string](t, b, `document.getElementById('error').firstChild.textContent`)
			details := eval[string](t, b, `(document.querySelector('#error details pre') || {}).textContent || ''`)
			if !strings.Contains(details, bad.Want) {
				t.Errorf("%s: the error's details are %q, want the converter's words (%q)", bad.Name, details, bad.Want)
			}
			t.Logf("%s: %s", bad.Name, shown)
			if r.Error == "" || shown != r.Error || !strings.Contains(shown, filepath.Base(bad.Path)) || !strings.Contains(shown, bad.Plain) {
				t.Errorf("%s: the page says %q (import error %q), want one sentence naming %s and %s", bad.Name, shown, r.Error, filepath.Base(bad.Path), bad.Plain)
			}
			if strings.Count(strings.TrimSuffix(shown, "."), ". ") > 0 {
				t.Errorf("%s: %q is more than one sentence", bad.Name, shown)
			}
		}
		if after := storedKeys(t, b); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("a refused import changed the stored files: before %v, after %v", before, after)
		}
	})
}

// TestImportModelServed imports a GGUF file through the file picker on the
// page as wick serve hosts it (cross-origin isolated: COOP and COEP
// headers), beside the server's own model, and chats with it as
// importAndChat does; the imported model is listed as kept in this
// browser, and the server's model is still offered. Then a folder dropped
// on the page imports too.
func TestImportModelServed(t *testing.T) {
	needConverter(t)
	b := newBrowser(t, false)
	s := startSite(t, "")
	openPage(t, b, s.URL+"/?backend=cpu")
	importAndChat(t, b, filepath.Join(hfDir, "qwen2", "model-q8_0.gguf"), "")
	options := eval[string](t, b, `[...document.getElementById('model-select').options].map((o) => o.textContent).join('|')`)
	if want := filepath.Base(modelDir) + "|model-q8_0 (in this browser)"; !strings.Contains(options, want) {
		t.Fatalf("the model list is %q, want %q", options, want)
	}

	// A folder dropped on the Model box imports as a picked one does.
	// (Headless Chromium takes one synthesised drop per page.)
	llama, _ := filepath.Abs(filepath.Join(hfDir, "llama"))
	b.do(t, 10*time.Second, "reset the import hooks", chromedp.Evaluate[chromedp.Void](`window.wick.lastImport = null`))
	xy := eval[[]float64](t, b, `(() => { const r = document.getElementById('model-box').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()`)
	data := &input.DragData{Files: []string{llama}, DragOperationsMask: 1}
	for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
		if _, err := chromedp.Call(b.ctx, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: xy[0], Y: xy[1], Data: data}); err != nil {
			t.Fatalf("drag %s: %v", typ, err)
		}
	}
	b.do(t, 120*time.Second, "wait for the dropped folder's import",
		chromedp.Poll[chromedp.Void](`window.wick.lastImport !== null`, chromedp.WithPollingTimeout(120*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	if got := eval[string](t, b, `JSON.stringify(window.wick.lastImport)`); !strings.Contains(got, `"arch":"LlamaForCausalLM"`) {
		t.Fatalf("the dropped folder's import: %s", got)
	}
	b.waitState(t, "ready", 120*time.Second)
}
