package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/andybalholm/brotli"
	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/internal/modeltest"
)

var testModelDirs = []string{"../testdata/cai-tiny", "../testdata/plain-tiny"}

// copyModel copies a test model into a fresh directory named name, so tests
// can add, break and link files.
func copyModel(t *testing.T, from, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	modeltest.Copy(t, from, dir)
	return dir
}

// testAssets is a page with a file of each kind the server treats apart.
func testAssets() fstest.MapFS {
	js := []byte(strings.Repeat("console.log('wick streams tokens');\n", 200))
	return fstest.MapFS{
		"index.html":       {Data: []byte("<!doctype html><title>wick</title>" + strings.Repeat("<p>chat</p>", 100))},
		"app.js":           {Data: js},
		"app.js.br":        {Data: mustBrotli(js)}, // a valid precompressed sibling
		"worker.js":        {Data: js},
		"worker.js.gz":     {Data: mustGzip([]byte("stale"))}, // a stale one: ignored
		"wick.wasm":        {Data: bytes.Repeat([]byte("\x00asm\x01\x00\x00\x00 wasm body "), 500)},
		"tiny.css":         {Data: []byte("body{}")},
		"embed.go":         {Data: []byte("package web")},
		"notes.md":         {Data: []byte("private notes")},
		"sub/icon.svg":     {Data: []byte("<svg xmlns='http://www.w3.org/2000/svg'></svg>")},
		"sub/readme.txt.x": {Data: []byte("no")},
	}
}

