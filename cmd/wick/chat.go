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
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/kv"
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
	save := fs.String("save", "", "after every turn, save the conversation (messages, tokens and KV) to this file")
	resume := fs.String("resume", "", "continue the conversation saved in this file, without recomputing it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *resume != "" && *system != "" {
		return errors.New("-system and -resume: a saved chat keeps its own system prompt")
	}
	return chatLoop(chatOpts{mf, gf, *system, *save, *resume}, os.Stdin, os.Stdout, os.Stderr)
}

type chatOpts struct {
	model                modelFlags
	gen                  genFlags
	system, save, resume string
}

// chatLoop reads messages and commands from stdin, streams replies to
// stdout and notices to stderr, until /quit or the end of stdin.
func chatLoop(o chatOpts, stdin io.Reader, stdout, stderr io.Writer) error {
	m, err := o.model.load()
	if err != nil {
		return err
	}
	defer m.Close()
	var s *engine.Session
	if o.resume != "" {
		s, err = resumeSession(m, o.resume, stdout, stderr)
	} else {
		s, err = m.NewSession(o.system)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	gf, save := o.gen, o.save
	fmt.Fprintf(stderr, "wick chat: %s on %s. Commands: /regen, /edit TEXT, /quit. Ctrl-C stops a reply.\n", m.Name, m.Backend.Name())
	in := bufio.NewReader(stdin)
	for {
		fmt.Fprint(stdout, "> ")
		line, err := in.ReadString('\n')
		if err == io.EOF && line == "" {
			fmt.Fprintln(stdout)
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
		print := func(t string) { fmt.Fprint(stdout, t) }
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
		fmt.Fprintln(stdout)
		switch {
		case errors.Is(err, engine.ErrContextFull):
			fmt.Fprintf(stderr, "wick: %v; start a new chat (or restart with a larger -context)\n", err)
		case errors.Is(err, context.Canceled):
			fmt.Fprintln(stderr, "wick: stopped")
		case err != nil:
			return err
		default:
			secs := time.Since(t0).Seconds()
			fmt.Fprintf(stderr, "[%d tokens, %.1f tok/s, %d prompt tokens (%d cached), %s]\n", len(r.Tokens), float64(len(r.Tokens))/secs, r.PromptTokens, r.CachedTokens, r.Finish)
		}
		// A stopped reply is kept in the conversation, so it is saved too.
		if save != "" && r != nil {
			if err := s.Save(save); err != nil {
				return err
			}
		}
	}
}

// resumeSession restores the conversation saved in path. A file from another
// model (or mode) still gives back its messages, which the next turn
// re-prefills; a damaged file is an error, and is left as it is.
func resumeSession(m *engine.Model, path string, stdout, stderr io.Writer) (*engine.Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := m.RestoreSession(data)
	if errors.Is(err, kv.ErrSnapshotModel) {
		fmt.Fprintf(stderr, "wick: %v\nwick: keeping its messages; the next turn recomputes them\n", err)
		s, err = m.ReplaySession(data)
	}
	if err != nil {
		return nil, fmt.Errorf("resume %s: %w", path, err)
	}
	msgs := s.Messages()
	fmt.Fprintf(stderr, "wick: resumed %d messages from %s, %d of %d tokens with their KV restored\n", len(msgs), path, s.KVLen(), len(s.Tokens()))
	if n := len(msgs); n > 0 && msgs[n-1].Role == chat.Assistant {
		fmt.Fprintf(stdout, "(last reply) %s\n", msgs[n-1].Content)
	}
	return s, nil
}
