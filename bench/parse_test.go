package bench

import (
	"github.com/wick-run/wick/engine/webgpu"
	"strings"
	"testing"
)

// TestParseGemv reads GEMV variants as -gemv takes them, and refuses
// malformed ones by name.
func TestParseGemv(t *testing.T) {
	for _, v := range []string{"", "8", "8x", "x8", "8x8x8", "ax8", "8 x 8", "256x8/", "256x8/0", "256x8/-4", "256x8/a", "/512"} {
		if _, err := ParseGemv(v); err == nil {
			t.Errorf("%q: accepted", v)
		}
	}
	for _, v := range strings.Split(Defaults.Gemv, ",") {
		g, err := ParseGemv(v)
		if err != nil {
			t.Fatalf("default %q: %v", v, err)
		}
		if g.WG <= 0 || g.TPR <= 0 || g.FMA != (v[len(v)-1] == 'f') {
			t.Errorf("%q read as %+v", v, g)
		}
	}
	for v, want := range map[string]webgpu.Gemv{
		"256x8/512":    {WG: 256, TPR: 8, Groups: 512},
		"128x16f/1024": {WG: 128, TPR: 16, FMA: true, Groups: 1024},
	} {
		if g, err := ParseGemv(v); err != nil || g != want {
			t.Errorf("%q read as %+v (%v), want %+v", v, g, err, want)
		}
	}
}

// TestParsePlansTile reads the prefill tile, split and flash parts of -plans, names them
// back as they were written (flash-regs, which earlier plans named, as the
// default it now is), and refuses tiles the product has not.
func TestParsePlansTile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		tile int
	}{{"none", 0}, {"none+tile64", 64}, {"none+tile128", 128}, {"norm+tile128+reread", 128}, {"none+split", 0}, {"epi+flash-first", 0}, {"epi+flash-regs", 0}, {"epi+flash32", 0}} {
		ps, err := ParsePlans(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if len(ps) != 1 || ps[0].Tile != tc.tile || ps[0].Split != strings.Contains(tc.in, "split") || ps[0].FlashFirst != strings.Contains(tc.in, "flash-first") || (ps[0].FlashK == 32) != strings.Contains(tc.in, "flash32") {
			t.Fatalf("%q read as %+v, want tile %d", tc.in, ps, tc.tile)
		}
		again, err := ParsePlans(ps[0].String())
		if err != nil || again[0] != ps[0] {
			t.Errorf("%q names itself %q, read back as %+v (%v)", tc.in, ps[0].String(), again, err)
		}
	}
	for _, v := range []string{"none+tile", "none+tile32", "none+tilex", "none+tile256", "epi+flash7", "epi+flashx", "epi+flash-last"} {
		if _, err := ParsePlans(v); err == nil {
			t.Errorf("%q: accepted", v)
		}
	}
}

// TestParsePlansEpilogue reads the side-by-side of the gated epilogue
// (the default decode plan) and the plan before it, and names each back.
func TestParsePlansEpilogue(t *testing.T) {
	ps, err := ParsePlans("none,epi,epi+g64,norm+epi+reread")
	if err != nil {
		t.Fatal(err)
	}
	want := []webgpu.Fuse{{None: true}, {Epilogue: true}, {Epilogue: true, Groups: 64}, {Norm: true, Epilogue: true}}
	if len(ps) != len(want) {
		t.Fatalf("%d plans, want %d", len(ps), len(want))
	}
	for i, p := range ps {
		if p.Fuse != want[i] {
			t.Errorf("plan %d read as %+v, want %+v", i, p.Fuse, want[i])
		}
		again, err := ParsePlans(p.String())
		if err != nil || again[0] != p {
			t.Errorf("plan %d names itself %q, read back as %+v (%v)", i, p.String(), again, err)
		}
	}
}

// TestParsePlansWhole reads the whole-step attention's bound (wholeN; whole0
// never), names it back, and refuses what is no count of keys.
func TestParsePlansWhole(t *testing.T) {
	for _, tc := range []struct {
		in    string
		whole int
	}{{"epi", 0}, {"epi+whole0", -1}, {"epi+whole512", 512}, {"none+whole1+room32", 1}, {"attn-group+whole64", 64}} {
		ps, err := ParsePlans(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if len(ps) != 1 || ps[0].AttnWhole != tc.whole {
			t.Fatalf("%q read as %+v, want AttnWhole %d", tc.in, ps, tc.whole)
		}
		again, err := ParsePlans(ps[0].String())
		if err != nil || again[0] != ps[0] {
			t.Errorf("%q names itself %q, read back as %+v (%v)", tc.in, ps[0].String(), again, err)
		}
	}
	for _, v := range []string{"epi+whole", "epi+whole-1", "epi+wholex", "epi+whole 8"} {
		if _, err := ParsePlans(v); err == nil {
			t.Errorf("%q: accepted", v)
		}
	}
}