func mustBrotli(b []byte) []byte {
	var buf bytes.Buffer
	w := brotli.NewWriterLevel(&buf, 11)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func mustGzip(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// newTestServer serves cfg (with the test page and silent logs unless set)
// on a loopback httptest server.
func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Assets == nil {
		cfg.Assets = testAssets()
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, hs
}

// rawGet sends target exactly as written in the request line, so that no
// client library cleans or re-escapes it.
func rawGet(t *testing.T, hs *httptest.Server, target string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, hs.Listener.Addr())
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func do(t *testing.T, hs *httptest.Server, method, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, hs.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	// The transport would ask for gzip and decode it behind our back.
	if req.Header.Get("Accept-Encoding") == "" {
		req.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func sha256Tag(b []byte) string {
	s := sha256.Sum256(b)
	return `"sha256:` + hex.EncodeToString(s[:]) + `"`
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstShard returns the name and bytes of the model's first shard.
func firstShard(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	man, err := format.DecodeManifest(readFile(t, filepath.Join(dir, format.ManifestFile)))
	if err != nil {
		t.Fatal(err)
	}
	name := man.GetShards()[0].GetFile()
	return name, readFile(t, filepath.Join(dir, name))
}

// TestModelFiles checks that model files are served with the caching,
// range and conditional semantics the page's downloader relies on.
func TestModelFiles(t *testing.T) {
	dir := testModelDirs[0]
	_, hs := newTestServer(t, Config{Models: testModelDirs})
	manifest := readFile(t, filepath.Join(dir, format.ManifestFile))
	tokenizer := readFile(t, filepath.Join(dir, "tokenizer.model"))
	shard, data := firstShard(t, dir)
	shardURL := "/models/cai-tiny/" + shard
	shardTag := `"sha256:` + strings.TrimSuffix(strings.TrimPrefix(shard, "shard-"), ".bin") + `"`
	size := len(data)

	for _, tc := range []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantHeader map[string]string
		wantBody   []byte // nil: not checked
	}{
		{name: "manifest", path: "/models/cai-tiny/manifest.pb", wantStatus: 200,
			wantHeader: map[string]string{"Content-Type": "application/x-protobuf", "Cache-Control": "no-cache", "ETag": sha256Tag(manifest)},
			wantBody:   manifest},
		{name: "shard", path: shardURL, wantStatus: 200,
			wantHeader: map[string]string{"Content-Type": "application/octet-stream", "Cache-Control": "public, max-age=31536000, immutable", "ETag": shardTag, "Accept-Ranges": "bytes", "Content-Length": fmt.Sprint(size)},
			wantBody:   data},
		{name: "shard of the second model", path: "/models/plain-tiny/" + func() string { n, _ := firstShard(t, testModelDirs[1]); return n }(), wantStatus: 200},
		{name: "tokenizer", path: "/models/cai-tiny/tokenizer.model", wantStatus: 200,
			wantHeader: map[string]string{"Cache-Control": "no-cache", "ETag": sha256Tag(tokenizer)}, wantBody: tokenizer},
		{name: "head", method: "HEAD", path: shardURL, wantStatus: 200,
			wantHeader: map[string]string{"Content-Length": fmt.Sprint(size), "ETag": shardTag}, wantBody: []byte{}},
		{name: "range", path: shardURL, header: map[string]string{"Range": "bytes=0-9"}, wantStatus: 206,
			wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes 0-9/%d", size), "ETag": shardTag}, wantBody: data[:10]},
		{name: "range open-ended", path: shardURL, header: map[string]string{"Range": "bytes=1000-"}, wantStatus: 206,
			wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes 1000-%d/%d", size-1, size)}, wantBody: data[1000:]},
		{name: "range suffix", path: shardURL, header: map[string]string{"Range": "bytes=-16"}, wantStatus: 206,
			wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/%d", size-16, size-1, size)}, wantBody: data[size-16:]},
		{name: "range past the end", path: shardURL, header: map[string]string{"Range": fmt.Sprintf("bytes=%d-", size)}, wantStatus: 416,
			wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes */%d", size)}},
		{name: "range malformed", path: shardURL, header: map[string]string{"Range": "bytes=9-2"}, wantStatus: 416},
		{name: "range of the manifest", path: "/models/cai-tiny/manifest.pb", header: map[string]string{"Range": "bytes=-4"}, wantStatus: 206, wantBody: manifest[len(manifest)-4:]},
		{name: "if-none-match", path: shardURL, header: map[string]string{"If-None-Match": shardTag}, wantStatus: 304,
			wantHeader: map[string]string{"ETag": shardTag, "Cache-Control": "public, max-age=31536000, immutable"}, wantBody: []byte{}},
		{name: "if-none-match list", path: shardURL, header: map[string]string{"If-None-Match": `"other", ` + shardTag}, wantStatus: 304},
		{name: "if-none-match star", path: shardURL, header: map[string]string{"If-None-Match": "*"}, wantStatus: 304},
		{name: "if-none-match stale", path: shardURL, header: map[string]string{"If-None-Match": `"sha256:00"`}, wantStatus: 200, wantBody: data},
		{name: "if-none-match manifest", path: "/models/cai-tiny/manifest.pb", header: map[string]string{"If-None-Match": sha256Tag(manifest)}, wantStatus: 304},
		{name: "if-range resumes", path: shardURL, header: map[string]string{"Range": "bytes=100-199", "If-Range": shardTag}, wantStatus: 206, wantBody: data[100:200]},
		{name: "if-range changed", path: shardURL, header: map[string]string{"Range": "bytes=100-199", "If-Range": `"sha256:00"`}, wantStatus: 200, wantBody: data},
		{name: "if-match", path: shardURL, header: map[string]string{"If-Match": `"sha256:00"`}, wantStatus: 412},
		{name: "post", method: "POST", path: shardURL, wantStatus: 405, wantHeader: map[string]string{"Allow": "GET, HEAD"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp, body := do(t, hs, method, tc.path, tc.header)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %.80q)", resp.StatusCode, tc.wantStatus, body)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body of %d bytes, want %d bytes", len(body), len(tc.wantBody))
			}
		})
	}

	t.Run("multiple ranges", func(t *testing.T) {
		resp, body := do(t, hs, "GET", shardURL, map[string]string{"Range": "bytes=0-3,10-13"})
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for _, want := range [][]byte{data[0:4], data[10:14]} {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := io.ReadAll(p); !bytes.Equal(got, want) {
				t.Errorf("part %q, want %q", got, want)
			}
		}
	})
}

// TestTraversal sends every spelling of a path outside the served files that
// we could think of, byte for byte, and expects 404 for each.
func TestTraversal(t *testing.T) {
	dir := copyModel(t, testModelDirs[0], "cai-tiny")
	outside := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unlisted.txt"), []byte("not in the manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".wick-1.tmp"), []byte("a writer's temp file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, hs := newTestServer(t, Config{Models: []string{dir, testModelDirs[1]}})
	shard, _ := firstShard(t, dir)

	for _, target := range []string{
		"/models/cai-tiny/../plain-tiny/manifest.pb",
		"/models/cai-tiny/../../../../etc/passwd",
		"/models/cai-tiny/%2e%2e/%2e%2e/go.mod",
		"/models/cai-tiny/%252e%252e/%252e%252e/go.mod",
		"/models/cai-tiny/%252e%252e%252fplain-tiny%252fmanifest.pb",
		"/models/cai-tiny/..%255c..%255cgo.mod",
		"/models/cai-tiny/%25%32%65%25%32%65/go.mod",
		"/models/cai-tiny/%2E%2E/plain-tiny/manifest.pb",
		"/models/cai-tiny/..%2fplain-tiny%2fmanifest.pb",
		"/models/cai-tiny/..%2F..%2F..%2Fetc%2Fpasswd",
		"/models/cai-tiny/%2fetc%2fpasswd",
		"/models/cai-tiny/..\\plain-tiny\\manifest.pb",
		"/models/cai-tiny/%5c..%5cmanifest.pb",
		"/models/cai-tiny/.%2e/plain-tiny/manifest.pb",
		"/models/cai-tiny/./manifest.pb",
		"/models/cai-tiny//manifest.pb",
		"//etc/passwd",
		"/models//etc/passwd",
		"/models/cai-tiny/" + shard + "/../manifest.pb",
		"/models/cai-tiny/manifest.pb%00",
		"/models/cai-tiny/manifest.pb/",
		"/models/cai-tiny/%00",
		"/models/cai-tiny/",
		"/models/cai-tiny",
		"/models/cai-tiny/unlisted.txt",
		"/models/cai-tiny/escape.bin",
		"/models/cai-tiny/.wick-1.tmp",
		"/models/nope/manifest.pb",
		"/models/..%2f/manifest.pb",
		"/models/%2e%2e/go.mod",
		"/%2e%2e/go.mod",
		"/../go.mod",
		"/embed.go",
		"/notes.md",
		"/sub/",
		"/sub",
		"/sub/readme.txt.x",
		"/app.js.br",
		"/index.html/",
	} {
		t.Run(target, func(t *testing.T) {
			resp, body := rawGet(t, hs, target, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status %d, want 404 (body %.80q)", resp.StatusCode, body)
			}
			if bytes.Contains(body, []byte("secret")) {
				t.Error("served the file outside the model directory")
			}
		})
	}

	// A listed file swapped for a link out of the directory after startup
	// is refused too: files are opened through the directory's os.Root.
	t.Run("listed file becomes a symlink out", func(t *testing.T) {
		copyTo := filepath.Join(filepath.Dir(outside), shard)
		if err := os.Rename(filepath.Join(dir, shard), copyTo); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(copyTo, filepath.Join(dir, shard)); err != nil {
			t.Fatal(err)
		}
		resp, _ := rawGet(t, hs, "/models/cai-tiny/"+shard, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, want 404", resp.StatusCode)
		}
	})
}

// TestAssets checks content types, the choice of encoding by
// Accept-Encoding, and that each encoding has its own ETag.
func TestAssets(t *testing.T) {
	page := testAssets()
	var logs logBuffer
	_, hs := newTestServer(t, Config{Models: testModelDirs[:1], Logf: logs.logf})
	if !strings.Contains(logs.String(), "worker.js.gz does not decompress to worker.js") {
		t.Errorf("no log line about the stale worker.js.gz; logs:\n%s", logs.String())
	}
	for _, tc := range []struct {
		path, accept string
		wantEncoding string // "" for identity
		wantType     string
		wantBytes    []byte // the encoded body, when it must be exactly this
	}{
		{"/", "", "", "text/html; charset=utf-8", nil},
		{"/index.html", "gzip", "gzip", "text/html; charset=utf-8", nil},
		{"/app.js", "br", "br", "text/javascript; charset=utf-8", page["app.js.br"].Data},
		{"/app.js", "gzip, deflate, br", "br", "", page["app.js.br"].Data},
		{"/app.js", "gzip;q=1, br;q=0.5", "gzip", "", nil},
		{"/app.js", "br;q=0, gzip;q=0", "", "", nil},
		{"/app.js", "*", "br", "", nil},
		{"/app.js", "*;q=0.5, br;q=0", "gzip", "", nil},
		{"/app.js", "identity", "", "", nil},
		{"/app.js", "gzip;q=0.2, identity;q=0.5", "", "", nil},
		{"/app.js", "X-GZIP", "gzip", "", nil},
		{"/app.js", "gzip;q=bogus", "", "", nil},
		{"/app.js", "zstd", "", "", nil},
		{"/worker.js", "gzip", "gzip", "", nil}, // recompressed, not the stale file
		{"/wick.wasm", "br, gzip", "br", "application/wasm", nil},
		{"/wick.wasm", "", "", "application/wasm", nil},
		{"/tiny.css", "br, gzip", "", "text/css; charset=utf-8", nil}, // too small to compress
		{"/sub/icon.svg", "gzip", "", "image/svg+xml", nil},
	} {
		t.Run(tc.path+" "+tc.accept, func(t *testing.T) {
			resp, body := do(t, hs, "GET", tc.path, map[string]string{"Accept-Encoding": cmpOr(tc.accept, "identity;q=1")})
			if tc.accept == "" {
				resp, body = rawGet(t, hs, tc.path, nil) // no Accept-Encoding at all
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tc.wantEncoding {
				t.Errorf("Content-Encoding %q, want %q", got, tc.wantEncoding)
			}
			if tc.wantType != "" && resp.Header.Get("Content-Type") != tc.wantType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.wantType)
			}
			if tc.wantBytes != nil && !bytes.Equal(body, tc.wantBytes) {
				t.Error("body is not the precompressed file")
			}
			if resp.Header.Get("ETag") != sha256Tag(body) {
				t.Errorf("ETag %s, want the sha256 of the bytes sent", resp.Header.Get("ETag"))
			}
			name := strings.TrimPrefix(tc.path, "/")
			if name == "" {
				name = "index.html"
			}
			if got := decode(t, tc.wantEncoding, body); !bytes.Equal(got, page[name].Data) {
				t.Errorf("decoded body differs from %s", name)
			}
			compressible := len(page[name].Data) >= minCompress
			if vary := resp.Header.Get("Vary"); (vary == "Accept-Encoding") != compressible {
				t.Errorf("Vary %q for a file of %d bytes", vary, len(page[name].Data))
			}
		})
	}

	t.Run("conditional per encoding", func(t *testing.T) {
		br, _ := do(t, hs, "GET", "/wick.wasm", map[string]string{"Accept-Encoding": "br"})
		tag := br.Header.Get("ETag")
		if resp, _ := do(t, hs, "GET", "/wick.wasm", map[string]string{"Accept-Encoding": "br", "If-None-Match": tag}); resp.StatusCode != 304 {
			t.Errorf("same encoding, same ETag: status %d, want 304", resp.StatusCode)
		}
		if resp, _ := do(t, hs, "GET", "/wick.wasm", map[string]string{"Accept-Encoding": "identity", "If-None-Match": tag}); resp.StatusCode != 200 {
			t.Errorf("other encoding, brotli's ETag: status %d, want 200", resp.StatusCode)
		}
	})
	t.Run("range of an encoded body", func(t *testing.T) {
		_, whole := do(t, hs, "GET", "/wick.wasm", map[string]string{"Accept-Encoding": "gzip"})
		resp, part := do(t, hs, "GET", "/wick.wasm", map[string]string{"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
		if resp.StatusCode != 206 || !bytes.Equal(part, whole[:10]) || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("status %d, encoding %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(part))
		}
	})
}

// TestEmbeddedPage checks the real embedded page: index.html is served, the
// Go file that embeds it is not.
func TestEmbeddedPage(t *testing.T) {
	s, err := New(Config{Models: testModelDirs[:1], Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hs := httptest.NewServer(s)
	defer hs.Close()
	if resp, _ := do(t, hs, "GET", "/", nil); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("/: status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := do(t, hs, "GET", "/embed.go", nil); resp.StatusCode != 404 {
		t.Errorf("/embed.go: status %d, want 404", resp.StatusCode)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func decode(t *testing.T, encoding string, body []byte) []byte {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	switch encoding {
	case "br":
		r = brotli.NewReader(r)
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSecurityHeaders fails t unless resp carries the headers every
// response of the server has, whatever its status. The CSP is the
// caller's to check: its sources depend on the config.
func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	for k, want := range map[string]string{
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Opener-Policy":   "same-origin",
		"Cross-Origin-Embedder-Policy": "require-corp",
		"Cross-Origin-Resource-Policy": "same-origin",
		"Referrer-Policy":              "no-referrer",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

// TestSecurityHeaders checks the headers every kind of response carries,
// errors included.
func TestSecurityHeaders(t *testing.T) {
	_, hs := newTestServer(t, Config{Models: testModelDirs, ShardBase: "https://cdn.example.com:8443/wick/"})
	shard, _ := firstShard(t, testModelDirs[0])
	for _, path := range []string{"/", "/app.js", "/wick.wasm", "/models/", "/models/cai-tiny/manifest.pb", "/models/cai-tiny/" + shard, "/models/cai-tiny/nope", "/v1/models"} {
		t.Run(path, func(t *testing.T) {
			resp, _ := do(t, hs, "GET", path, nil)
			checkSecurityHeaders(t, resp)
			csp := resp.Header.Get("Content-Security-Policy")
			for _, want := range []string{"script-src 'self' 'wasm-unsafe-eval';", "connect-src 'self' https://cdn.example.com:8443;", "object-src 'none'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
		})
	}
}

// TestShardBase checks that -shard-base rewrites only the manifest's
// shard_base_url, and that the result still decodes.
func TestShardBase(t *testing.T) {
	for _, tc := range []struct{ base, want string }{
		{"https://cdn.example.com/wick", "https://cdn.example.com/wick/"},
		{"https://cdn.example.com/m/{model}/", "https://cdn.example.com/m/cai-tiny/"},
		{"http://127.0.0.1:9000/", "http://127.0.0.1:9000/"},
	} {
		t.Run(tc.base, func(t *testing.T) {
			_, hs := newTestServer(t, Config{Models: testModelDirs[:1], ShardBase: tc.base})
			resp, body := do(t, hs, "GET", "/models/cai-tiny/manifest.pb", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			served, err := format.DecodeManifest(body)
			if err != nil {
				t.Fatal(err)
			}
			if served.GetShardBaseUrl() != tc.want {
				t.Errorf("shard_base_url %q, want %q", served.GetShardBaseUrl(), tc.want)
			}
			if resp.Header.Get("ETag") != sha256Tag(body) {
				t.Errorf("ETag %s is not the served manifest's", resp.Header.Get("ETag"))
			}
			orig, _ := format.DecodeManifest(readFile(t, filepath.Join(testModelDirs[0], format.ManifestFile)))
			served.ShardBaseUrl = ""
			if !proto.Equal(orig, served) {
				t.Error("rewriting changed more than shard_base_url")
			}
			var list struct {
				Models []modelInfo `json:"models"`
			}
			_, lb := do(t, hs, "GET", "/models/", nil)
			if err := json.Unmarshal(lb, &list); err != nil || list.Models[0].ShardBaseURL != tc.want {
				t.Errorf("model list %s (%v)", lb, err)
			}
		})
	}
}

// TestModelList checks the JSON the page's model picker reads.
func TestModelList(t *testing.T) {
	_, hs := newTestServer(t, Config{Models: testModelDirs})
	resp, body := do(t, hs, "GET", "/models/", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var list struct {
		Models []modelInfo `json:"models"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Models) != 2 || list.Models[0].Name != "cai-tiny" || list.Models[1].Name != "plain-tiny" {
		t.Fatalf("models %+v", list.Models)
	}
	for i, m := range list.Models {
		var total int64
		entries, _ := os.ReadDir(testModelDirs[i])
		for _, e := range entries {
			info, _ := e.Info()
			total += info.Size()
		}
		if m.Sizes.Download != total {
			t.Errorf("%s: download_bytes %d, the directory holds %d", m.Name, m.Sizes.Download, total)
		}
		if r, _ := do(t, hs, "GET", m.Manifest, nil); r.StatusCode != 200 {
			t.Errorf("%s: manifest URL %s: status %d", m.Name, m.Manifest, r.StatusCode)
		}
		if m.Config.Layers == 0 || m.Config.ContextLen == 0 || m.Config.DType == "" || m.Sizes.KVBytes == 0 {
			t.Errorf("%s: config summary %+v", m.Name, m.Config)
		}
	}
	if c := list.Models[0].Config; c.KVHeads != 1 || c.LocalLayers == 0 || c.KVProducers >= c.Layers {
		t.Errorf("cai-tiny is multi-query with local layers and shared KV; summary says %+v", c)
	}
}

// TestNewErrors checks that a server does not start on a model directory
// it would serve wrongly.
func TestNewErrors(t *testing.T) {
	shard, _ := firstShard(t, testModelDirs[0])
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) Config
		want  string
	}{
		{"no models", func(t *testing.T) Config { return Config{} }, "no model"},
		{"missing dir", func(t *testing.T) Config { return Config{Models: []string{"../testdata/nope"}} }, "nope"},
		{"same name twice", func(t *testing.T) Config {
			return Config{Models: []string{testModelDirs[0], copyModel(t, testModelDirs[0], "cai-tiny")}}
		}, `both be served as "cai-tiny"`},
		{"name not a URL segment", func(t *testing.T) Config {
			return Config{Models: []string{copyModel(t, testModelDirs[0], "my model")}}
		}, "cannot name a model"},
		{"truncated shard", func(t *testing.T) Config {
			dir := copyModel(t, testModelDirs[0], "m")
			if err := os.Truncate(filepath.Join(dir, shard), 10); err != nil {
				t.Fatal(err)
			}
			return Config{Models: []string{dir}}
		}, "the manifest lists a file of"},
		{"missing tokenizer", func(t *testing.T) Config {
			dir := copyModel(t, testModelDirs[0], "m")
			os.Remove(filepath.Join(dir, "tokenizer.model"))
			return Config{Models: []string{dir}}
		}, "tokenizer.model"},
		{"shard links out of the directory", func(t *testing.T) Config {
			dir := copyModel(t, testModelDirs[0], "m")
			out := filepath.Join(t.TempDir(), shard)
			os.Rename(filepath.Join(dir, shard), out)
			if err := os.Symlink(out, filepath.Join(dir, shard)); err != nil {
				t.Fatal(err)
			}
			return Config{Models: []string{dir}}
		}, "escapes"},
		{"corrupt manifest", func(t *testing.T) Config {
			dir := copyModel(t, testModelDirs[0], "m")
			os.WriteFile(filepath.Join(dir, format.ManifestFile), []byte("not a manifest"), 0o644)
			return Config{Models: []string{dir}}
		}, "manifest.pb"},
		{"shard base not http", func(t *testing.T) Config { return Config{Models: testModelDirs[:1], ShardBase: "ftp://cdn/"} }, "http or https"},
		{"shard base relative", func(t *testing.T) Config { return Config{Models: testModelDirs[:1], ShardBase: "/shards/"} }, "http or https"},
		{"shard base with query", func(t *testing.T) Config { return Config{Models: testModelDirs[:1], ShardBase: "https://cdn/?sig=1"} }, "no query"},
		{"shard base with a CSP separator", func(t *testing.T) Config {
			return Config{Models: testModelDirs[:1], ShardBase: "https://cdn.example.com/;script-src 'unsafe-inline'/"}
		}, "character ';' is not allowed"},
		{"shard base with a quote", func(t *testing.T) Config {
			return Config{Models: testModelDirs[:1], ShardBase: "https://cdn.example.com/'unsafe-eval'/"}
		}, `character '\'' is not allowed`},
		{"shard base with a comma", func(t *testing.T) Config {
			return Config{Models: testModelDirs[:1], ShardBase: "https://cdn.example.com,evil.example/"}
		}, "character ',' is not allowed"},
		{"shard base with a space", func(t *testing.T) Config {
			return Config{Models: testModelDirs[:1], ShardBase: "https://cdn.example.com/a b/"}
		}, "character ' ' is not allowed"},
		{"shard base without a host", func(t *testing.T) Config { return Config{Models: testModelDirs[:1], ShardBase: "https:///{model}/"} }, "no host"},
		{"page without index.html", func(t *testing.T) Config {
			return Config{Models: testModelDirs[:1], Assets: fstest.MapFS{"app.js": {Data: []byte("x")}}}
		}, "index.html"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.setup(t)
			if cfg.Assets == nil {
				cfg.Assets = testAssets()
			}
			cfg.Logf = t.Logf
			s, err := New(cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestRun checks that Run serves until its context ends, then returns
// promptly and closes the listener.
func TestRun(t *testing.T) {
	s, err := New(Config{Models: testModelDirs[:1], Assets: testAssets(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/models/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still listening after shutdown")
	}
}

// logBuffer collects log lines from concurrent goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
