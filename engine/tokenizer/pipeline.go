package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// hfTokenizer is a Hugging Face tokenizer.json: added tokens, then per
// stretch of text between them the normalizers, the pre-tokenizers and the
// BPE model, as tokenizers' encode without a post-processor.
type hfTokenizer struct {
	added       []addedToken // longest first
	normalizers []normalizer
	pre         []preTokenizer
	bpe         *bpe

	// The decoder, reduced to what the supported decoders do per token.
	byteLevel    bool   // ByteLevel: a token's characters stand for bytes
	byteFallback bool   // ByteFallback: <0xAB> tokens are bytes
	replace      []repl // Replace decoders (▁ -> space), in order
	stripLead    int    // Strip's start: spaces removed at the very start
	// A Metaspace decoder turns its replacement into a space, except in
	// the first token, where tokenizers drops it (metaFirst), or, after a
	// Fuse has made the whole text one token, everywhere (metaAll).
	meta               string
	metaFirst, metaAll bool
	fused              bool // a Fuse decoder came before
}

type addedToken struct {
	text           string
	id             int32
	lstrip, rstrip bool
	singleWord     bool
}

type repl struct{ from, to string }

// span is a piece of text during pre-tokenization; atStart says it begins
// at the start of the text Encode was given (Metaspace's "first" scheme
// prepends only there).
type span struct {
	text    string
	atStart bool
}

type normalizer func(string) string
type preTokenizer func([]span) []span

