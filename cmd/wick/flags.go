package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/sample"
)

// modelFlags are the flags of every command that loads a model.
type modelFlags struct {
	dir     string
	backend string
	float32 bool
	context int
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.dir, "model", "models/wick-cai-21m", "model directory")
	fs.StringVar(&m.backend, "backend", "", "cpu or webgpu (default: webgpu where an adapter exists, else cpu)")
	fs.BoolVar(&m.float32, "f32", false, "run an int8 model in the float32 mode (dequantised weights, no activation or KV quantisation)")
	fs.IntVar(&m.context, "context", 0, "positions of KV cache per session (default: the model's context_len, at most 4096)")
}

func (m *modelFlags) load() (*engine.Model, error) {
	return engine.Load(m.dir, engine.Options{
		Backend: m.backend, Float32: m.float32, Context: m.context,
		Notice: func(s string) { fmt.Fprintln(os.Stderr, "wick:", s) },
	})
}

// genFlags are the flags of commands that generate text.
type genFlags struct {
	temp, topP, repPenalty float64
	topK, maxTokens        int
	seed                   uint64
}

func (g *genFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&g.temp, "temp", 0, "sampling temperature (0: greedy)")
	fs.Float64Var(&g.topP, "top-p", 1, "nucleus sampling: keep the smallest set of tokens with this much probability")
	fs.IntVar(&g.topK, "top-k", 0, "keep only the k most likely tokens (0: all)")
	fs.Float64Var(&g.repPenalty, "rep-penalty", 1, "repetition penalty over the conversation's tokens (1: off)")
	fs.IntVar(&g.maxTokens, "max-tokens", 256, "most tokens in a reply (0: until a stop token or the context limit)")
	fs.Uint64Var(&g.seed, "seed", 1, "random seed")
}

func (g *genFlags) params() engine.GenParams {
	return engine.GenParams{MaxTokens: g.maxTokens, Sample: sample.Params{
		Temperature: float32(g.temp), TopP: float32(g.topP), TopK: g.topK,
		RepetitionPenalty: float32(g.repPenalty), Seed: g.seed,
	}}
}
