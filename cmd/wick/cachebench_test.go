package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var prefilledRow = regexp.MustCompile(`prefilled tokens\s+(\d+)\s+(\d+)`)

// TestCacheBench runs a small workload, plain and with post-history
// instructions: replies must not depend on the cache, the cache must serve
// part of the prompts, and instructions after the history must cost the
// cache (the next turn recomputes from where they were).
func TestCacheBench(t *testing.T) {
	work := benchWorkload(4, 3, 0.3, 1)
	if len(work) != 12 {
		t.Fatalf("%d turns, want 12", len(work))
	}
	prefilled := map[string]int{}
	for _, phi := range []string{"", "Keep your reply short and stay in character."} {
		var out bytes.Buffer
		if err := cacheBench(&out, "../../testdata/cai-tiny", "cpu", work, 4, 3, 8, 0, phi); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"token hit rate     0.0%", "replies identical  true", "MHA, all global, unshared"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("table lacks %q:\n%s", want, out.String())
			}
		}
		m := prefilledRow.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no prefilled row:\n%s", out.String())
		}
		prefilled[phi], _ = strconv.Atoi(m[2])
	}
	if prefilled[""] >= prefilled["Keep your reply short and stay in character."] {
		t.Errorf("with the prefix cache, %d tokens prefilled plain and %v with post-history instructions: want more with them", prefilled[""], prefilled)
	}
}
