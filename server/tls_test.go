package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

var testIfaces = func() ([]net.Addr, error) {
	return []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("192.168.1.5"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("fd00::5"), Mask: net.CIDRMask(64, 128)},
		&net.IPNet{IP: net.ParseIP("fe80::5"), Mask: net.CIDRMask(64, 128)},
	}, nil
}

// TestURLs checks that the printed URLs are ones a browser can open: never
// a wildcard address.
func TestURLs(t *testing.T) {
	for _, tc := range []struct {
		addr *net.TCPAddr
		want []string
	}{
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, []string{"http://127.0.0.1:8080/", "http://192.168.1.5:8080/", "http://[fd00::5]:8080/"}},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 80}, []string{"http://127.0.0.1:80/", "http://192.168.1.5:80/", "http://[fd00::5]:80/"}},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 9}, []string{"http://[::1]:9/"}},
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 9}, []string{"http://192.168.1.5:9/"}},
	} {
		got, err := URLs(tc.addr, "http", testIfaces)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("URLs(%v) = %v, %v; want %v", tc.addr, got, err, tc.want)
		}
		for _, u := range got {
			if strings.Contains(u, "[::]") || strings.Contains(u, "0.0.0.0") {
				t.Errorf("URL %s names a wildcard address", u)
			}
		}
	}
}

// TestSelfSigned serves over TLS with a self-signed certificate: it names
// the interface addresses and loopback, the server answers to those names,
// and the printed SPKI hash is the served certificate's.
func TestSelfSigned(t *testing.T) {
	cfg, names, spki, err := SelfSigned("0.0.0.0:0", testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"localhost", "127.0.0.1", "::1", "192.168.1.5", "fd00::5"} {
		if !slices.Contains(names, want) {
			t.Errorf("certificate names %v lack %s", names, want)
		}
	}
	s, err := New(Config{Models: testModelDirs[:1], Assets: testAssets(), Logf: t.Logf, Addr: "127.0.0.1:0", CertNames: names})
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
	go func() { done <- s.Run(ctx, tls.NewListener(ln, cfg)) }()
	defer func() { cancel(); <-done }()

	pool := x509.NewCertPool()
	pool.AddCert(cfg.Certificates[0].Leaf)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	urls, err := URLs(ln.Addr(), "https", testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"", "192.168.1.5"} {
		req, _ := http.NewRequest("GET", urls[0]+"models/", nil)
		if host != "" {
			req.Host = host // a name from the certificate
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %q): %v", urls[0], host, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %q: status %d", host, resp.StatusCode)
		}
		sum := sha256.Sum256(resp.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
		if got := base64.StdEncoding.EncodeToString(sum[:]); got != spki {
			t.Errorf("served SPKI %s, printed %s", got, spki)
		}
	}
}
