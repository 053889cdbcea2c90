package jinja

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/exec"
)

// filters is gonja's filter set with tojson replaced by transformers' own:
// json.dumps(x, ensure_ascii=False, indent=indent), whose text templates
// print when they offer tools (Llama 3.2's tojson(indent=4), Qwen 2.5's
// tool | tojson). gonja's is Go's encoding/json: no spaces after , and :,
// and <, >, & and ' escaped.
var filters = func() *exec.FilterSet {
	f := exec.NewFilterSet(map[string]exec.FilterFunction{}).Update(builtins.Filters)
	if err := f.Replace("tojson", pyToJSON); err != nil {
		panic(err) // gonja always has tojson
	}
	return f
}()

func pyToJSON(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	indent := -1
	if v, ok := params.KwArgs["indent"]; ok && !v.IsNil() {
		if !v.IsInteger() {
			return exec.AsValue(fmt.Errorf("tojson: indent %s is not an integer", v.String()))
		}
		indent = v.Integer()
	}
	var sb strings.Builder
	if err := writePyJSON(&sb, in.Interface(), indent, 0); err != nil {
		return exec.AsValue(fmt.Errorf("tojson: %w", err))
	}
	return exec.AsSafeValue(sb.String())
}

// writePyJSON writes v as Python's json.dumps(v, ensure_ascii=False,
// indent=indent) does (indent < 0: None). Go maps have no order, so their
// keys are written sorted (Python keeps insertion order: a template
// printing a caller's dict matches transformers when its keys were sorted);
// dicts built by the template keep theirs. Integral floats are written as
// integers: JSON numbers reach templates as float64 here, while Python
// would hold the integers that JSON text wrote.
func writePyJSON(sb *strings.Builder, v any, indent, level int) error {
	newline := func(l int) {
		if indent >= 0 {
			sb.WriteByte('\n')
			sb.WriteString(strings.Repeat(" ", indent*l))
		}
	}
	sep := ", "
	if indent >= 0 {
		sep = ","
	}
	writeList := func(n int, item func(i int) error) error {
		if n == 0 {
			sb.WriteString("[]")
			return nil
		}
		sb.WriteByte('[')
		for i := 0; i < n; i++ {
			if i > 0 {
				sb.WriteString(sep)
			}
			newline(level + 1)
			if err := item(i); err != nil {
				return err
			}
		}
		newline(level)
		sb.WriteByte(']')
		return nil
	}
	writeDict := func(keys []string, val func(i int) any) error {
		if len(keys) == 0 {
			sb.WriteString("{}")
			return nil
		}
		sb.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				sb.WriteString(sep)
			}
			newline(level + 1)
			writePyString(sb, k)
			sb.WriteString(": ")
			if err := writePyJSON(sb, val(i), indent, level+1); err != nil {
				return err
			}
		}
		newline(level)
		sb.WriteByte('}')
		return nil
	}
	switch x := v.(type) {
	case nil:
		sb.WriteString("null")
		return nil
	case *exec.Value:
		return writePyJSON(sb, x.Interface(), indent, level)
	case bool:
		if x {
			sb.WriteString("true")
		} else {
			sb.WriteString("false")
		}
		return nil
	case string:
		writePyString(sb, x)
		return nil
	case float64:
		return writePyFloat(sb, x)
	case float32:
		return writePyFloat(sb, float64(x))
	case *exec.Dict:
		keys := make([]string, len(x.Pairs))
		for i, p := range x.Pairs {
			keys[i] = p.Key.String()
		}
		return writeDict(keys, func(i int) any { return x.Pairs[i].Value })
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		sb.WriteString(strconv.FormatInt(r.Int(), 10))
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		sb.WriteString(strconv.FormatUint(r.Uint(), 10))
		return nil
	case reflect.Slice, reflect.Array:
		return writeList(r.Len(), func(i int) error { return writePyJSON(sb, r.Index(i).Interface(), indent, level+1) })
	case reflect.Map:
		if r.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("a map with %s keys", r.Type().Key())
		}
		keys := make([]string, 0, r.Len())
		for _, k := range r.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return writeDict(keys, func(i int) any { return r.MapIndex(reflect.ValueOf(keys[i]).Convert(r.Type().Key())).Interface() })
	}
	return fmt.Errorf("cannot write %T as JSON", v)
}

func writePyFloat(sb *strings.Builder, f float64) error {
	switch {
	case math.IsNaN(f):
		sb.WriteString("NaN")
	case math.IsInf(f, 1):
		sb.WriteString("Infinity")
	case math.IsInf(f, -1):
		sb.WriteString("-Infinity")
	case f == math.Trunc(f) && math.Abs(f) < 1e15:
		sb.WriteString(strconv.FormatInt(int64(f), 10))
	default:
		// Python's repr: the shortest text that reads back, with an
		// exponent from 1e16 on.
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if a := math.Abs(f); a >= 1e-4 && a < 1e16 {
			s = strconv.FormatFloat(f, 'f', -1, 64)
		}
		sb.WriteString(s)
	}
	return nil
}

// writePyString writes s as json.dumps(s, ensure_ascii=False): quotes,
// backslashes and control characters escaped, everything else as it is.
func writePyString(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			sb.WriteString(`\"`)
		case '\\':
			sb.WriteString(`\\`)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		case '\b':
			sb.WriteString(`\b`)
		case '\f':
			sb.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(sb, `\u%04x`, r)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteByte('"')
}
