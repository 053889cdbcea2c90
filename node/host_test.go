//go:build !js && !wasip1

// Package node_test checks wick's Node host (host.mjs): the browser runtime
// (web/driver.js, web/gpu.js, web/wick.wasm) on Dawn, Chrome's WebGPU, with
// its Tint compiler, against the native engine on wgpu-native. Both run on
// the same Vulkan driver here (lavapipe), so their tokens must be equal.
//
// It needs node and this folder's node_modules (`make deps` installs them
// with npm ci) and a current web/wick.wasm (`make wasm`): `make test` does
// both before the Go tests.
package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wick-run/wick/bench"
	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/gpu/dawn"
	"github.com/wick-run/wick/engine/prefix"
	"github.com/wick-run/wick/engine/sample"
	"github.com/wick-run/wick/engine/tokenizer"
	"github.com/wick-run/wick/engine/webgpu" // also registers the webgpu backend
	"github.com/wick-run/wick/internal/modeltest"
)

// hostReply is what `host.mjs gen -json FILE` writes.
type hostReply struct {
	Backend    string  `json:"backend"`
	Adapter    string  `json:"adapter"`
	GPUNote    string  `json:"gpuNote"`
	FaultError *string `json:"faultError"`
	Tokens     []int32 `json:"tokens"`
	Text       string  `json:"text"`
	Finish     string  `json:"finish"`
	Prompt     int     `json:"prompt_tokens"`
	Stats      struct {
		Decode map[string]float64 `json:"decode"` // the boundary's counters while decoding (web/gpu.js newCounters)
	} `json:"stats"`
}

// runHost runs host.mjs gen and returns its reply.
func runHost(t *testing.T, args ...string) hostReply {
	t.Helper()
	var r hostReply
	runHostJSON(t, "gen", &r, args...)
	return r
}

// runHostJSON runs host.mjs cmd with -json FILE and decodes FILE into out.
func runHostJSON(t *testing.T, cmd string, out any, args ...string) {
	t.Helper()
	if _, err := os.Stat("node_modules/webgpu"); err != nil {
		t.Fatalf("node/node_modules/webgpu is missing: run `make deps` (npm ci in node/): %v", err)
	}
	file := filepath.Join(t.TempDir(), "out.json")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "node", append([]string{"host.mjs", cmd, "-json", file}, args...)...)
	log, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("node host.mjs %s %v: %v\n%s", cmd, args, err, log)
	}
	data, err := os.ReadFile(file)
	if err == nil {
		err = json.Unmarshal(data, out)
	}
	if err != nil {
		t.Fatalf("host.mjs %s's output: %v\n%s", cmd, err, log)
	}
}

type genCase struct {
	name string
	p    sample.Params
}

// genCases are greedy decoding and the sampler's settings, the page's
// defaults (temperature 0.8, top-p 0.95) among them.
var genCases = []genCase{
	{"greedy", sample.Params{}},
	{"page-defaults", sample.Params{Temperature: 0.8, TopP: 0.95, Seed: 11}},
	{"top-k", sample.Params{Temperature: 1.1, TopK: 40, Seed: 5}},
	{"rep-penalty", sample.Params{Temperature: 0.7, TopP: 0.9, TopK: 20, RepetitionPenalty: 1.3, Seed: 23}},
	{"greedy-rep-penalty", sample.Params{RepetitionPenalty: 1.2}},
}

// dawnRun is one generation on the Node host: a setting and the tier of
// kernels it runs with.
type dawnRun struct {
	genCase
	tier string
}

// dawnRuns are every setting on Dawn's own tier, and greedy and the page's
// defaults on the fallback tier.
func dawnRuns() []dawnRun {
	var runs []dawnRun
	for _, tc := range genCases {
		runs = append(runs, dawnRun{tc, "all"})
	}
	for _, tc := range genCases[:2] {
		runs = append(runs, dawnRun{tc, "fallback"})
	}
	return runs
}

func hostArgs(p sample.Params) []string {
	f := func(v float32) string { return strconv.FormatFloat(float64(v), 'g', -1, 32) }
	return []string{"-temp", f(p.Temperature), "-top-p", f(p.TopP), "-top-k", strconv.Itoa(p.TopK),
		"-rep-penalty", f(p.RepetitionPenalty), "-seed", strconv.FormatUint(p.Seed, 10)}
}

