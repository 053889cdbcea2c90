// Package server is wick's HTTP server. It hosts the chat page and the
// engine's wasm module (embedded, precompressed), serves model directories
// to the page's downloader (Range requests, strong ETags from the sha256 the
// manifest records, immutable caching of content-addressed shards), and, on
// request, runs the engine natively behind an OpenAI-compatible API.
//
// Only files a manifest lists are served from a model directory: request
// paths are looked up in a table built at startup, never joined onto the
// file system, and files are opened through an os.Root so that a symlink
// cannot lead outside the directory.
package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/web"
)

// Config says what a Server serves.
type Config struct {
	// Models are model directories; each is served at /models/NAME/, NAME
	// being the directory's base name.
	Models []string
	// ShardBase, when set, is an absolute http(s) URL where the shards are
	// also found (a CDN or object store). Served manifests then point there
	// (their shard_base_url is rewritten) and the page may connect to its
	// origin. "{model}" in it is replaced by the model's NAME.
	ShardBase string
	// API runs the models natively and serves the OpenAI-compatible API at
	// /v1/ (see api.go).
	API bool
	// Engine says how the API loads models (backend, context).
	Engine engine.Options
	// Assets is the page's file tree; nil means web.Assets.
	Assets fs.FS
	// MaxBodyBytes caps an API request's body; 0 means 1 MiB.
	MaxBodyBytes int64
	// MaxQueue caps the API requests waiting for one model; 0 means 64.
	// More are refused with 429 rather than queued without bound.
	MaxQueue int
	// Logf receives what the server logs; nil means log.Printf.
	Logf func(format string, args ...any)

	// Addr is the address the server listens on, as given to -addr; its
	// host is a name the server answers to (on a wildcard address, every
	// interface address is). Empty means loopback names only.
	Addr string
	// CertNames are the DNS names and addresses of the TLS certificate,
	// which the server also answers to.
	CertNames []string
	// AllowHosts are more Host names to answer to (-allow-host).
	AllowHosts []string
	// AllowOrigins are origins ("https://app.example") whose pages may use
	// the API; they get CORS headers (-allow-origin).
	AllowOrigins []string
	// ServerName names this instance in the X-Wick-Server header of every
	// API response, so that behind a proxy one sees where a conversation
	// was routed (-server-name). Empty sends no header.
	ServerName string
}

// Server is an http.Handler for the page, the models and the API. Close it
// to release the model directories and engines.
type Server struct {
	logf   func(format string, args ...any)
	models []*servedModel // in the order of Config.Models
	byName map[string]*servedModel
	list   *blob // the JSON of /models/
	assets map[string]*asset
	api    *api // nil when the API is off
	csp    string
	mux    *http.ServeMux
	hosts  *hostPolicy
	// allowOrigins may use the API from their pages (see guard.go).
	allowOrigins []string
	// Run's timeouts when not zero, else ReadHeaderTimeout and
	// ReadTimeout (tests shorten them).
	readHeaderTimeout, readTimeout time.Duration
}

