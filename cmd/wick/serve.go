package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/server"
)

func init() {
	commands["serve"] = command{"serve the chat page and models over HTTP (and an OpenAI-compatible API with -api)", runServe}
}

// dirList is a flag that may be given several times.
type dirList []string

func (d *dirList) String() string { return strings.Join(*d, ",") }

func (d *dirList) Set(v string) error {
	*d = append(*d, v)
	return nil
}

// The flags -allow-host and -allow-origin reuse dirList: a list of strings,
// one per use of the flag.

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var models dirList
	fs.Var(&models, "model", "model directory, served at /models/NAME/ with NAME its base name (repeat for several; default models/wick-cai-21m)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	shardBase := fs.String("shard-base", "", "URL where the shards are also served (a CDN); manifests point there ({model} stands for NAME)")
	api := fs.Bool("api", false, "also run the models natively and serve an OpenAI-compatible API at /v1/")
	backend := fs.String("backend", "", "API backend: cpu or webgpu (default: webgpu where an adapter exists, else cpu)")
	f32 := fs.Bool("f32", false, "API: run an int8 model in the float32 mode")
	ctxLen := fs.Int("context", 0, "API: positions of KV cache per conversation (default: the model's context_len, at most 4096)")
	queue := fs.Int("queue", 0, "API: most requests waiting per model before 429 (default 64)")
	serverName := fs.String("server-name", "", "API: this instance's name in the X-Wick-Server response header (default: host name and -addr port)")
	var allowHosts, allowOrigins dirList
	fs.Var(&allowHosts, "allow-host", "also answer to this Host name (repeat for several); loopback names, the -addr host and the certificate's names always work")
	fs.Var(&allowOrigins, "allow-origin", "let pages of this origin (https://app.example) use the API, with CORS (repeat for several)")
	tlsCert := fs.String("tls-cert", "", "serve https with this PEM certificate (with -tls-key)")
	tlsKey := fs.String("tls-key", "", "the PEM private key of -tls-cert")
	selfSigned := fs.Bool("tls-self-signed", false, "serve https with a fresh self-signed certificate for the interface addresses; prints its SPKI hash for Chromium")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (models are given with -model DIR)", fs.Arg(0))
	}
	if len(models) == 0 {
		models = dirList{"models/wick-cai-21m"}
	}
	var tlsCfg *tls.Config
	var certNames []string
	var spki string
	var err error
	switch {
	case *selfSigned && (*tlsCert != "" || *tlsKey != ""):
		return fmt.Errorf("-tls-self-signed and -tls-cert/-tls-key exclude each other")
	case (*tlsCert == "") != (*tlsKey == ""):
		return fmt.Errorf("-tls-cert and -tls-key go together")
	case *tlsCert != "":
		tlsCfg, certNames, err = server.LoadCert(*tlsCert, *tlsKey)
	case *selfSigned:
		tlsCfg, certNames, spki, err = server.SelfSigned(*addr, net.InterfaceAddrs)
	}
	if err != nil {
		return err
	}
	if *serverName == "" {
		_, port, err := net.SplitHostPort(*addr)
		if err != nil {
			return fmt.Errorf("-addr %q: %w", *addr, err)
		}
		*serverName = server.DefaultServerName(os.Hostname, port)
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	srv, err := server.New(server.Config{
		Models: models, ShardBase: *shardBase, API: *api, MaxQueue: *queue, Logf: logf,
		Engine: engine.Options{Backend: *backend, Float32: *f32, Context: *ctxLen},
		Addr:   *addr, CertNames: certNames, AllowHosts: allowHosts, AllowOrigins: allowOrigins,
		ServerName: *serverName,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
		ln = tls.NewListener(ln, tlsCfg)
	}
	urls, err := server.URLs(ln.Addr(), scheme, net.InterfaceAddrs)
	if err != nil {
		return err
	}
	url := urls[0]
	fmt.Printf("wick serve: %s\n", url)
	for _, other := range urls[1:] {
		fmt.Printf("  also at %s\n", other)
	}
	if spki != "" {
		fmt.Printf("  self-signed certificate, SPKI sha256 %s\n  (chromium --ignore-certificate-errors-spki-list=%s)\n", spki, spki)
	}
	// A model directory has no index page; its manifest is what answers.
	for _, name := range srv.Models() {
		fmt.Printf("  model %s: %smodels/%s/manifest.pb\n", name, url, name)
	}
	if *api {
		fmt.Printf("  API at %sv1/ (POST chat/completions, GET models)\n", url)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx, ln); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wick serve: stopped")
	return nil
}