// TestDawnHostFirstTokenWaitsOnce runs the host's bench on a prompt that
// the page reads in four steps (cai-tiny's rings, of window 8 and
// kv.RingRoom slots, end a step at each 32-token block of the prefix cache) and checks the driver's
// waits before the first token: one, for the last step's pick (the token
// drawn on the GPU: 8 bytes) with the blocks of the steps before it (each
// step used to wait for its logits, then again for its blocks). With the
// prefix cache off the prompt is one step and its wait reads the pick
// alone, greedy and with the page's default draw: no logits come back.
func TestDawnHostFirstTokenWaitsOnce(t *testing.T) {
	type waits struct {
		Vocab   int `json:"vocab"`
		Prefill struct {
			Steps int `json:"steps"`
			Waits []struct {
				Readbacks int `json:"readbacks"`
				Bytes     int `json:"bytes"`
			} `json:"waits"`
		} `json:"prefill"`
	}
	var out waits
	runHostJSON(t, "bench", &out, "-model", "../testdata/cai-tiny", "-prompt", "100", "-decode", "2", "-runs", "1", "-warm", "0")
	p := out.Prefill
	if p.Steps != 4 || len(p.Waits) != 1 || p.Waits[0].Readbacks != p.Steps {
		t.Errorf("%d steps waited %+v before the first token; want 4 steps and one wait, for the pick and the blocks of the three steps before the last", p.Steps, p.Waits)
	}
	for _, draw := range [][]string{nil, {"-page-sampling"}} {
		var out waits
		runHostJSON(t, "bench", &out, append([]string{"-model", "../testdata/cai-tiny", "-prompt", "100", "-decode", "2", "-runs", "1", "-warm", "0", "--cache-bytes=-1"}, draw...)...)
		p := out.Prefill
		if p.Steps != 1 || len(p.Waits) != 1 || p.Waits[0].Readbacks != 1 || p.Waits[0].Bytes != 8 {
			t.Errorf("%v, no prefix cache: %d steps waited %+v before the first token; want one step and one wait, for the pick alone (8 bytes; the logits are %d)", draw, p.Steps, p.Waits, 4*out.Vocab)
		}
	}
}

