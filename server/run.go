package server

import (
	"cmp"
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"time"
)

// Timeouts of the HTTP server Run starts.
const (
	// ReadHeaderTimeout bounds a request's headers (slow-loris clients).
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included. net/http
	// lifts the read deadline once the handler has the request, so replies
	// that stream for longer are not cut.
	ReadTimeout = 60 * time.Second
	// IdleTimeout closes keep-alive connections left unused.
	IdleTimeout = 120 * time.Second
	// ShutdownGrace is how long Run lets responses in flight finish. Shard
	// downloads may take longer on a slow link; the page resumes them.
	ShutdownGrace = 10 * time.Second
)

// There is no WriteTimeout: it would cut shard downloads on slow links and
// long streamed replies, which have no natural bound. Dead peers are found
// by TCP keep-alives, which net/http enables on accepted connections.

// Run serves s on ln until ctx is done, then shuts down gracefully: it
// stops accepting, cancels the generations in flight (their clients keep
// what was sent), and waits up to ShutdownGrace for responses to finish
// before closing what is left. It returns nil after a shutdown that ctx
// asked for.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	base, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cmp.Or(s.readHeaderTimeout, ReadHeaderTimeout),
		ReadTimeout:       cmp.Or(s.readTimeout, ReadTimeout),
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithValue(base, shutdownKey{}, base) },
		ErrorLog:          log.New(logWriter(s.logf), "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	cancelRequests()
	grace, stop := context.WithTimeout(context.Background(), ShutdownGrace)
	defer stop()
	err := hs.Shutdown(grace)
	if err != nil {
		hs.Close()
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// logWriter sends the http.Server's own log lines to logf.
type logWriter func(string, ...any)

func (l logWriter) Write(p []byte) (int, error) {
	l("wick serve: %s", bytesTrimNewline(p))
	return len(p), nil
}

func bytesTrimNewline(p []byte) string {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	return string(p)
}