func parseNormalizer(c hfComponent) ([]normalizer, error) {
	if c == nil {
		return nil, nil
	}
	switch c.typ() {
	case "Sequence":
		list, err := c.list("normalizers")
		if err != nil {
			return nil, err
		}
		var out []normalizer
		for _, sub := range list {
			n, err := parseNormalizer(sub)
			if err != nil {
				return nil, err
			}
			out = append(out, n...)
		}
		return out, nil
	case "NFC":
		return []normalizer{nfc}, nil
	case "NFKC":
		return []normalizer{nfkc}, nil
	case "Prepend":
		p, err := c.str("prepend")
		if err != nil {
			return nil, err
		}
		return []normalizer{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		pat, isRegex, err := c.pattern("pattern")
		if err != nil {
			return nil, err
		}
		content, err := c.str("content")
		if err != nil {
			return nil, err
		}
		if isRegex {
			return nil, fmt.Errorf("Replace with a regex pattern %q is not supported", pat)
		}
		return []normalizer{func(s string) string { return strings.ReplaceAll(s, pat, content) }}, nil
	}
	return nil, fmt.Errorf("normalizer %q is not supported (wick reads NFC, NFKC, Prepend, Replace and Sequence)", c.typ())
}

func parsePreTokenizer(c hfComponent) ([]preTokenizer, error) {
	if c == nil {
		return nil, nil
	}
	switch c.typ() {
	case "Sequence":
		list, err := c.list("pretokenizers")
		if err != nil {
			return nil, err
		}
		var out []preTokenizer
		for _, sub := range list {
			p, err := parsePreTokenizer(sub)
			if err != nil {
				return nil, err
			}
			out = append(out, p...)
		}
		return out, nil
	case "Split":
		pat, isRegex, err := c.pattern("pattern")
		if err != nil {
			return nil, err
		}
		behavior, err := c.str("behavior")
		if err != nil {
			return nil, err
		}
		invert, err := c.boolOr("invert", false)
		if err != nil {
			return nil, err
		}
		f, err := matcher(pat, isRegex)
		if err != nil {
			return nil, err
		}
		s, err := splitter(f, behavior, invert)
		if err != nil {
			return nil, err
		}
		return []preTokenizer{s}, nil
	case "ByteLevel":
		prefix, err := c.boolOr("add_prefix_space", true)
		if err != nil {
			return nil, err
		}
		useRegex, err := c.boolOr("use_regex", true)
		if err != nil {
			return nil, err
		}
		var split preTokenizer
		if useRegex {
			f, err := matcher(gpt2Pattern, true)
			if err != nil {
				return nil, err
			}
			split, _ = splitter(f, "Isolated", false)
		}
		return []preTokenizer{func(in []span) []span {
			if prefix {
				for i := range in {
					if !strings.HasPrefix(in[i].text, " ") {
						in[i].text = " " + in[i].text
					}
				}
			}
			if split != nil {
				in = split(in)
			}
			for i := range in {
				in[i].text = toByteLevel(in[i].text)
			}
			return in
		}}, nil
	case "Digits":
		individual, err := c.boolOr("individual_digits", false)
		if err != nil {
			return nil, err
		}
		behavior := "Contiguous"
		if individual {
			behavior = "Isolated"
		}
		s, _ := splitter(func(r []rune) [][2]int { return runsOf(r, unicode.IsNumber, individual) }, behavior, false)
		return []preTokenizer{s}, nil
	case "Metaspace":
		rs, err := c.str("replacement")
		if err != nil {
			return nil, err
		}
		scheme := "always"
		if _, ok := c["prepend_scheme"]; ok {
			if scheme, err = c.str("prepend_scheme"); err != nil {
				return nil, err
			}
		} else if add, err := c.boolOr("add_prefix_space", true); err != nil {
			return nil, err
		} else if !add {
			scheme = "never"
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("Metaspace prepend_scheme %q is not supported", scheme)
		}
		doSplit, err := c.boolOr("split", true)
		if err != nil {
			return nil, err
		}
		var split preTokenizer
		if doSplit {
			split, _ = splitter(literal(rs), "MergedWithNext", false)
		}
		return []preTokenizer{func(in []span) []span {
			for i := range in {
				t := strings.ReplaceAll(in[i].text, " ", rs)
				if (scheme == "always" || scheme == "first" && in[i].atStart) && !strings.HasPrefix(t, rs) {
					t = rs + t
				}
				in[i].text = t
			}
			if split != nil {
				in = split(in)
			}
			return in
		}}, nil
	}
	return nil, fmt.Errorf("pre-tokenizer %q is not supported (wick reads Split, ByteLevel, Digits, Metaspace and Sequence)", c.typ())
}

// parseDecoder reduces the decoder to per-token rules. The supported
// decoders all map each token to bytes on its own, except for Strip and
// Metaspace, which also drop a space at the very start.
func (h *hfTokenizer) parseDecoder(c hfComponent) error {
	if c == nil {
		return nil
	}
	switch c.typ() {
	case "Sequence":
		list, err := c.list("decoders")
		if err != nil {
			return err
		}
		for _, sub := range list {
			if err := h.parseDecoder(sub); err != nil {
				return err
			}
		}
		return nil
	case "ByteLevel":
		h.byteLevel = true
		return nil
	case "ByteFallback":
		h.byteFallback = true
		return nil
	case "Fuse":
		h.fused = true // joining the tokens' strings: what decoding does anyway
		return nil
	case "Replace":
		pat, isRegex, err := c.pattern("pattern")
		if err != nil {
			return err
		}
		content, err := c.str("content")
		if err != nil {
			return err
		}
		if isRegex {
			return fmt.Errorf("Replace with a regex pattern %q is not supported", pat)
		}
		h.replace = append(h.replace, repl{pat, content})
		return nil
	case "Strip":
		content, err := c.str("content")
		if err != nil {
			return err
		}
		start, err := c.intOr("start", 0)
		if err != nil {
			return err
		}
		stop, err := c.intOr("stop", 0)
		if err != nil {
			return err
		}
		if content != " " || stop != 0 || start < 0 {
			return fmt.Errorf("Strip of %q (start %d, stop %d) is not supported (wick strips leading spaces only)", content, start, stop)
		}
		h.stripLead += start
		return nil
	case "Metaspace":
		rs, err := c.str("replacement")
		if err != nil {
			return err
		}
		if h.meta != "" {
			return errors.New("two Metaspace decoders")
		}
		h.meta = rs
		scheme := "always"
		if _, ok := c["prepend_scheme"]; ok {
			if scheme, err = c.str("prepend_scheme"); err != nil {
				return err
			}
		} else if add, err := c.boolOr("add_prefix_space", true); err != nil {
			return err
		} else if !add {
			scheme = "never"
		}
		h.metaFirst = scheme != "never"
		h.metaAll = h.metaFirst && h.fused
		return nil
	}
	return fmt.Errorf("decoder %q is not supported (wick reads ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace and Sequence)", c.typ())
}

// gpt2Pattern is the split of the ByteLevel pre-tokenizer with use_regex
// (GPT-2's, which SmolLM2 uses).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// matchFunc returns the [start, end) rune ranges of the matches in text.
type matchFunc func(text []rune) [][2]int

// matcher compiles a Split pattern: a literal string, or a regex (see
// regex.go).
func matcher(pat string, isRegex bool) (matchFunc, error) {
	if !isRegex {
		return literal(pat), nil
	}
	return regexMatcher(pat)
}

func literal(pat string) matchFunc {
	p := []rune(pat)
	return func(text []rune) [][2]int {
		var out [][2]int
		if len(p) == 0 {
			return nil
		}
		for i := 0; i+len(p) <= len(text); {
			if equalRunes(text[i:i+len(p)], p) {
				out = append(out, [2]int{i, i + len(p)})
				i += len(p)
				continue
			}
			i++
		}
		return out
	}
}

func equalRunes(a, b []rune) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// runsOf matches the runes for which is holds: each alone, or in runs.
func runsOf(text []rune, is func(rune) bool, each bool) [][2]int {
	var out [][2]int
	for i := 0; i < len(text); {
		if !is(text[i]) {
			i++
			continue
		}
		j := i + 1
		for !each && j < len(text) && is(text[j]) {
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

// splitter is tokenizers' Split with one of its behaviours: the matches
// (or, inverted, the stretches between them) are removed, kept alone,
// joined to the piece before or after, or joined with neighbouring matches.
func splitter(match matchFunc, behavior string, invert bool) (preTokenizer, error) {
	switch behavior {
	case "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous":
	default:
		return nil, fmt.Errorf("Split behavior %q is not supported", behavior)
	}
	return func(in []span) []span {
		var out []span
		for _, sp := range in {
			runes := []rune(sp.text)
			type part struct {
				lo, hi int
				match  bool
			}
			var parts []part
			at := 0
			for _, m := range match(runes) {
				if m[0] > at {
					parts = append(parts, part{at, m[0], invert})
				}
				parts = append(parts, part{m[0], m[1], !invert})
				at = m[1]
			}
			if at < len(runes) {
				parts = append(parts, part{at, len(runes), invert})
			}
			// Merge according to the behaviour, as [lo, hi) ranges.
			var ranges [][2]int
			for i, p := range parts {
				switch behavior {
				case "Removed":
					if !p.match {
						ranges = append(ranges, [2]int{p.lo, p.hi})
					}
				case "Isolated":
					ranges = append(ranges, [2]int{p.lo, p.hi})
				case "MergedWithPrevious":
					if p.match && i > 0 && !parts[i-1].match && len(ranges) > 0 {
						ranges[len(ranges)-1][1] = p.hi
					} else {
						ranges = append(ranges, [2]int{p.lo, p.hi})
					}
				case "MergedWithNext":
					if i > 0 && parts[i-1].match && len(ranges) > 0 {
						ranges[len(ranges)-1][1] = p.hi
					} else {
						ranges = append(ranges, [2]int{p.lo, p.hi})
					}
				case "Contiguous":
					if p.match && i > 0 && parts[i-1].match && len(ranges) > 0 {
						ranges[len(ranges)-1][1] = p.hi
					} else {
						ranges = append(ranges, [2]int{p.lo, p.hi})
					}
				}
			}
			for _, r := range ranges {
				if r[1] > r[0] {
					out = append(out, span{text: string(runes[r[0]:r[1]]), atStart: sp.atStart && r[0] == 0})
				}
			}
		}
		return out
	}, nil
}

// byteChars is GPT-2's ByteLevel alphabet: each byte as a printable
// character (the printable Latin-1 ones as themselves, the others shifted
// past U+0100), and byteOf its inverse.
var byteChars, byteOf = func() ([256]rune, map[rune]byte) {
	var chars [256]rune
	inv := make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			chars[b] = rune(b)
		} else {
			chars[b] = rune(256 + n)
			n++
		}
		inv[chars[b]] = byte(b)
	}
	return chars, inv
}()

func toByteLevel(s string) string {
	var sb strings.Builder
	sb.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		sb.WriteRune(byteChars[s[i]])
	}
	return sb.String()
}

// encode is the whole pipeline for one text.
func (h *hfTokenizer) encode(text string) []int32 {
	var ids []int32
	for i, seg := range h.splitAdded(text) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		s := seg.text
		for _, n := range h.normalizers {
			s = n(s)
		}
		if s == "" {
			continue
		}
		spans := []span{{text: s, atStart: i == 0 && seg.start == 0}}
		for _, p := range h.pre {
			spans = p(spans)
		}
		for _, sp := range spans {
			ids = h.bpe.encode(ids, sp.text)
		}
	}
	return ids
}

