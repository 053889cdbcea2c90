package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCacheBench runs a small workload: replies must not depend on the
// cache, and the cache must serve part of the prompts.
func TestCacheBench(t *testing.T) {
	work := benchWorkload(4, 3, 0.3, 1)
	if len(work) != 12 {
		t.Fatalf("%d turns, want 12", len(work))
	}
	var out bytes.Buffer
	if err := cacheBench(&out, "../../testdata/cai-tiny", "cpu", work, 4, 3, 8, 0); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"token hit rate     0.0%", "replies identical  true", "MHA, all global, unshared"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
