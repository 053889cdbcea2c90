package server

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"
)

// Requests are checked before they are routed, against what a web page in
// the user's own browser could send:
//
//   - Host must be a name this server answers to, so that DNS rebinding (a
//     foreign name re-pointed at 127.0.0.1) cannot read the page, the
//     models or the API from another site's origin.
//   - The API refuses requests that carry a foreign Origin, unless it is
//     listed in Config.AllowOrigins; those get CORS headers. Browsers send
//     Origin on every cross-site POST, so a page elsewhere cannot drive
//     generation.
//   - POST /v1/chat/completions needs Content-Type: application/json, which
//     no cross-site form or no-cors fetch can send without a preflight.

// hostPolicy is the set of Host header names the server answers to.
type hostPolicy struct {
	names map[string]bool
}

// newHostPolicy allows loopback names, the listen address's host, on a
// wildcard address every interface address and the TLS certificate's
// names, and the extra names of -allow-host. ifaceAddrs lists the
// interface addresses (net.InterfaceAddrs on a real server).
func newHostPolicy(addr string, certNames, allow []string, ifaceAddrs func() ([]net.Addr, error)) (*hostPolicy, error) {
	p := &hostPolicy{names: map[string]bool{"localhost": true}}
	add := func(h string) { p.names[canonicalHost(h)] = true }
	for _, h := range allow {
		if h == "" || strings.ContainsAny(h, "/ ") {
			return nil, fmt.Errorf("server: -allow-host %q: want a host name or address, without scheme or path", h)
		}
		add(h)
	}
	for _, h := range certNames {
		add(h)
	}
	if addr == "" {
		return p, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		add(host)
		return p, nil
	}
	addrs, err := ifaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("server: interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			add(n.IP.String())
		}
	}
	return p, nil
}

// canonicalHost is h without port, brackets and trailing dot, lowercased.
func canonicalHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(h)
}

// allows reports whether a request's Host header names this server. Names
// under .localhost and loopback addresses always do (RFC 6761: they never
// leave the machine); an empty Host (HTTP/1.0) cannot come from a
// rebinding browser.
func (p *hostPolicy) allows(host string) bool {
	if host == "" {
		return true
	}
	h := canonicalHost(host)
	if p.names[h] || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// refuseHost answers a request for a host the server does not answer to.
func refuseHost(w http.ResponseWriter, r *http.Request) {
	msg := fmt.Sprintf("wick serve does not answer to host %q; if that name is meant to reach it, start it with -allow-host %s", r.Host, canonicalHost(r.Host))
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		writeError(w, http.StatusForbidden, apiErr{Message: msg, Type: "invalid_request_error"})
		return
	}
	http.Error(w, msg, http.StatusForbidden)
}

// ownOrigin is the origin the page this server hosts runs in.
func ownOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + strings.ToLower(r.Host)
}

// apiOrigin checks an API request's Origin. Requests without one (curl,
// SDKs) and from the server's own page pass; a listed origin passes and
// gets CORS headers (a preflight is answered here, with ok false so that
// nothing else runs); any other origin is refused, naming -allow-origin.
func (s *Server) apiOrigin(w http.ResponseWriter, r *http.Request) (ok bool) {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == ownOrigin(r) {
		return true
	}
	if !slices.Contains(s.allowOrigins, origin) {
		writeError(w, http.StatusForbidden, apiErr{
			Message: fmt.Sprintf("requests from origin %q are refused; start wick serve with -allow-origin %s to let pages there use the API", origin, origin),
			Type:    "invalid_request_error",
		})
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	// The API's responses are meant to be read by the pages it allows.
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// jsonBody answers 415 unless the request says its body is JSON.
func jsonBody(w http.ResponseWriter, r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return true
	}
	writeError(w, http.StatusUnsupportedMediaType, apiErr{
		Message: fmt.Sprintf("the Content-Type header is %q: send the body as JSON with Content-Type: application/json", ct),
		Type:    "invalid_request_error",
	})
	return false
}