// segment is a stretch of text, or an added token (id >= 0).
type segment struct {
	text  string
	start int // byte offset in the text
	id    int32
}

// splitAdded cuts text at the added tokens, leftmost first and the longest
// where several start at one place, as tokenizers does; lstrip and rstrip
// tokens take the whitespace beside them.
func (h *hfTokenizer) splitAdded(text string) []segment {
	var out []segment
	start := 0
	for pos := 0; pos < len(text); {
		var hit *addedToken
		for i := range h.added {
			a := &h.added[i]
			if strings.HasPrefix(text[pos:], a.text) && (!a.singleWord || h.wordBounded(text, pos, pos+len(a.text))) {
				hit = a
				break
			}
		}
		if hit == nil {
			_, size := utf8.DecodeRuneInString(text[pos:])
			pos += size
			continue
		}
		lo, hi := pos, pos+len(hit.text)
		if hit.lstrip {
			lo = len(strings.TrimRightFunc(text[:lo], unicode.IsSpace))
			lo = max(lo, start)
		}
		if hit.rstrip {
			hi = len(text) - len(strings.TrimLeftFunc(text[hi:], unicode.IsSpace))
		}
		if lo > start {
			out = append(out, segment{text: text[start:lo], start: start, id: -1})
		}
		out = append(out, segment{start: lo, id: hit.id})
		start, pos = hi, hi
	}
	if start < len(text) {
		out = append(out, segment{text: text[start:], start: start, id: -1})
	}
	return out
}

