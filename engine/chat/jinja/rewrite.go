package jinja

import (
	"strings"
)

// gonja parses Jinja's conditional expression (X if C else Y) only at the
// top of an output tag or a set statement: inside parentheses or brackets,
// as Gemma 3's template writes '...' + (first_user_prefix if loop.first
// else ""), it reports "Unbalanced parenthesis". rewriteConditionals
// rewrites each such conditional into an expression gonja parses and that
// means the same in Jinja:
//
//	(X if C else Y)  ->  ((C) and [X] or [Y])[0]
//
// `and` and `or` return an operand and evaluate lazily, as in Python, in
// Jinja and in gonja; a one-element list is always true, so the `or` never
// replaces the chosen branch, and only that branch is evaluated (a
// raise_exception in the other is not reached). Only the tags' expressions
// change, never the text between tags, so whitespace control is
// untouched. A conditional without else (Jinja's undefined when false) is
// left alone. Parse uses the rewrite only when gonja refuses the template
// as written.
func rewriteConditionals(src string) (string, bool) {
	var sb strings.Builder
	changed := false
	for {
		open := strings.Index(src, "{")
		if open < 0 || open+1 >= len(src) {
			sb.WriteString(src)
			return sb.String(), changed
		}
		var closing string
		switch src[open+1] {
		case '{':
			closing = "}}"
		case '%':
			closing = "%}"
		case '#':
			closing = "#}"
		default:
			sb.WriteString(src[:open+1])
			src = src[open+1:]
			continue
		}
		body := open + 2
		end := tagEnd(src[body:], closing)
		if end < 0 {
			sb.WriteString(src) // unterminated: the parser reports it
			return sb.String(), changed
		}
		sb.WriteString(src[:body])
		inner := src[body : body+end]
		if closing != "#}" {
			if out, ok := rewriteExpr(inner); ok {
				inner, changed = out, true
			}
		}
		sb.WriteString(inner)
		src = src[body+end:]
	}
}

// tagEnd finds closing in a tag's text, skipping string literals.
func tagEnd(s, closing string) int {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case closing != "#}" && (c == '\'' || c == '"'):
			i = stringEnd(s, i)
		case strings.HasPrefix(s[i:], closing):
			return i
		}
	}
	return -1
}

// stringEnd returns the index of the quote closing the literal opened at i
// (or the last index when it is unterminated).
func stringEnd(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j
		}
	}
	return len(s) - 1
}

// rewriteExpr rewrites the conditionals inside every parenthesised or
// bracketed group of a tag's expression, innermost first.
func rewriteExpr(s string) (string, bool) {
	var sb strings.Builder
	changed := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\'', '"':
			j := stringEnd(s, i)
			sb.WriteString(s[i : j+1])
			i = j
			continue
		case '(', '[':
			j := groupEnd(s, i)
			if j < 0 {
				sb.WriteString(s[i:])
				return sb.String(), changed
			}
			inner, ch := rewriteExpr(s[i+1 : j])
			changed = changed || ch
			// A call's arguments parse in gonja; other groups are split at
			// their commas (a tuple's or list's elements) and each element
			// that is a conditional is rewritten.
			if !(c == '(' && isCall(s[:i])) {
				var parts []string
				for _, el := range splitTop(inner, ',') {
					if out, ok := rewriteConditional(el); ok {
						el, changed = out, true
					}
					parts = append(parts, el)
				}
				inner = strings.Join(parts, ",")
			}
			sb.WriteByte(c)
			sb.WriteString(inner)
			sb.WriteByte(s[j])
			i = j
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String(), changed
}

// groupEnd returns the index of the bracket closing the one at i.
func groupEnd(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '\'', '"':
			j = stringEnd(s, j)
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// isCall reports whether a group opening after before is a call's
// argument list: it follows a name, or a closing bracket.
func isCall(before string) bool {
	b := strings.TrimRight(before, " \t\n")
	if b == "" {
		return false
	}
	c := b[len(b)-1]
	if c == ')' || c == ']' {
		return true
	}
	if !isWordByte(c) {
		return false
	}
	// A keyword before the group (if (...), in (...), and (...)) is not a call.
	k := len(b)
	for k > 0 && isWordByte(b[k-1]) {
		k--
	}
	switch b[k:] {
	case "if", "elif", "else", "in", "and", "or", "not", "is", "return":
		return false
	}
	return true
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// splitTop splits s at sep outside strings and brackets.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			i = stringEnd(s, i)
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// keywordAt returns the index of the first top-level keyword kw in s at
// or after from, or -1.
func keywordAt(s, kw string, from int) int {
	depth := 0
	for i := from; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			i = stringEnd(s, i)
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		default:
			if depth == 0 && strings.HasPrefix(s[i:], kw) && (i == 0 || !isWordByte(s[i-1])) &&
				(i+len(kw) == len(s) || !isWordByte(s[i+len(kw)])) {
				return i
			}
		}
	}
	return -1
}

// rewriteConditional rewrites el when it is X if C else Y (Y itself may be
// a further conditional).
func rewriteConditional(el string) (string, bool) {
	i := keywordAt(el, "if", 0)
	if i < 0 {
		return el, false
	}
	e := keywordAt(el, "else", i+2)
	if e < 0 {
		return el, false
	}
	x, c, y := el[:i], el[i+2:e], el[e+4:]
	if strings.TrimSpace(x) == "" || strings.TrimSpace(c) == "" || strings.TrimSpace(y) == "" {
		return el, false
	}
	if out, ok := rewriteConditional(y); ok {
		y = out
	}
	lead := el[:len(el)-len(strings.TrimLeft(el, " \t\n"))]
	trail := el[len(strings.TrimRight(el, " \t\n")):]
	return lead + "((" + strings.TrimSpace(c) + ") and [" + strings.TrimSpace(x) + "] or [" + strings.TrimSpace(y) + "])[0]" + trail, true
}
