package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestRanges checks the Range requests net/http answers wrongly or too
// generously: a zero-length suffix must be a 416 (it got a 206 with an
// invalid Content-Range), and a request of hundreds of ranges is refused
// (it was served in full, part by part).
func TestRanges(t *testing.T) {
	_, hs := newTestServer(t, Config{Models: testModelDirs[:1]})
	shard, data := firstShard(t, testModelDirs[0])
	size := len(data)
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	etag := sha256Tag(data)
	for _, tc := range []struct {
		name, rng, ifRange string
		want               int
		wantRange          string // Content-Range, for single ranges and 416
		wantBody           string // for single ranges
	}{
		{"zero suffix", "bytes=-0", "", 416, fmt.Sprintf("bytes */%d", size), ""},
		{"zero suffix, spaced", "bytes= -0 ", "", 416, fmt.Sprintf("bytes */%d", size), ""},
		{"zero suffix beside a range", "bytes=0-0,-0", "", 206, fmt.Sprintf("bytes 0-0/%d", size), string(data[:1])},
		{"one-byte suffix", "bytes=-1", "", 206, fmt.Sprintf("bytes %d-%d/%d", size-1, size-1, size), string(data[size-1:])},
		{"past the end", fmt.Sprintf("bytes=%d-", size), "", 416, fmt.Sprintf("bytes */%d", size), ""},
		{"500 ranges", many(500), "", 416, fmt.Sprintf("bytes */%d", size), ""},
		{"17 ranges", many(maxRanges + 1), "", 416, fmt.Sprintf("bytes */%d", size), ""},
		{"16 ranges", many(maxRanges), "", 206, "", ""},
		{"stale If-Range ignores a bad range", "bytes=-0", `"sha256:old"`, 200, "", ""},
		{"matching If-Range", "bytes=-0", etag, 416, fmt.Sprintf("bytes */%d", size), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Range": tc.rng}
			if tc.ifRange != "" {
				h["If-Range"] = tc.ifRange
			}
			resp, body := do(t, hs, "GET", "/models/cai-tiny/"+shard, h)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (Content-Range %q)", resp.StatusCode, tc.want, resp.Header.Get("Content-Range"))
			}
			if tc.wantRange != "" && resp.Header.Get("Content-Range") != tc.wantRange {
				t.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), tc.wantRange)
			}
			if tc.wantBody != "" && string(body) != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			if tc.want == http.StatusOK && len(body) != size {
				t.Errorf("body of %d bytes, want the whole %d", len(body), size)
			}
		})
	}
	// The page's assets go through the same path, encoded or not.
	resp, _ := do(t, hs, "GET", "/app.js", map[string]string{"Range": "bytes=-0", "Accept-Encoding": "br"})
	if resp.StatusCode != 416 || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("asset: status %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
}
