package jinja

import "testing"

// TestToJSONAsPython renders tojson as transformers' json.dumps(x,
// ensure_ascii=False, indent=indent) does; the wanted texts are Python's
// (Jinja2 3.1.6 with transformers' filter), with the keys of Go maps
// sorted (see writePyJSON).
func TestToJSONAsPython(t *testing.T) {
	for _, tc := range []struct {
		src  string
		vars map[string]any
		want string
	}{
		{`{{ x | tojson }}`, map[string]any{"x": map[string]any{"a": "é\"\\\n\t\x01<>&'", "b": []any{1.0, 2.5, nil, true}}},
			`{"a": "é\"\\\n\t\u0001<>&'", "b": [1, 2.5, null, true]}`},
		{`{{ x | tojson(indent=4) }}`, map[string]any{"x": map[string]any{"a": map[string]any{"b": map[string]any{}, "c": []any{}}, "d": []any{1.0, map[string]any{"e": "f"}}}},
			"{\n    \"a\": {\n        \"b\": {},\n        \"c\": []\n    },\n    \"d\": [\n        1,\n        {\n            \"e\": \"f\"\n        }\n    ]\n}"},
		{`{{ {'b': 1, 'a': 2} | tojson }}`, nil, `{"b": 1, "a": 2}`}, // a template's dict keeps its order
		{`{{ [] | tojson }}{{ 'x' | tojson }}`, nil, `[]"x"`},
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
				t.Errorf("rendered\n%s\nPython\n%s", got, tc.want)
			}
		})
	}
}
