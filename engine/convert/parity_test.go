package convert_test

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/convert/parity"
	"github.com/wick-run/wick/engine/cpu"
	"github.com/wick-run/wick/engine/model"
	_ "github.com/wick-run/wick/engine/webgpu" // the webgpu backend, checked against the same fixtures
	"github.com/wick-run/wick/internal/modeltest"
)

// The fixtures are made by scripts/make_hf_fixtures.py and
// scripts/make_hf_family_fixtures.py with transformers (see their doc
// comments); they are tiny random models, float32 or bfloat16 weights, the
// newer ones with tokenizer.json and a Jinja chat template.
var fixtures = []string{"gemma3", "llama", "llama32", "smollm2", "qwen2", "qwen3", "gemma2", "phi4", "phi35"}

// int8Cosine is the least cosine similarity of int8 logits to
// transformers' float32 ones, per fixture. The bar is 0.998, except for
// three fixtures whose residual stream is 48 wide: per-token int8
// activation scales over so few values are coarse. On every backend
// smollm2 measures 0.99791, qwen3 0.99524 and gemma2 0.99189 (its
// attention soft-cap of 5 and final one of 30 make the logits flat, so
// small errors weigh more); why qwen3 and gemma2 sit this low is not yet
// understood. Their float32 results match to 2e-6.
var int8Cosine = map[string]float64{"gemma3": 0.998, "llama": 0.998, "llama32": 0.998, "smollm2": 0.997, "qwen2": 0.998, "qwen3": 0.995, "gemma2": 0.991, "phi4": 0.998, "phi35": 0.998}

func loadFixture(t *testing.T, name string) *parity.Fixture {
	t.Helper()
	fx, err := parity.LoadFixture(filepath.Join("..", "..", "testdata", "hf", name))
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// TestParity converts each fixture in float32 and in int8 and checks
// wick's logits on each backend against transformers':
//   - float32: within 1e-4, relative to the largest |logit| of each
//     position, and identical greedy tokens;
//   - int8 (W8A8, int8 KV): every position's cosine similarity at least
//     int8Cosine's bar; greedy agreement is reported, not required.
func TestParity(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			fx := loadFixture(t, name)
			for _, dtype := range []model.DType{model.F32, model.Int8} {
				dir := t.TempDir()
				if err := fx.Convert(dir, dtype); err != nil {
					t.Fatal(err)
				}
				for _, backend := range []string{"cpu", "webgpu"} {
					t.Run(dtype.String()+"/"+backend, func(t *testing.T) {
						r, err := fx.Compare(dir, engine.Options{Backend: backend})
						if err != nil {
							t.Fatal(err)
						}
						t.Logf("max relative error %.3g, min cosine %.6f, greedy: first %d identical, %d/%d at equal steps",
							r.MaxRelErr, r.MinCosine, r.GreedyPrefix, r.GreedySame, len(fx.Greedy))
						if dtype == model.Int8 {
							if bar := int8Cosine[name]; r.MinCosine < bar {
								t.Errorf("min cosine similarity %.5f < %g", r.MinCosine, bar)
							}
							return
						}
						if r.MaxRelErr > 1e-4 {
							t.Errorf("max relative logit error %.3g > 1e-4", r.MaxRelErr)
						}
						if r.GreedySame != len(fx.Greedy) {
							t.Errorf("greedy tokens differ from step %d (transformers' margin there %.3f):\nwick         %v\ntransformers %v",
								r.GreedyPrefix, fx.Margins[r.GreedyPrefix], r.Greedy, fx.Greedy)
						}
					})
				}
			}
		})
	}
}

