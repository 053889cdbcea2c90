package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
)

func init() {
	commands["gen"] = command{"generate a reply to one message", runGen}
}

func runGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	var mf modelFlags
	var gf genFlags
	mf.register(fs)
	gf.register(fs)
	prompt := fs.String("prompt", "", "the user message")
	system := fs.String("system", "", "system prompt (a character card)")
	ids := fs.Bool("ids", false, "print the generated token ids instead of the text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prompt == "" {
		return fmt.Errorf("-prompt is required")
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	onText := func(t string) { fmt.Print(t) }
	if *ids {
		onText = nil
	}
	r, err := s.Send(ctx, *prompt, gf.params(), onText)
	if err != nil {
		return err
	}
	if *ids {
		parts := make([]string, len(r.Tokens))
		for i, t := range r.Tokens {
			parts[i] = fmt.Sprint(t)
		}
		fmt.Print(strings.Join(parts, ","))
	}
	fmt.Println()
	fmt.Fprintf(os.Stderr, "wick: %d prompt tokens, %d generated, finish: %s, backend: %s\n", r.PromptTokens, len(r.Tokens), r.Finish, m.Backend.Name())
	return nil
}
