package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/server"
	"github.com/wick-run/wick/web"
)

// modelDir is the model every browser test serves: tiny, so that
// SwiftShader (a GPU in software) runs it in seconds.
const modelDir = "../testdata/cai-tiny"

// site is a wick server on 127.0.0.1 (browsers offer WebGPU only to
// secure contexts, and http://127.0.0.1 is one), wrapped to count the shard
// requests it answers and, on demand, to corrupt one shard.
type site struct {
	URL     string
	shards  atomic.Int64 // shard requests answered
	corrupt atomic.Value // string: a shard file name served with one byte flipped
}

func startSite(t testing.TB, corrupt string) *site { return startSiteWith(t, corrupt, modelDir) }

// startSiteWith is startSite serving the models in dirs.
func startSiteWith(t testing.TB, corrupt string, dirs ...string) *site {
	t.Helper()
	return startSiteConfig(t, corrupt, server.Config{Models: dirs}, nil)
}

// startSiteConfig is startSite with the server's config (Logf is the
// test's), and with tlsCfg serving https on every interface: its URL is
// then at the first non-loopback address (127.0.0.1 where there is none).
func startSiteConfig(t testing.TB, corrupt string, cfg server.Config, tlsCfg *tls.Config) *site {
	t.Helper()
	cfg.Logf = t.Logf
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	s := &site{}
	s.corrupt.Store(corrupt)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		if strings.HasPrefix(r.URL.Path, "/models/") && strings.HasPrefix(name, "shard-") {
			s.shards.Add(1)
			if name == s.corrupt.Load().(string) {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				if len(body) > 0 {
					body[len(body)/2] ^= 0xff
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	if tlsCfg == nil {
		hs.Start()
		s.URL = hs.URL
		if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
			t.Fatalf("the test server is at %s, want http://127.0.0.1:PORT", s.URL)
		}
		return s
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	hs.Listener.Close()
	hs.Listener = ln
	hs.TLS = tlsCfg
	hs.StartTLS()
	host := "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				host = n.IP.String()
				break
			}
		}
	}
	s.URL = fmt.Sprintf("https://%s:%d", host, ln.Addr().(*net.TCPAddr).Port)
	return s
}

// needBrowser fails the test (skips it under -short) when Chromium or the
// wasm module is missing.
func needBrowser(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser end-to-end test: skipped under -short")
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install -y chromium): %v", err)
	}
	if _, err := fs.Stat(web.Assets, "wick.wasm"); err != nil {
		t.Fatalf("web/wick.wasm is not built (make wasm), so the page has no engine: %v", err)
	}
	return path
}

// browser is one headless Chromium with a fresh profile.
type browser struct {
	ctx   context.Context
	logs  *logBuffer
	close context.CancelFunc // closes a tab (set by tab)
}

// newBrowser starts Chromium with the flags these machines need (see
// FINDINGS.md); webgpu false leaves out --enable-unsafe-webgpu, without which
// Chromium on Linux offers no WebGPU adapter.
func newBrowser(t testing.TB, webgpu bool) *browser {
	t.Helper()
	return launchBrowser(t, webgpu, t.TempDir())
}

// launchBrowser is newBrowser with the profile in dir (a second browser on
// the same dir finds what the first stored) and extra flags.
func launchBrowser(t testing.TB, webgpu bool, dir string, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	path := needBrowser(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1200, 800),
	}
	opts = append(opts, extra...)
	if webgpu {
		opts = append(opts, chromedp.Flag("enable-unsafe-webgpu", true))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx, logs: &logBuffer{}}
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.collectConsole(ctx)
	return b
}

// tab opens a new tab in the browser whose console goes to the same log;
// its close closes it.
func (b *browser) tab(t testing.TB) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	nb := &browser{ctx: ctx, logs: b.logs, close: cancel}
	nb.collectConsole(ctx)
	return nb
}

func (b *browser) collectConsole(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.logs.add(m.String())
		}
	}()
}

// logBuffer keeps the page's console for a failure's report.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// do runs actions with a deadline and fails the test with the page's
// console on error.
func (b *browser) do(t testing.TB, timeout time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage status: %s\nconsole:\n%s", what, err, b.pageStatus(), b.logs)
	}
}

// eval evaluates a JS expression (awaiting a promise) into T.
func eval[T any](t testing.TB, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v\nconsole:\n%s", expr, err, b.logs)
	}
	return v
}

// waitState waits until the page's window.wick.state is want, failing
// early when it reaches another end state.
func (b *browser) waitState(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	expr := fmt.Sprintf(`window.wick && (window.wick.state === %q || ['ready','error','no-webgpu'].includes(window.wick.state)) && window.wick.state`, want)
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Poll[string](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil || got != want {
		t.Fatalf("wait for page state %q: got %q, %v\npage status: %s\nconsole:\n%s", want, got, err, b.pageStatus(), b.logs)
	}
}

// pageStatus is the page's status line and error box, for failure reports.
func (b *browser) pageStatus() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`'state=' + (window.wick && window.wick.state) + ' status=' + document.getElementById('status').textContent + ' error=' + document.getElementById('error').textContent + ' notice=' + document.getElementById('notice-text').textContent`))
	return s
}

// artifactDir is where screenshots and measurements go: $WICK_ARTIFACTS,
// or the test's temporary directory.
func artifactDir(t testing.TB) string {
	if d := os.Getenv("WICK_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("artifacts: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// writeArtifact writes data atomically (temp file + rename).
func writeArtifact(t testing.TB, name string, data []byte) string {
	t.Helper()
	dir := artifactDir(t)
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		t.Fatalf("artifact %s: %v", name, err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	path := filepath.Join(dir, name)
	if werr != nil || cerr != nil {
		os.Remove(f.Name())
		t.Fatalf("artifact %s: %v %v", name, werr, cerr)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		t.Fatalf("artifact %s: %v", name, err)
	}
	return path
}

// isPNG reports whether data starts with the PNG signature.
func isPNG(data []byte) bool { return bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) }
