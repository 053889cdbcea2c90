package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/server"
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

func (m *modelFlags) load() (*engine.Model, error) { return m.loadNoticing(os.Stderr) }

// loadNoticing loads the model, writing its notices (a backend fallback)
// to w.
func (m *modelFlags) loadNoticing(w io.Writer) (*engine.Model, error) {
	return engine.Load(m.dir, engine.Options{
		Backend: m.backend, Float32: m.float32, Context: m.context,
		Notice: func(s string) { fmt.Fprintln(w, "wick:", s) },
	})
}

// loadQuietly loads the model with the GPU libraries' own messages silenced
// (unless verbose) and wick's notices written to w.
func loadQuietly(m *modelFlags, verbose bool, w io.Writer) (*engine.Model, error) {
	if verbose {
		return m.loadNoticing(w)
	}
	real, restore := silenceStderr()
	defer restore()
	if w == io.Writer(os.Stderr) {
		w = real
	}
	return m.loadNoticing(w)
}

// genFlags are the flags of commands that generate text. The defaults are
// the chat page's (temperature 0.8, top-p 0.95); -temp 0 is greedy.
type genFlags struct {
	temp, topP, repPenalty float64
	topK, maxTokens        int
	seed                   uint64 // 0: a fresh random seed for every reply
}

func (g *genFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&g.temp, "temp", server.DefaultTemperature, "sampling temperature (0: greedy)")
	fs.Float64Var(&g.topP, "top-p", server.DefaultTopP, "nucleus sampling: keep the smallest set of tokens with this much probability")
	fs.IntVar(&g.topK, "top-k", 0, "keep only the k most likely tokens (0: all)")
	fs.Float64Var(&g.repPenalty, "rep-penalty", 1, "repetition penalty over the conversation's tokens (1: off)")
	fs.IntVar(&g.maxTokens, "max-tokens", 256, "most tokens in a reply (0: until a stop token or the context limit)")
	fs.Uint64Var(&g.seed, "seed", 0, "random seed of the first reply, the next replies use the following seeds (0: a random seed for each reply)")
}

// params returns the generation parameters of reply number turn (0, 1,
// ...): every reply, a regenerated one included, samples with its own seed,
// so that regenerating gives another reply.
func (g *genFlags) params(turn int) engine.GenParams {
	seed := g.seed + uint64(turn)
	if g.seed == 0 {
		seed = rand.Uint64() | 1
	}
	return engine.GenParams{MaxTokens: g.maxTokens, Sample: sample.Params{
		Temperature: float32(g.temp), TopP: float32(g.topP), TopK: g.topK,
		RepetitionPenalty: float32(g.repPenalty), Seed: seed,
	}}
}
