package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/wick-run/wick/wasm/host"
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
	wasmFile := fs.String("wasm", "", "run generation through this engine wasm module (e.g. web/wick.wasm) under wazero, as a browser would")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prompt == "" {
		return fmt.Errorf("-prompt is required")
	}
	if *wasmFile != "" {
		return genWasm(*wasmFile, &mf, &gf, *system, *prompt, *ids)
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
	r, err := s.Send(ctx, *prompt, gf.params(0), onText)
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

// genWasm is gen through the engine's wasm module under wazero: what a
// browser runs, with the GPU imports served by the native device.
func genWasm(file string, mf *modelFlags, gf *genFlags, system, prompt string, ids bool) error {
	wasm, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	cache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(dir, "wick", "wazero")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	t0 := time.Now()
	rt, err := host.New(ctx, wasm, host.Config{CacheDir: cache, Stderr: os.Stderr})
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	inst, err := rt.Load(ctx, host.LoadOptions{Dir: mf.dir, Backend: mf.backend, Context: mf.context, Float32: mf.float32})
	if err != nil {
		return err
	}
	defer inst.Close(context.Background())
	loaded := time.Since(t0)
	s, err := inst.NewSession(ctx, system)
	if err != nil {
		return err
	}
	p := gf.params(0)
	turn := host.Turn{Text: prompt, MaxTokens: p.MaxTokens, Temperature: p.Sample.Temperature, TopP: p.Sample.TopP,
		TopK: p.Sample.TopK, RepPenalty: p.Sample.RepetitionPenalty, Seed: p.Sample.Seed}
	t1 := time.Now()
	r, err := s.Send(ctx, turn, func(t host.Token) bool {
		if !ids {
			fmt.Print(t.Text)
		}
		return ctx.Err() == nil
	})
	if err != nil {
		return err
	}
	if ids {
		parts := make([]string, len(r.Tokens))
		for i, t := range r.Tokens {
			parts[i] = fmt.Sprint(t)
		}
		fmt.Print(strings.Join(parts, ","))
	}
	fmt.Println()
	el := time.Since(t1)
	fmt.Fprintf(os.Stderr, "wick: %d prompt tokens, %d generated, finish: %s, backend: %s (wasm, loaded in %v), %.1f tokens/s\n",
		r.Prompt, len(r.Tokens), r.Finish, inst.Info.Backend, loaded.Round(time.Millisecond), float64(len(r.Tokens))/el.Seconds())
	return nil
}
