package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/wick-run/wick/engine"
)

func init() {
	commands["chat"] = command{"chat in the terminal", runChat}
}

func runChat(args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	var mf modelFlags
	var gf genFlags
	mf.register(fs)
	gf.register(fs)
	system := fs.String("system", "", "system prompt (a character card)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	defer m.Close()
	s, err := m.NewSession(*system)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(os.Stderr, "wick chat: %s on %s. Commands: /regen, /edit TEXT, /quit. Ctrl-C stops a reply.\n", m.Name, m.Backend.Name())
	in := bufio.NewReader(os.Stdin)
	for {
		fmt.Print("> ")
		line, err := in.ReadString('\n')
		if err == io.EOF && line == "" {
			fmt.Println()
			return nil
		} else if err != nil && err != io.EOF {
			return err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		t0 := time.Now()
		var r *engine.Reply
		print := func(t string) { fmt.Print(t) }
		switch {
		case line == "/quit":
			stop()
			return nil
		case line == "/regen":
			r, err = s.Regenerate(ctx, gf.params(), print)
		case strings.HasPrefix(line, "/edit "):
			r, err = s.EditLast(ctx, strings.TrimPrefix(line, "/edit "), gf.params(), print)
		default:
			r, err = s.Send(ctx, line, gf.params(), print)
		}
		stop()
		fmt.Println()
		switch {
		case errors.Is(err, engine.ErrContextFull):
			fmt.Fprintf(os.Stderr, "wick: %v; start a new chat (or restart with a larger -context)\n", err)
		case errors.Is(err, context.Canceled):
			fmt.Fprintln(os.Stderr, "wick: stopped")
		case err != nil:
			return err
		default:
			secs := time.Since(t0).Seconds()
			fmt.Fprintf(os.Stderr, "[%d tokens, %.1f tok/s, %d prompt tokens (%d cached), %s]\n", len(r.Tokens), float64(len(r.Tokens))/secs, r.PromptTokens, r.CachedTokens, r.Finish)
		}
	}
}
