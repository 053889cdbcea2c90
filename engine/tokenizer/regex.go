package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Split patterns run on Go's regexp (RE2), which the chat module links
// anyway, rather than on a backtracking engine with lookaround (which would
// add ~120 KB to the compressed module). Two things separate the patterns
// tokenizers runs (Oniguruma) from RE2, and regexPattern bridges both:
//
//   - \s and \S are Unicode white space in Oniguruma, ASCII in RE2: they
//     are spelt out as the White_Space characters (tab to carriage return,
//     space, U+0085 and \p{Z}), which is what unicode.IsSpace tests.
//   - The one lookaround these tokenizers use, \s+(?!\S) followed by \s+ as
//     the last two alternatives (Llama 3's, Qwen 2's, GPT-2's and o200k's
//     patterns), is a run of white space that leaves its last character to
//     the word after it. It becomes one captured \s+; a match of it that is
//     followed by a non-space and is longer than one character gives back
//     its last character, as backtracking into the lookahead does, and a
//     one-character run is what the final \s+ would match anyway.
//
// Any other lookaround is refused by name.

// lookaheadTail is how the patterns end.
const lookaheadTail = `|\s+(?!\S)|\s+`

// spaceClass is \s inside a bracket expression: Unicode White_Space.
const spaceClass = `\t\n\v\f\r \x{85}\p{Z}`

// regexPattern translates a Split pattern to RE2 syntax; tail reports
// whether it ended in lookaheadTail, now one capturing group.
func regexPattern(pat string) (re string, tail bool, err error) {
	body := pat
	if strings.HasSuffix(pat, lookaheadTail) {
		body, tail = strings.TrimSuffix(pat, lookaheadTail), true
	}
	for _, look := range []string{"(?=", "(?!", "(?<=", "(?<!"} {
		if strings.Contains(body, look) {
			return "", false, fmt.Errorf("lookaround %s... is not supported (only a final \\s+(?!\\S)|\\s+)", look)
		}
	}
	var sb strings.Builder
	inClass := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\' && i+1 < len(body):
			next := body[i+1]
			i++
			switch {
			case next == 's' && inClass:
				sb.WriteString(spaceClass)
			case next == 's':
				sb.WriteString("[" + spaceClass + "]")
			case next == 'S' && inClass:
				return "", false, fmt.Errorf("\\S inside a bracket expression is not supported")
			case next == 'S':
				sb.WriteString("[^" + spaceClass + "]")
			default:
				sb.WriteByte('\\')
				sb.WriteByte(next)
			}
		case c == '[' && !inClass:
			inClass = true
			sb.WriteByte(c)
			// A ] right after [ or [^ is a literal.
			if i+1 < len(body) && body[i+1] == '^' {
				sb.WriteByte('^')
				i++
			}
			if i+1 < len(body) && body[i+1] == ']' {
				sb.WriteByte(']')
				i++
			}
		case c == ']' && inClass:
			inClass = false
			sb.WriteByte(c)
		default:
			sb.WriteByte(c)
		}
	}
	re = sb.String()
	if tail {
		re = "(?:" + re + ")|([" + spaceClass + "]+)"
	}
	return re, tail, nil
}

// regexMatcher compiles a Split pattern (see regexPattern).
func regexMatcher(pat string) (matchFunc, error) {
	src, tail, err := regexPattern(pat)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pat, err)
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pat, err)
	}
	return func(text []rune) [][2]int {
		s := string(text)
		// runeAt[b] is the index of the rune that starts at byte b.
		runeAt := make([]int, len(s)+1)
		r := 0
		for b := range s {
			runeAt[b] = r
			r++
		}
		runeAt[len(s)] = r
		var out [][2]int
		for at := 0; at < len(s); {
			m := re.FindStringSubmatchIndex(s[at:])
			if m == nil {
				break
			}
			lo, hi := at+m[0], at+m[1]
			if tail && m[2] >= 0 && hi < len(s) && !unicode.IsSpace(text[runeAt[hi]]) && runeAt[hi]-runeAt[lo] > 1 {
				hi = lo + strings.LastIndexFunc(s[lo:hi], func(rune) bool { return true })
			}
			if hi > lo {
				out = append(out, [2]int{runeAt[lo], runeAt[hi]})
				at = hi
			} else {
				// An empty match: move on by one character.
				_, size := utf8.DecodeRuneInString(s[at:])
				at += size
			}
		}
		return out
	}, nil
}
