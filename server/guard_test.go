package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
)

// send makes one request with the given Host (empty: the server's own),
// headers and body.
func send(t *testing.T, hs interface {
	Client() *http.Client
}, url, method, host string, header map[string]string, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.String()
}

// TestHostCheck checks that a Host the server does not answer to is
// refused everywhere (page, model files, API: a DNS-rebinding page could
// otherwise read them all), naming -allow-host, and that loopback names and
// allowed hosts pass.
func TestHostCheck(t *testing.T) {
	_, hs := newAPIServer(t, Config{Models: testModelDirs[:1], AllowHosts: []string{"wick.lan"}})
	shard, _ := firstShard(t, testModelDirs[0])
	paths := []string{"/", "/models/", "/models/cai-tiny/manifest.pb", "/models/cai-tiny/" + shard, "/v1/models"}
	for _, host := range []string{"evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil.example", "[2001:db8::1]:8080"} {
		for _, p := range paths {
			resp, body := send(t, hs, hs.URL+p, "GET", host, nil, nil)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "-allow-host") {
				t.Errorf("Host %s, GET %s: status %d (%.100s), want 403 naming -allow-host", host, p, resp.StatusCode, body)
			}
		}
	}
	for _, host := range []string{"localhost", "localhost:8080", "LOCALHOST.", "app.localhost:1", "127.0.0.1", "127.1.2.3:9", "[::1]:8080", "wick.lan", "WICK.LAN:443"} {
		for _, p := range paths {
			if resp, body := send(t, hs, hs.URL+p, "GET", host, nil, nil); resp.StatusCode != http.StatusOK {
				t.Errorf("Host %s, GET %s: status %d (%.100s), want 200", host, p, resp.StatusCode, body)
			}
		}
	}
}

// TestHostPolicy checks which names a listen address and a certificate
// add.
func TestHostPolicy(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.ParseIP("192.168.1.5"), Mask: net.CIDRMask(24, 32)}, &net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)}}, nil
	}
	noIfaces := func() ([]net.Addr, error) { return nil, errors.New("must not be asked") }
	for _, tc := range []struct {
		addr      string
		certNames []string
		ifaces    func() ([]net.Addr, error)
		yes, no   []string
	}{
		{"127.0.0.1:8080", nil, noIfaces, []string{"127.0.0.1:8080", "localhost"}, []string{"192.168.1.5", "example.com"}},
		{"0.0.0.0:8080", nil, ifaces, []string{"192.168.1.5:8080", "[fe80::1]:8080"}, []string{"192.168.1.6", "example.com"}},
		{"[::]:8080", []string{"wick.example.org", "10.0.0.7"}, ifaces, []string{"192.168.1.5", "wick.example.org", "10.0.0.7:8443"}, []string{"other.example.org"}},
		{":8080", nil, ifaces, []string{"192.168.1.5"}, []string{"evil.example"}},
		{"192.168.1.5:8080", nil, noIfaces, []string{"192.168.1.5:8080"}, []string{"fe80::1"}},
		{"myhost.lan:8080", nil, noIfaces, []string{"MyHost.lan:8080"}, []string{"192.168.1.5"}},
	} {
		p, err := newHostPolicy(tc.addr, tc.certNames, nil, tc.ifaces)
		if err != nil {
			t.Fatalf("%s: %v", tc.addr, err)
		}
		for _, h := range tc.yes {
			if !p.allows(h) {
				t.Errorf("addr %s, cert %v: Host %s refused", tc.addr, tc.certNames, h)
			}
		}
		for _, h := range tc.no {
			if p.allows(h) {
				t.Errorf("addr %s, cert %v: Host %s allowed", tc.addr, tc.certNames, h)
			}
		}
	}
	if _, err := newHostPolicy("127.0.0.1:8080", nil, []string{"http://x/"}, noIfaces); err == nil {
		t.Error("-allow-host with a scheme accepted")
	}
}

// TestCrossSiteAPI checks that another site's page cannot drive the API: a
// cross-site text/plain POST (no preflight) and a foreign Origin are
// refused before anything runs, while same-origin pages, clients without
// an Origin and -allow-origin origins (with CORS headers) are served.
func TestCrossSiteAPI(t *testing.T) {
	s, hs := newAPIServer(t, Config{Models: testModelDirs[:1], AllowOrigins: []string{"https://app.example"}})
	generated := 0
	s.api.onFinish = func(string, engine.Finish) { generated++ }
	body, _ := json.Marshal(request("cai-tiny", false, 2, msg{"role": "user", "content": "Hi."}))
	url := hs.URL + "/v1/chat/completions"
	own := "http://" + hs.Listener.Addr().String()
	for _, tc := range []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantText   string
	}{
		{"cross-site text/plain", map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403, "-allow-origin https://evil.example"},
		{"foreign origin with JSON", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "-allow-origin"},
		{"null origin", map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403, "-allow-origin"},
		{"same origin, text/plain", map[string]string{"Content-Type": "text/plain", "Origin": own}, 415, "Content-Type: application/json"},
		{"no content type", map[string]string{}, 415, "Content-Type"},
		{"form", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"same origin", map[string]string{"Content-Type": "application/json", "Origin": own}, 200, ""},
		{"no origin, charset", map[string]string{"Content-Type": "application/json; charset=utf-8"}, 200, ""},
		{"allowed origin", map[string]string{"Content-Type": "application/json", "Origin": "https://app.example"}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := generated
			resp, got := send(t, hs, url, "POST", "", tc.header, body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(got, tc.wantText) {
				t.Fatalf("status %d (%.200s), want %d with %q", resp.StatusCode, got, tc.wantStatus, tc.wantText)
			}
			if ran := generated > before; ran != (tc.wantStatus == 200) {
				t.Errorf("generation ran: %v", ran)
			}
			acao := resp.Header.Get("Access-Control-Allow-Origin")
			if want := tc.header["Origin"]; tc.name == "allowed origin" && acao != want || tc.name != "allowed origin" && acao != "" {
				t.Errorf("Access-Control-Allow-Origin %q", acao)
			}
		})
	}
	t.Run("preflight", func(t *testing.T) {
		resp, _ := send(t, hs, url, "OPTIONS", "", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}, nil)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type") {
			t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = send(t, hs, url, "OPTIONS", "", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, nil)
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("foreign preflight: %d %v", resp.StatusCode, resp.Header)
		}
	})
	if _, err := New(Config{Models: testModelDirs[:1], Assets: testAssets(), AllowOrigins: []string{"https://app.example/path"}}); err == nil || !strings.Contains(err.Error(), "-allow-origin") {
		t.Errorf("origin with a path: %v", err)
	}
}
