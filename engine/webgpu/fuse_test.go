package webgpu

import "testing"

// TestParseFuse reads the plans wick bench takes back into the names it
// prints, and refuses unknown parts naming them.
func TestParseFuse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		fuse     Fuse
	}{
		{"", "default", Fuse{}},
		{"default", "default", Fuse{}},
		{"none", "none", Fuse{None: true}},
		{"epi", "epi", Fuse{Epilogue: true}},
		{"epi+norm", "norm+epi", Fuse{Norm: true, Epilogue: true}},
		{"norm", "norm", Fuse{Norm: true}},
		{"gated+norm", "norm+gated", Fuse{Norm: true, Gated: true}},
		{"all+g32", "norm+gated+attn+g32", Fuse{Norm: true, Gated: true, Attention: true, Groups: 32}},
	} {
		f, err := ParseFuse(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if f != tc.fuse || f.String() != tc.want {
			t.Errorf("%q: %+v named %q, want %+v named %q", tc.in, f, f.String(), tc.fuse, tc.want)
		}
	}
	for _, bad := range []string{"norm+rows", "g0", "gx", "norm+"} {
		if _, err := ParseFuse(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