// New checks every model directory and prepares the page's assets (and, with
// Config.API, loads the engines). It fails on a model whose files do not
// match its manifest's sizes, a file that escapes its directory, two models
// with the same name, or a bad ShardBase.
func New(cfg Config) (*Server, error) {
	if len(cfg.Models) == 0 {
		return nil, errors.New("server: no model directories")
	}
	s := &Server{logf: cfg.Logf, byName: make(map[string]*servedModel)}
	if s.logf == nil {
		s.logf = log.Printf
	}
	if err := s.init(cfg); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// init does the work of New; on error, New closes what it opened.
func (s *Server) init(cfg Config) error {
	base, err := parseShardBase(cfg.ShardBase)
	if err != nil {
		return err
	}
	if s.hosts, err = newHostPolicy(cfg.Addr, cfg.CertNames, cfg.AllowHosts, net.InterfaceAddrs); err != nil {
		return err
	}
	for _, o := range cfg.AllowOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("server: -allow-origin %q: want an origin, scheme://host[:port], with no path", o)
		}
	}
	s.allowOrigins = cfg.AllowOrigins
	for _, dir := range cfg.Models {
		name := filepath.Base(filepath.Clean(dir))
		if err := checkModelName(name); err != nil {
			return fmt.Errorf("server: model %s: %w", dir, err)
		}
		if prev, ok := s.byName[name]; ok {
			return fmt.Errorf("server: models %s and %s would both be served as %q", prev.dir, dir, name)
		}
		// The engine's own check, so that the page is never offered a model
		// the engine would refuse.
		if _, err := engine.Check(dir); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		var modelBase string
		if base.url != "" {
			if modelBase, err = base.forModel(name); err != nil {
				return err
			}
		}
		m, err := openServedModel(name, dir, modelBase)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.models = append(s.models, m)
		s.byName[name] = m
		m.verifyInBackground(s.logf)
	}
	assets := cfg.Assets
	if assets == nil {
		assets = web.Assets
	}
	if s.assets, err = loadAssets(assets, s.logf); err != nil {
		return fmt.Errorf("server: page assets: %w", err)
	}
	if cfg.API {
		if s.api, err = newAPI(s.models, cfg); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if s.list, err = modelList(s.models, cfg.API); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.csp = contentSecurityPolicy(base.origin)
	s.routes()
	return nil
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	// Patterns carry no method: a method-less /v1/ pattern beside "GET /"
	// would be ambiguous to ServeMux. Handlers check methods themselves.
	s.mux.HandleFunc("/models/{$}", getOnly(s.serveList))
	s.mux.HandleFunc("/models/{name}/{file}", getOnly(s.serveModelFile))
	s.mux.HandleFunc("/", getOnly(s.serveAsset))
	if s.api != nil {
		s.api.routes(s.mux)
	} else {
		s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, apiErr{Message: "the API is off: start wick serve with -api", Type: "invalid_request_error"})
		})
	}
}

// getOnly answers 405 to anything but GET and HEAD.
func getOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

// ServeHTTP sets the security headers, checks the request's Host and, for
// the API, its Origin (guard.go), and routes it. Paths that are not in
// canonical form are refused outright, not redirected: then no second
// spelling of a path can reach what the first cannot.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header(), s.csp)
	if !canonicalPath(r.URL.Path) {
		http.NotFound(w, r)
		return
	}
	if !s.hosts.allows(r.Host) {
		refuseHost(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") && !s.apiOrigin(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Models returns the names the models are served under, in order.
func (s *Server) Models() []string {
	names := make([]string, len(s.models))
	for i, m := range s.models {
		names[i] = m.name
	}
	return names
}

// Close releases the model directories and the engines.
func (s *Server) Close() error {
	var errs []error
	if s.api != nil {
		errs = append(errs, s.api.close())
	}
	for _, m := range s.models {
		errs = append(errs, m.close())
	}
	return errors.Join(errs...)
}

// canonicalPath reports whether p is an absolute path with no empty, "." or
// ".." segments, no backslash and no NUL: the only form the server answers.
// One trailing slash is allowed (for "/" and "/models/").
func canonicalPath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// checkModelName accepts names that are one plain URL path segment.
func checkModelName(name string) error {
	if name == "" || name == "." || name == ".." || name == "/" {
		return fmt.Errorf("directory name %q cannot name a model", name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("directory name %q cannot name a model: use letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// setSecurityHeaders sets the headers every response carries. Cross-origin
// isolation (COOP + COEP) gives the page SharedArrayBuffer and
// Atomics.wait, which the worker's WASI shim may need; wasm-unsafe-eval lets
// it compile the engine's module and nothing else.
func setSecurityHeaders(h http.Header, csp string) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Embedder-Policy", "require-corp")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Referrer-Policy", "no-referrer")
}

// contentSecurityPolicy allows the page to load only its own scripts, the
// wasm module, and to fetch from its own origin and the shard base's.
func contentSecurityPolicy(shardOrigin string) string {
	connect := "'self'"
	if shardOrigin != "" {
		connect += " " + shardOrigin
	}
	return "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src " + connect +
		"; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}