// wordBounded reports whether text[lo:hi] has no word character on either
// side, for single_word added tokens.
func (h *hfTokenizer) wordBounded(text string, lo, hi int) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }
	if r, _ := utf8.DecodeLastRuneInString(text[:lo]); lo > 0 && isWord(r) {
		return false
	}
	if r, _ := utf8.DecodeRuneInString(text[hi:]); hi < len(text) && isWord(r) {
		return false
	}
	return true
}

// tokenBytes appends what piece p decodes to, before the leading-space
// strip: an added token's text, a byte token's byte, or the token's text
// through the ByteLevel map or the Replace rules.
//
// first says p is the first token of the text that decodes to anything.
func (h *hfTokenizer) tokenBytes(dst []byte, p piece, first bool) []byte {
	switch p.kind {
	case pieceControl, pieceUnused:
		return dst
	case pieceUserDefined:
		return append(dst, p.text...)
	case pieceByte:
		return append(dst, p.b)
	}
	if h.byteLevel {
		for _, r := range p.text {
			if b, ok := byteOf[r]; ok {
				dst = append(dst, b)
			} else {
				dst = utf8.AppendRune(dst, r)
			}
		}
		return dst
	}
	s := p.text
	for _, r := range h.replace {
		s = strings.ReplaceAll(s, r.from, r.to)
	}
	if h.meta != "" {
		to := " "
		if h.metaAll || h.metaFirst && first {
			to = ""
		}
		s = strings.ReplaceAll(s, h.meta, to)
	}
	return append(dst, s...)
}
