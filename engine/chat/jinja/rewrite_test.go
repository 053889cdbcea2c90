package jinja

import (
	"errors"
	"testing"
)

// TestConditionalsInParentheses renders templates with conditional
// expressions inside parentheses and brackets, which gonja's parser refuses
// as written, and compares with Jinja's output (Jinja2 3.1.6 rendered each
// of these to the text given): the rewrite must choose the same branch,
// evaluate only that branch, keep a falsy chosen value, follow chains of
// conditionals, and leave strings and comments alone.
func TestConditionalsInParentheses(t *testing.T) {
	for _, tc := range []struct {
		src  string
		vars map[string]any
		want string
	}{
		{`{{ 'a' + (x if c else 'n') }}`, map[string]any{"x": "x", "c": true}, "ax"},
		{`{{ 'a' + (x if c else 'n') }}`, map[string]any{"x": "x", "c": false}, "an"},
		{`{{ (1 if a else 2 if b else 3) }}`, map[string]any{"a": false, "b": false}, "3"},
		{`{{ (1 if a else 2 if b else 3) }}`, map[string]any{"a": false, "b": true}, "2"},
		{`{{ ('ok' if c else raise_exception('no')) }}`, map[string]any{"c": true}, "ok"},
		{`{{ [1 if c else 2, 3] | join(',') }}`, map[string]any{"c": false}, "2,3"},
		{`{{ '(a if b else c)' }}{{ (x if c else y) }}`, map[string]any{"x": "X", "y": "Y", "c": false}, "(a if b else c)Y"},
		{`{# (a if b else c) #}{{ (x if c else y) }}`, map[string]any{"x": "X", "y": "Y", "c": true}, "X"},
		{`{% set v = ('p' if c else 'q') %}{{ v }}`, map[string]any{"c": false}, "q"},
		{`{{ (' s ' if c else 'n') | trim }}`, map[string]any{"c": true}, "s"},
		{`{{ ('' if c else 'fallback') }}|`, map[string]any{"c": true}, "|"},
	} {
		t.Run(tc.src, func(t *testing.T) {
			tpl, err := Parse(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tpl.Render(nil, Options{Vars: tc.vars})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("rendered %q, Jinja %q", got, tc.want)
			}
		})
	}
}

// TestRewriteConditionals pins the rewrite's text, and that a template
// whose conditional is refused by Jinja's own rules is still refused.
func TestRewriteConditionals(t *testing.T) {
	for _, tc := range []struct {
		src, want string
		changed   bool
	}{
		{`{{ '<' + (p if loop.first else "") }}`, `{{ '<' + (((loop.first) and [p] or [""])[0]) }}`, true},
		{`{{ p if c else q }}`, `{{ p if c else q }}`, false},                                             // gonja parses these
		{`{{ f(p if c else q) }}`, `{{ f(p if c else q) }}`, false},                                       // call arguments too
		{`{{ (p if c) }}`, `{{ (p if c) }}`, false},                                                       // no else: left to the parser
		{`a (p if c else q) {{ "(p if c else q)" }}`, `a (p if c else q) {{ "(p if c else q)" }}`, false}, // text and strings
	} {
		got, changed := rewriteConditionals(tc.src)
		if got != tc.want || changed != tc.changed {
			t.Errorf("%s: rewrote to %s (changed %v), want %s (%v)", tc.src, got, changed, tc.want, tc.changed)
		}
	}
	if _, err := Parse(`{{ (p if c) }}`); err == nil {
		t.Error("a conditional without else inside parentheses parsed")
	}
	tpl, err := Parse(`{{ (raise_exception('boom') if c else 'x') }}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Render(nil, Options{Vars: map[string]any{"c": true}}); !errors.Is(err, ErrRaised) {
		t.Errorf("the chosen branch's raise_exception gave %v", err)
	}
}
