package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/internal/testmodel"
)

// gemma1bLayout is the layer layout of Gemma-3-1B (26 layers, 5 local with
// a window of 512 to 1 global, MQA, QK-norm, pre and post norms, GeGLU,
// tied embedding) at the testdata models' tiny widths. A decode step
// records one dispatch per kernel of every layer whatever the widths, so
// its command list, and with it the boundary traffic and the JS time to
// encode it, is the 1B model's; the widths only set how long SwiftShader
// computes, which measures nothing here.
func gemma1bLayout(vocab int) *model.Config {
	c := &model.Config{
		Vocab: vocab, Hidden: 64, Heads: 4, KVHeads: 1, HeadDim: 16, FFNHidden: 128, ContextLen: 2048,
		RopeThetaGlobal: 1e6, RopeThetaLocal: 1e4, NormEps: 1e-6, NormOnePlus: true, QKNorm: true,
		PostAttnNorm: true, PostFFNNorm: true, Activation: model.GeGLUTanh, TiedEmbedding: true, EmbedScale: 8,
		DType: model.Int8,
	}
	for i := 0; i < 26; i++ {
		if i%6 == 5 {
			c.Layers = append(c.Layers, model.Layer{Kind: model.Global, KVSource: i})
		} else {
			c.Layers = append(c.Layers, model.Layer{Kind: model.Local, Window: 512, KVSource: i})
		}
	}
	return c
}

// writeGemma1bLayout writes that model, with the testdata tokenizer, into
// a directory named gemma1b-layout under dir.
func writeGemma1bLayout(b testing.TB, dir string) string {
	b.Helper()
	tokPath := "../testdata/tokenizer/tokenizer.model"
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		b.Fatal(err)
	}
	tmpl, err := chat.GemmaChatTemplate(tok)
	if err != nil {
		b.Fatal(err)
	}
	c := gemma1bLayout(tok.Vocab())
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "gemma1b-layout")
	if err := format.WriteModel(out, "gemma1b-layout", c, testmodel.Random(c, 3), tokPath, tmpl, 32<<20); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkBrowserDecode measures, per decoded token in the page on
// WebGPU (SwiftShader), the boundary crossings, the WebGPU calls and the JS
// time to encode a command list, for cai-tiny and for the Gemma-3-1B layer
// layout. Run it once per model (bench/BROWSER.md has the numbers):
//
//	go test -run '^$' -bench BrowserDecode -benchtime 1x ./e2e/
//
// A short character card keeps the prefill, which SwiftShader computes
// slowly and which is not measured here, to one chunk.
func BenchmarkBrowserDecode(b *testing.B) {
	for _, m := range []struct{ name, dir string }{
		{"cai-tiny", modelDir},
		{"gemma1b-layout", ""},
	} {
		b.Run(m.name, func(b *testing.B) {
			dir := m.dir
			if dir == "" {
				dir = writeGemma1bLayout(b, b.TempDir())
			}
			br := newBrowser(b, true)
			s := startSiteWith(b, "", dir)
			br.do(b, 30*time.Second, "open the page", chromedp.Navigate(s.URL+"/"))
			br.do(b, 10*time.Second, "a short card", chromedp.Evaluate[chromedp.Void](`
				localStorage.setItem('wick.v1', JSON.stringify({
					characters: [{id: 'c-b', name: 'Ada', persona: '', greeting: ''}], chats: [],
					settings: {temperature: 0, topP: 1, maxTokens: 32, backend: 'webgpu'},
					open: {model: '', character: 'c-b', chat: ''}}))
			`), chromedp.Reload())
			br.waitState(b, "ready", 180*time.Second)
			for i := 0; i < b.N; i++ {
				r := sendN(b, br, fmt.Sprintf("Hello %d.", i), 32)
				if r.Stats.Tokens < 2 {
					b.Fatalf("the reply has %d tokens: nothing was decoded after the first", r.Stats.Tokens)
				}
				report(b, "bench-"+m.name, r)
				n := float64(r.Stats.Tokens - 1)
				d := r.Stats.Decode
				b.ReportMetric(d["imports"]/n, "imports/token")
				b.ReportMetric(d["exportCalls"]/n, "exports/token")
				b.ReportMetric(d["gpuCalls"]/n, "webgpu-calls/token")
				b.ReportMetric(d["runs"]/n, "lists/token")
				b.ReportMetric(d["runMs"]/n, "encode-ms/token")
			}
		})
	}
}