// TestDawnHostEqualsNative checks that the Node host (the page's wasm
// runtime and its JS bridge on Dawn) generates exactly the tokens of the
// Go engine run natively on the same device and tier of kernels, greedy
// and sampled, on both test models: with Dawn's tier (packed int8 dot
// products and subgroup reductions, which lavapipe offers through Dawn)
// against the engine on Dawn's own tier (engine/gpu/dawn), and with the
// fallback tier against the engine on wgpu-native (greedy and the page's
// defaults). Each pair runs the same kernels through the same compiler
// (Tint; on the fallback tier, Tint against naga, whose programs lavapipe
// was seen to run to the same bits), so their logits are equal bit for
// bit and so must their tokens be. The two tiers' logits are not: the
// subgroup reductions add in another order than the fallback's tree
// (README, Numerics), a few ULPs that move a sampled draw or a near tie
// (seen on cai-tiny when prefill attention changed variant); the tiers'
// agreement with engine/cpu is checked within a tolerance instead
// (engine/webgpu's TestModelMatchesCPUOnDawn).
func TestDawnHostEqualsNative(t *testing.T) {
	const system, prompt, maxTokens = "You are Ada, who draws maps.", "Hello! Where does the river go?", 24
	for _, dir := range []string{"../testdata/cai-tiny", "../testdata/plain-tiny"} {
		m, err := engine.Load(dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		engines := map[string]*engine.Model{"fallback": m, "all": loadOnDawn(t, dir)}
		for _, run := range dawnRuns() {
			tc, tier := run.genCase, run.tier
			t.Run(fmt.Sprintf("%s/%s/%s", filepath.Base(dir), tier, tc.name), func(t *testing.T) {
				s, err := engines[tier].NewSession(system)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				want, err := s.Send(context.Background(), prompt, engine.GenParams{Sample: tc.p, MaxTokens: maxTokens}, nil)
				if err != nil {
					t.Fatal(err)
				}
				got := runHost(t, append([]string{"-model", dir, "-system", system, "-prompt", prompt,
					"-max-tokens", strconv.Itoa(maxTokens), "-tier", tier}, hostArgs(tc.p)...)...)
				if !strings.HasPrefix(got.Backend, "webgpu") {
					t.Fatalf("the host ran on %q (%s), want webgpu", got.Backend, got.GPUNote)
				}
				if want := map[string]string{"all": "dot4+subgroups kernels", "fallback": "fallback kernels"}[tier]; !strings.Contains(got.Backend, want) {
					t.Fatalf("the host ran %q, want %s", got.Backend, want)
				}
				if !slices.Equal(got.Tokens, want.Tokens) {
					t.Errorf("Dawn host: %v\nengine:    %v (%s)", got.Tokens, want.Tokens, engines[tier].Backend.Name())
				}
				checkDecodeCrossings(t, got)
			})
		}
	}
}

// loadOnDawn loads the model in dir into the Go engine on Dawn with its
// every kernel feature (the host's "all" tier), its prefix cache off as
// the host's reference runs; it is closed when t ends.
func loadOnDawn(t *testing.T, dir string) *engine.Model {
	t.Helper()
	dev, err := dawn.Open(dawn.Options{Tier: dawn.TierAll})
	if err != nil {
		t.Fatalf("Dawn for the engine's reference (`make deps` installs it): %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	f, w := modeltest.Load(t, dir)
	gm, err := webgpu.New(dev, f.Config(), w, webgpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Assemble(f, f.Config(), dawnBackend{gm}, engine.Options{CacheBytes: -1})
	if err != nil {
		gm.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// dawnBackend adapts *webgpu.Model to engine.Backend (the wasm module's
// own adapter, on a device the test owns).
type dawnBackend struct{ *webgpu.Model }

func (b dawnBackend) NewSequence(n int) (engine.Sequence, error) { return b.Model.NewSequence(n) }

// checkDecodeCrossings checks what a reply's decoding made cross from the
// module into JS: per readback one command list (run) and one map, both
// per decode batch and per KV snapshot the prefix cache takes at each
// prefix.DefaultBlock boundary; beyond those, the few objects a sequence
// makes on its first batch and keeps (engine/webgpu's batch buffers, the
// sampling kernels and their bind groups) and each snapshot's readback buffer
// (made and freed). Nothing is written or asked for per batch.
func checkDecodeCrossings(t *testing.T, r hostReply) {
	t.Helper()
	c := r.Stats.Decode
	if c == nil {
		t.Fatal("the host's reply has no decode counters")
	}
	readbacks := c["import:map"]
	if readbacks == 0 || c["import:run"] != readbacks {
		t.Errorf("decoding made %v command lists for %v readbacks; want one per readback", c["import:run"], readbacks)
	}
	const once = 7 + 6 + 6 // buffers, the sampling kernels, their bind groups
	snapshots := r.Prompt/prefix.DefaultBlock + len(r.Tokens)/prefix.DefaultBlock + 1
	if other := c["imports"] - 2*readbacks; other < 0 || other > once+2*float64(snapshots) {
		t.Errorf("decoding crossed %v times beyond run and map, per import %v; want at most %d once and 2 per snapshot", other, c, once)
	}
	t.Logf("%d tokens, %v readbacks: %.2f crossings per token", len(r.Tokens), readbacks, c["imports"]/float64(max(1, len(r.Tokens)-1)))
}

// TestDawnHostRecoversFromGPUError forces a real WebGPU validation error
// into a turn (the driver's fault hook) and checks that the turn fails
// with WebGPU's words and the next one runs on the GPU, with the tokens a
// turn that never failed gives.
func TestDawnHostRecoversFromGPUError(t *testing.T) {
	dir := "../testdata/cai-tiny"
	r := runHost(t, "-model", dir, "-prompt", "Hi there.", "-max-tokens", "12", "-fault")
	if r.FaultError == nil || *r.FaultError == "" {
		t.Fatalf("the faulted turn did not fail: %+v", r)
	}
	if !strings.HasPrefix(r.Backend, "webgpu") {
		t.Fatalf("after the error the host runs on %q, want webgpu", r.Backend)
	}
	clean := runHost(t, "-model", dir, "-prompt", "Hi there.", "-max-tokens", "12")
	if !slices.Equal(r.Tokens, clean.Tokens) || r.Prompt != clean.Prompt {
		t.Errorf("after a failed turn: %v (prompt %d), a clean run: %v (prompt %d)", r.Tokens, r.Prompt, clean.Tokens, clean.Prompt)
	}
}

// hostProfile is the decode profile `host.mjs bench -profile -json FILE`
// writes.
type hostProfile struct {
	Profile struct {
		Steps   int    `json:"steps"`
		Method  string `json:"method"`
		Kernels []struct {
			Label     string  `json:"label"`
			PerStep   float64 `json:"perStep"`
			UsPerStep float64 `json:"usPerStep"`
		} `json:"kernels"`
	} `json:"profile"`
}

// TestDawnHostProfilesDecodeSteps checks that bench -profile's figures per
// decode step are a decode step's: every decode step runs the same
// dispatches, so each kernel's dispatches per step is a whole number, and
// one token is embedded per step. The turn's prefill, counted in with
// them, would add its dispatches to a few kernels (a fraction of a
// dispatch per step) and its GPU time to the total.
func TestDawnHostProfilesDecodeSteps(t *testing.T) {
	var r hostProfile
	runHostJSON(t, "bench", &r, "-model", "../testdata/cai-tiny", "-decode", "2", "-prompt", "8", "-profile", "-warm", "0")
	p := r.Profile
	if p.Steps <= 0 || len(p.Kernels) == 0 {
		t.Fatalf("no decode profile (does the adapter lack timestamp-query?): %+v", p)
	}
	embed := 0.0
	for _, k := range p.Kernels {
		if k.PerStep != float64(int(k.PerStep)) || k.PerStep < 1 {
			t.Errorf("%s: %g dispatches per decode step, want a whole number (the same dispatches every step)", k.Label, k.PerStep)
		}
		if k.UsPerStep < 0 {
			t.Errorf("%s: %g us per step", k.Label, k.UsPerStep)
		}
		if strings.HasPrefix(k.Label, "embed.") {
			embed += k.PerStep
		}
	}
	if embed != 1 {
		t.Errorf("%g embedding dispatches per decode step, want 1 (one token a step)", embed)
	}
}

// TestDawnHostSplitsWideTensors runs, through the page's runtime on Dawn, a
// model whose embedding (Gemma 3's 262144 x 640, 168 MB of int8) is larger
// than one storage binding of 128 MiB, WebGPU's default, which lavapipe
// gives as phones do. The engine splits every matrix by rows over as many
// buffers as it needs; the page must not refuse such a model (it refused
// any tensor larger than a binding), and its greedy tokens equal the
// native engine's.
func TestDawnHostSplitsWideTensors(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and runs a 190 MB model on the CPU adapter (about a minute); make test runs it")
	}
	c, err := bench.Shape("270m")
	if err != nil {
		t.Fatal(err)
	}
	c.Layers = c.Layers[:2] // the embedding is what matters; two layers keep it quick
	embedBytes := int64(c.Vocab) * int64(c.Hidden+4)
	d, err := dawn.Open(dawn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	binding := d.Info().Limits.MaxStorageBufferBindingSize
	d.Close()
	if binding >= embedBytes {
		t.Skipf("Dawn's adapter binds %d bytes at once, more than the %d-byte embedding: nothing to split here (lavapipe binds 128 MiB)", binding, embedBytes)
	}
	tokPath := "../testdata/tokenizer/tokenizer.model"
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.GemmaChatTemplate(tok)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := format.WriteModel(dir, "wide-embedding", c, bench.RandomInt8(c, 1), tokPath, tmpl, 32<<20); err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, engine.Options{Backend: "webgpu", CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ids := []int32{5, 6, 7}
	want, err := s.Complete(context.Background(), ids, engine.GenParams{MaxTokens: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := runHost(t, "-model", dir, "-ids", "5,6,7", "-max-tokens", "3")
	if !strings.HasPrefix(got.Backend, "webgpu") {
		t.Fatalf("the host ran on %q (%s), want webgpu", got.Backend, got.GPUNote)
	}
	if !slices.Equal(got.Tokens, want.Tokens) {
		t.Errorf("Dawn host: %v\nnative:    %v", got.Tokens, want.Tokens)
	}
}
