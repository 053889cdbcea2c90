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
	system := fs.String("system", "", "system prompt, instead of a character")
	cardFile := fs.String("card", "", "chat with the character of this card (a shared V1, V2 or V3 card, JSON or PNG)")
	userName := fs.String("user", "", "your name in the conversation ({{user}} in a card)")
	persona := fs.String("persona", "", "who you are, for the character to know")
	save := fs.String("save", "", "after every turn, save the conversation (messages, tokens and KV) to this file")
	resume := fs.String("resume", "", "continue the conversation saved in this file, without recomputing it")
	verbose := fs.Bool("v", false, "also print the GPU libraries' own messages while the model loads")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *resume != "" && (*system != "" || *cardFile != "") {
		return errors.New("-system or -card with -resume: a saved chat keeps its own character")
	}
	if *system != "" && *cardFile != "" {
		return errors.New("-system and -card: give one")
	}
	o := chatOpts{model: mf, gen: gf, save: *save, resume: *resume, verbose: *verbose}
	switch {
	case *cardFile != "":
		data, err := os.ReadFile(*cardFile)
		if err != nil {
			return err
		}
		sc, err := chat.ParseCard(data)
		if err != nil {
			return fmt.Errorf("%s: %w", *cardFile, err)
		}
		o.card = sc.Card(*userName, *persona)
	case *system != "":
		o.system = *system
	default:
		o.card = chat.DefaultCard
		o.card.UserName, o.card.UserPersona = *userName, *persona
	}
	return chatLoop(o, os.Stdin, os.Stdout, os.Stderr)
}

type chatOpts struct {
	model        modelFlags
	gen          genFlags
	system       string    // a plain system prompt; else card
	card         chat.Card // the character, when system is empty and nothing is resumed
	save, resume string
	verbose      bool // let the GPU libraries print while the model loads
}

// chatTotals add up a chat's replies, for the line printed when it ends.
type chatTotals struct {
	replies, tokens int
	time            time.Duration
}

func (t chatTotals) String() string {
	rate := 0.0
	if t.time > 0 {
		rate = float64(t.tokens) / t.time.Seconds()
	}
	return fmt.Sprintf("[chat ended: %d replies, %d tokens, %.1f tok/s]", t.replies, t.tokens, rate)
}

// chatLoop reads messages and commands from stdin, streams replies to
// stdout and notices to stderr, until /quit or the end of stdin.
func chatLoop(o chatOpts, stdin io.Reader, stdout, stderr io.Writer) error {
	m, err := loadQuietly(&o.model, o.verbose, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	var s *engine.Session
	switch {
	case o.resume != "":
		s, err = resumeSession(m, o.resume, stdout, stderr)
	case o.system != "":
		s, err = m.NewSession(o.system)
	default:
		s, err = m.NewSession("")
		if err == nil {
			err = s.SetHistory(o.card.Messages())
			s.SetPostHistory(o.card.PostHistoryText())
		}
	}
	if err != nil {
		return err
	}
	defer s.Close()
	gf, save := o.gen, o.save
	who := "the model"
	if o.resume == "" && o.system == "" {
		who = o.card.Name
	}
	fmt.Fprintf(stderr, "wick chat: %s as %s, on %s. Commands: /regen, /continue, /edit TEXT, /quit. Ctrl-C stops a reply.\n", m.Name, who, m.Backend.Name())
	if msgs := s.Messages(); o.resume == "" && len(msgs) > 0 && msgs[len(msgs)-1].Role == chat.Assistant {
		fmt.Fprintf(stdout, "%s: %s\n", who, msgs[len(msgs)-1].Content)
	}
	var totals chatTotals
	defer func() { fmt.Fprintln(stderr, totals) }()
	in := bufio.NewReader(stdin)
	for turn := 0; ; turn++ {
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
		if notice := impossibleCommand(s, line); notice != "" {
			fmt.Fprintln(stderr, "wick: "+notice)
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		t0 := time.Now()
		var r *engine.Reply
		print := func(t string) { fmt.Fprint(stdout, t) }
		p := gf.params(turn)
		switch {
		case line == "/quit":
			stop()
			return nil
		case line == "/regen":
			r, err = s.Regenerate(ctx, p, print)
		case line == "/continue":
			r, err = s.Continue(ctx, p, print)
		case strings.HasPrefix(line, "/edit "):
			r, err = s.EditLast(ctx, strings.TrimPrefix(line, "/edit "), p, print)
		default:
			r, err = s.Send(ctx, line, p, print)
		}
		stop()
		fmt.Fprintln(stdout)
		if r != nil {
			el := time.Since(t0)
			totals.replies++
			totals.tokens += len(r.Tokens)
			totals.time += el
			fmt.Fprintf(stderr, "[%d tokens, %.1f tok/s, %d prompt tokens (%d cached), %s]\n", len(r.Tokens), float64(len(r.Tokens))/el.Seconds(), r.PromptTokens, r.CachedTokens, r.Finish)
		}
		switch {
		case errors.Is(err, engine.ErrContextFull):
			fmt.Fprintf(stderr, "wick: %v; start a new chat (or restart with a larger -context)\n", err)
		case errors.Is(err, context.Canceled):
			fmt.Fprintln(stderr, "wick: stopped")
		case err != nil:
			return err
		}
		// A stopped reply is kept in the conversation, so it is saved too.
		if save != "" && r != nil {
			if err := s.Save(save); err != nil {
				return err
			}
		}
	}
}

// impossibleCommand says why a command cannot run in the conversation as
// it stands ("" when it can): a chat command never ends the chat.
func impossibleCommand(s *engine.Session, line string) string {
	msgs := s.Messages()
	switch {
	case line == "/regen" && (len(msgs) == 0 || msgs[len(msgs)-1].Role != chat.Assistant):
		return "/regen: there is no reply to regenerate yet; send a message first"
	case line == "/continue" && (len(msgs) == 0 || msgs[len(msgs)-1].Role != chat.Assistant):
		return "/continue: the last message is not a reply; send a message first"
	case line == "/edit":
		return "/edit needs the new text: /edit TEXT"
	case strings.HasPrefix(line, "/edit "):
		for _, m := range msgs {
			if m.Role == chat.User {
				return ""
			}
		}
		return "/edit: there is no message of yours to edit yet; send one first"
	}
	return ""
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
