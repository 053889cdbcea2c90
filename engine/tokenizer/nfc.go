package tokenizer

import (
	"slices"
	"sort"
	"sync"
	"unicode/utf8"
)

//go:generate sh -c "go run ./internal/nfcgen > nfc_tables.go"

// nfc returns s in Unicode Normalization Form C (Qwen's tokenizer.json
// normalizer), by UAX #15's algorithm: full canonical decomposition,
// canonical ordering of combining marks, then canonical composition.
//
// golang.org/x/text/unicode/norm does this, and is what the tables
// (nfc_tables.go) are generated from and what the tests compare with; it is
// not linked because its tables for all four forms added 56 KB to the
// compressed chat module, where only NFC and NFKC are used. One difference is kept
// on purpose: x/text inserts U+034F after 30 combining marks in a row
// (the Stream-Safe Text Format), which Hugging Face's tokenizers does not.
func nfc(s string) string { return composed(s, false) }

// nfkc returns s in Normalization Form KC: compatibility decomposition,
// then the same ordering and composition.
func nfkc(s string) string { return composed(s, true) }

func composed(s string, compat bool) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	// Decompose.
	buf := make([]rune, 0, len(s))
	for _, r := range s {
		buf = appendDecomposed(buf, r, compat)
	}
	// Order each run of combining marks by class (a stable sort).
	for i := 0; i < len(buf); {
		if combiningClass(buf[i]) == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(buf) && combiningClass(buf[j]) != 0 {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(buf[i:j], func(a, b rune) int { return int(combiningClass(a)) - int(combiningClass(b)) })
		}
		i = j
	}
	// Compose: each mark or starter joins the last starter when nothing
	// between them blocks it (UAX #15's sample algorithm).
	if len(buf) == 0 {
		return ""
	}
	starter, at := 0, 1
	last := int(combiningClass(buf[0]))
	if last != 0 {
		last = 256 // a leading mark composes with nothing
	}
	for _, c := range buf[1:] {
		cc := int(combiningClass(c))
		if p, ok := compose(buf[starter], c); ok && (last < cc || last == 0) {
			buf[starter] = p
			continue
		}
		if cc == 0 {
			starter = at
		}
		last = cc
		buf[at] = c
		at++
	}
	return string(buf[:at])
}

// Hangul syllables decompose and compose by arithmetic (Unicode 3.12).
const (
	hangulS, hangulL, hangulV, hangulT = 0xAC00, 0x1100, 0x1161, 0x11A7
	hangulLCount, hangulVCount         = 19, 21
	hangulTCount                       = 28
	hangulNCount                       = hangulVCount * hangulTCount
	hangulSCount                       = hangulLCount * hangulNCount
)

func appendDecomposed(buf []rune, r rune, compat bool) []rune {
	if r >= hangulS && r < hangulS+hangulSCount {
		i := r - hangulS
		buf = append(buf, hangulL+i/hangulNCount, hangulV+i%hangulNCount/hangulTCount)
		if t := i % hangulTCount; t != 0 {
			buf = append(buf, hangulT+t)
		}
		return buf
	}
	if compat {
		if d, ok := nfkcDecomp.lookup(r); ok {
			for _, c := range d {
				buf = append(buf, c)
			}
			return buf
		}
	}
	d, ok := nfcDecomp.lookup(r)
	if !ok {
		return append(buf, r)
	}
	for _, c := range d {
		buf = append(buf, c)
	}
	return buf
}

// decompTable maps runs of code points to their decompositions: run i
// covers starts[i] .. starts[i]+counts[i]-1, and blob holds each code
// point's decomposition in order, a length byte before each. Where each
// one begins is worked out on first use.
type decompTable struct {
	starts []rune
	counts []uint16
	blob   string

	once  sync.Once
	first []int32 // index of each run's first code point
	off   []int32 // offset in blob of each code point's length byte
}

func (t *decompTable) index() {
	t.first = make([]int32, len(t.starts))
	n := int32(0)
	for i, c := range t.counts {
		t.first[i] = n
		n += int32(c)
	}
	t.off = make([]int32, 0, n)
	for o := 0; o < len(t.blob); o += 1 + int(t.blob[o]) {
		t.off = append(t.off, int32(o))
	}
}

func (t *decompTable) lookup(r rune) (string, bool) {
	i := sort.Search(len(t.starts), func(i int) bool { return t.starts[i] > r }) - 1
	if i < 0 || r >= t.starts[i]+rune(t.counts[i]) {
		return "", false
	}
	t.once.Do(t.index)
	o := t.off[t.first[i]+r-t.starts[i]]
	return t.blob[o+1 : o+1+int32(t.blob[o])], true
}

func combiningClass(r rune) uint8 {
	if r < 0x300 {
		return 0
	}
	i := sort.Search(len(nfcCCCStarts), func(i int) bool { return nfcCCCStarts[i] > r }) - 1
	if i >= 0 && r < nfcCCCStarts[i]+rune(nfcCCCCounts[i]) {
		return nfcCCCClasses[i]
	}
	return 0
}

func compose(a, b rune) (rune, bool) {
	switch {
	case a >= hangulL && a < hangulL+hangulLCount && b >= hangulV && b < hangulV+hangulVCount:
		return hangulS + ((a-hangulL)*hangulVCount+(b-hangulV))*hangulTCount, true
	case a >= hangulS && a < hangulS+hangulSCount && (a-hangulS)%hangulTCount == 0 && b > hangulT && b < hangulT+hangulTCount:
		return a + (b - hangulT), true
	}
	key := uint64(a)<<21 | uint64(b)
	k := sort.Search(len(nfcCompKeys), func(i int) bool { return nfcCompKeys[i] >= key })
	if k < len(nfcCompKeys) && nfcCompKeys[k] == key {
		return nfcComp[k], true
	}
	return 0, false
}
