package shaders

import (
	"strings"
	"testing"
)

// TestUnroll checks the #unroll directive: its body once per index with
// {{NAME}} the index as a u32 literal, counts from values, nesting, #if
// inside and around it, and the errors of malformed uses.
func TestUnroll(t *testing.T) {
	for _, tc := range []struct {
		name, src, want, err string
	}{
		{"literal count", "#unroll K 3\nx[{{K}}] = 1;\n#end", "x[0u] = 1;\nx[1u] = 1;\nx[2u] = 1;", ""},
		{"count from a value", "#unroll K RQ\ny{{K}};\n#end", "y0u;\ny1u;", ""},
		{"nested", "#unroll I 2\n#unroll J 2\n{{I}}{{J}}\n#end\n#end", "0u0u\n0u1u\n1u0u\n1u1u", ""},
		{"if inside", "#unroll K 2\n#if ON\na{{K}}\n#else\nb{{K}}\n#endif\n#end", "a0u\na1u", ""},
		{"inside an if not kept", "#if !ON\n#unroll K 2\nz{{K}}\n#end\n#endif\nw", "w", ""},
		{"zero times", "#unroll K 0\nz\n#end\nw", "w", ""},
		{"no end", "#unroll K 2\nz", "", "want #unroll NAME COUNT"},
		{"end alone", "z\n#end", "", "#end without #unroll"},
		{"bad count", "#unroll K WG2\nz\n#end", "", "is not a count"},
		{"name out of scope", "#unroll K 1\n#end\n{{K}}", "", "{{K}} has no value"},
		{"unbalanced if in body", "#unroll K 1\n#if ON\n#end", "", "#if without #endif"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			err := expandLines(&b, &Source{}, "t.wgsl", strings.Split(tc.src, "\n"), 0,
				map[string]bool{"ON": true}, map[string]string{"RQ": "2"}, 0)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(b.String(), "\n") {
				if l != "" {
					got = append(got, l)
				}
			}
			if s := strings.Join(got, "\n"); s != tc.want {
				t.Errorf("got\n%s\nwant\n%s", s, tc.want)
			}
		})
	}
}
