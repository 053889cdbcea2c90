package server

// Tests of what a probe of the server found sound, so that it stays so:
// half-closed and slow clients, and security headers on every status.
// Traversal (TestTraversal), bad API requests (TestAPIErrors) and
// concurrency equal to requests alone (TestConcurrentClients) have their own.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wick-run/wick/engine"
)

// runServer serves s with Run on a loopback listener until the test ends.
func runServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestHalfCloseKeepsStream sends a streamed request and half-closes the
// connection (SHUT_WR), as some clients do once the request is sent: the
// reply must still arrive whole (it used to be cancelled at the EOF).
func TestHalfCloseKeepsStream(t *testing.T) {
	s, _ := newAPIServer(t, Config{Models: testModelDirs[:1]})
	finished := make(chan engine.Finish, 1)
	s.api.onFinish = func(_ string, f engine.Finish) { finished <- f }
	// Let the EOF reach the server before the reply is done.
	s.api.onText = func(ctx context.Context) { time.Sleep(5 * time.Millisecond) }
	addr := runServer(t, s)
	body, _ := json.Marshal(request("cai-tiny", true, 16, msg{"role": "user", "content": "Tell me a story."}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", addr, len(body), body)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Errorf("status %d, stream ends %q; want the whole stream", resp.StatusCode, got[max(0, len(got)-80):])
	}
	if f := <-finished; f == engine.FinishCancelled {
		t.Error("the generation was cancelled by the half-close")
	}
}

// TestSlowClients checks that a client that sends its headers too slowly
// is cut off at the header timeout, and does not hold up others.
func TestSlowClients(t *testing.T) {
	s, err := New(Config{Models: testModelDirs[:1], Assets: testAssets(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.readHeaderTimeout = 300 * time.Millisecond
	addr := runServer(t, s)
	var slow []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nX-Slow: ", addr)
		slow = append(slow, c)
	}
	if resp, err := http.Get("http://" + addr + "/models/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a prompt client waited behind slow ones: %v", err)
	}
	start := time.Now()
	for _, c := range slow {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c) // returns when the server closes the connection
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("slow clients held their connections for %v; the header timeout is 300ms", el)
	}
}

// TestSecurityHeadersEveryStatus checks the security headers on responses
// of every status the server gives, errors included.
func TestSecurityHeadersEveryStatus(t *testing.T) {
	_, hs := newAPIServer(t, Config{Models: testModelDirs[:1], MaxBodyBytes: 2048})
	shard, data := firstShard(t, testModelDirs[0])
	shardURL := hs.URL + "/models/cai-tiny/" + shard
	big := []byte(`{"model": "cai-tiny", "messages": [{"role": "user", "content": "` + strings.Repeat("x", 4096) + `"}]}`)
	json := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name, method, url, host string
		header                  map[string]string
		body                    []byte
		want                    int
	}{
		{"200", "GET", hs.URL + "/", "", nil, nil, 200},
		{"206", "GET", shardURL, "", map[string]string{"Range": "bytes=0-9"}, nil, 206},
		{"304", "GET", shardURL, "", map[string]string{"If-None-Match": sha256Tag(data)}, nil, 304},
		{"400", "POST", hs.URL + "/v1/chat/completions", "", json, []byte("{"), 400},
		{"403 host", "GET", hs.URL + "/", "evil.example", nil, nil, 403},
		{"403 origin", "POST", hs.URL + "/v1/chat/completions", "", map[string]string{"Origin": "https://evil.example"}, nil, 403},
		{"404", "GET", hs.URL + "/nope", "", nil, nil, 404},
		{"404 non-canonical", "GET", hs.URL + "/a/../b", "", nil, nil, 404},
		{"405", "DELETE", hs.URL + "/", "", nil, nil, 405},
		{"413", "POST", hs.URL + "/v1/chat/completions", "", json, big, 413},
		{"415", "POST", hs.URL + "/v1/chat/completions", "", map[string]string{"Content-Type": "text/plain"}, []byte("{}"), 415},
		{"416", "GET", shardURL, "", map[string]string{"Range": "bytes=-0"}, nil, 416},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := send(t, hs, tc.url, tc.method, tc.host, tc.header, tc.body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			checkSecurityHeaders(t, resp)
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("CSP %q", csp)
			}
		})
	}
}