// TestRopeFreqs checks the converted configs' RoPE frequencies (Gemma's two
// thetas, Llama 3's scaling) against the inverse frequencies transformers
// computed, which it holds in float32.
func TestRopeFreqs(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		buffers map[string]model.AttnKind
	}{
		{"gemma3", map[string]model.AttnKind{
			"model.rotary_emb.full_attention_inv_freq":    model.Global,
			"model.rotary_emb.sliding_attention_inv_freq": model.Local,
		}},
		{"llama", map[string]model.AttnKind{"model.rotary_emb.inv_freq": model.Global}},
		// LongRoPE's short factors: the fixture's positions stay below the
		// original context (model's TestLongRope checks the long ones).
		{"phi35", map[string]model.AttnKind{"model.rotary_emb.inv_freq": model.Global}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fx := loadFixture(t, tc.fixture)
			dir := t.TempDir()
			if err := fx.Convert(dir, model.F32); err != nil {
				t.Fatal(err)
			}
			f := modeltest.Open(t, dir)
			for buf, kind := range tc.buffers {
				want, ok := fx.InvFreq[buf]
				if !ok {
					t.Fatalf("fixture has no %s (has %v)", buf, fx.InvFreq)
				}
				got := f.Config().Rope(kind).Freqs
				if len(got) != len(want) {
					t.Fatalf("%s: %d frequencies, transformers %d", buf, len(got), len(want))
				}
				for i := range got {
					if math.Abs(got[i]-want[i]) > 1e-6*want[i] {
						t.Errorf("%s[%d] = %.9g, transformers %.9g", buf, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// TestSlidingWindowSemantics shows that the fixture pins the window: wick's
// Window W (a query at p sees p-W+1..p) matches transformers' sliding_window
// W, and W-1 or W+1 would not.
func TestSlidingWindowSemantics(t *testing.T) {
	fx := loadFixture(t, "gemma3")
	dir := t.TempDir()
	if err := fx.Convert(dir, model.F32); err != nil {
		t.Fatal(err)
	}
	f, w := modeltest.Load(t, dir)
	for _, delta := range []int{-1, 0, 1} {
		cfg := *f.Config()
		cfg.Layers = append([]model.Layer(nil), cfg.Layers...)
		window := 0
		for i := range cfg.Layers {
			if cfg.Layers[i].Kind == model.Local {
				cfg.Layers[i].Window += delta
				window = cfg.Layers[i].Window
			}
		}
		worst := cpuRelErr(t, fx, &cfg, w)
		t.Logf("window %d: max relative error %.3g", window, worst)
		if match := worst <= 1e-4; match != (delta == 0) {
			t.Errorf("window %d (transformers' sliding_window%+d): max relative error %.3g", window, -delta, worst)
		}
	}
}

// cpuRelErr runs the fixture's prompt through engine/cpu with cfg and w
// and returns the largest error of a logit relative to the largest
// |logit| of its position, against transformers' logits.
func cpuRelErr(t *testing.T, fx *parity.Fixture, cfg *model.Config, w *model.Weights) float64 {
	t.Helper()
	m, err := cpu.New(cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := m.NewSequence(len(fx.Prompt))
	if err != nil {
		t.Fatal(err)
	}
	V := fx.Vocab
	logits := make([]float32, len(fx.Prompt)*V)
	if err := seq.Forward(fx.Prompt, 0, logits); err != nil {
		t.Fatal(err)
	}
	var worst float64
	for p := range fx.Prompt {
		var d, m float64
		for i := p * V; i < (p+1)*V; i++ {
			d = max(d, math.Abs(float64(logits[i]-fx.Logits[i])))
			m = max(m, math.Abs(float64(fx.Logits[i])))
		}
		worst = max(worst, d/m)
	}
	return worst
}

// TestLongRopeSemantics shows that the phi35 fixture pins LongRoPE's
// short factors and attention factor: without either, or with the long
// factors in force from position 1, wick's logits leave transformers'.
func TestLongRopeSemantics(t *testing.T) {
	fx := loadFixture(t, "phi35")
	dir := t.TempDir()
	if err := fx.Convert(dir, model.F32); err != nil {
		t.Fatal(err)
	}
	f, w := modeltest.Load(t, dir)
	for _, tc := range []struct {
		name string
		edit func(l *model.LongRope)
	}{
		{"as converted", func(l *model.LongRope) {}},
		{"no attention factor", func(l *model.LongRope) { l.AttnFactor = 1 }},
		{"short factors 1", func(l *model.LongRope) {
			l.ShortFactor = slices.Repeat([]float64{1}, len(l.ShortFactor))
		}},
		{"long factors from position 1", func(l *model.LongRope) { l.OriginalContext = 1 }},
	} {
		cfg := *f.Config()
		cfg.LongRope.ShortFactor = slices.Clone(cfg.LongRope.ShortFactor)
		tc.edit(&cfg.LongRope)
		worst := cpuRelErr(t, fx, &cfg, w)
		t.Logf("%s: max relative error %.3g", tc.name, worst)
		if match := worst <= 1e-4; match != (tc.name == "as converted") {
			t.Errorf("%s: max relative error %.3g", tc.name, worst)
		}
	}
}

// TestLongRopeBackends runs the phi35 fixture past its original context
// (64), where transformers' reference stops, on each backend: 100 tokens
// in one prefill, and the same as a 40-token prefill then one token at a
// time across position 64. wick rotates each position by its own factors,
// so both ways give the same logits, and the backends agree; a position
// that took the wrong factors, or a GPU chunk that took another's table,
// would not.
func TestLongRopeBackends(t *testing.T) {
	fx := loadFixture(t, "phi35")
	dir := t.TempDir()
	if err := fx.Convert(dir, model.F32); err != nil {
		t.Fatal(err)
	}
	const n, split = 100, 40
	tokens := make([]int32, n)
	for i := range tokens {
		tokens[i] = fx.Prompt[i%len(fx.Prompt)]
	}
	V := fx.Vocab
	run := func(backend string, whole bool) []float32 {
		m, err := engine.Load(dir, engine.Options{Backend: backend})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		seq, err := m.Backend.NewSequence(n)
		if err != nil {
			t.Fatal(err)
		}
		defer seq.Close()
		logits := make([]float32, n*V)
		if whole {
			if err := seq.Forward(tokens, 0, logits); err != nil {
				t.Fatal(err)
			}
			return logits
		}
		if err := seq.Forward(tokens[:split], 0, logits[:split*V]); err != nil {
			t.Fatal(err)
		}
		for p := split; p < n; p++ {
			if err := seq.Forward(tokens[p:p+1], p, logits[p*V:(p+1)*V]); err != nil {
				t.Fatal(err)
			}
		}
		return logits
	}
	ref := run("cpu", true)
	for _, tc := range []struct {
		backend string
		whole   bool
	}{{"cpu", false}, {"webgpu", true}, {"webgpu", false}} {
		got := run(tc.backend, tc.whole)
		var worst float64
		for p := 0; p < n; p++ {
			var d, m float64
			for i := p * V; i < (p+1)*V; i++ {
				d = max(d, math.Abs(float64(got[i]-ref[i])))
				m = max(m, math.Abs(float64(ref[i])))
			}
			worst = max(worst, d/m)
		}
		t.Logf("%s, one prefill %v: max relative error against the CPU's one prefill %.3g", tc.backend, tc.whole, worst)
		if worst > 1e-4 {
			t.Errorf("%s, one prefill %v: max relative error %.3g against the CPU's one prefill", tc.backend, tc.whole, worst)
		}
	}
}
