package bench

import (
	"strings"
	"testing"
)

// TestParseGemv reads GEMV variants as -gemv takes them, and refuses
// malformed ones by name.
func TestParseGemv(t *testing.T) {
	for _, v := range []string{"", "8", "8x", "x8", "8x8x8", "ax8", "8 x 8"} {
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
}
