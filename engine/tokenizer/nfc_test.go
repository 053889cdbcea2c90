package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// TestNFCMatchesXText compares nfc and nfkc with golang.org/x/text/unicode/norm's
// NFC and NFKC, which its tables come from: every code point alone, every code
// point after a letter and before a combining mark, and random strings of
// letters, combining marks of every class, Hangul jamo and syllables and
// composites, with fewer than 30 marks in a row (see nfc on the
// Stream-Safe Text Format).
func TestNFCMatchesXText(t *testing.T) {
	if nfcUnicodeVersion != norm.Version {
		t.Fatalf("nfc_tables.go is for Unicode %s, x/text has %s: go generate ./engine/tokenizer", nfcUnicodeVersion, norm.Version)
	}
	bad := 0
	check := func(s string) {
		if got, want := nfc(s), norm.NFC.String(s); got != want && bad < 10 {
			bad++
			t.Errorf("%+q: nfc %+q, x/text %+q", s, got, want)
		}
		if got, want := nfkc(s), norm.NFKC.String(s); got != want && bad < 10 {
			bad++
			t.Errorf("%+q: nfkc %+q, x/text %+q", s, got, want)
		}
	}
	for r := rune(0); r <= 0x10FFFF; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		check(string(r))
		if r >= 0x80 && r < 0x30000 {
			check("a" + string(r) + "\u0301")
		}
	}
	var pool []rune
	for r := rune(0); r < 0x30000; r++ {
		if combiningClass(r) != 0 || r >= 0x1100 && r < 0x1200 || r >= 0xAC00 && r < 0xAC40 || r < 0x250 && r > 0x40 {
			pool = append(pool, r)
		}
	}
	for i, start := range nfcDecomp.starts {
		for k := start; k < start+rune(nfcDecomp.counts[i]); k++ {
			pool = append(pool, k)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		var sb strings.Builder
		marks := 0
		for n := 1 + rng.IntN(8); n > 0; n-- {
			r := pool[rng.IntN(len(pool))]
			if combiningClass(r) != 0 {
				if marks++; marks > 20 {
					continue
				}
			} else {
				marks = 0
			}
			sb.WriteRune(r)
		}
		check(sb.String())
	}
	for _, s := range []string{"", "plain ASCII", "café", "cafe\u0301", "A\u030A\u0323", "\u1100\u1161\u11A8", "\u0301leading mark", "Å (Å) ﬁ ｶ"} {
		check(s)
	}
}
