package shaders

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

var wgslStruct = regexp.MustCompile(`(?s)struct (\w+) \{(.*?)\n\}`)
var wgslField = regexp.MustCompile(`(?m)^\s*(\w+)\s*:\s*(\w+),`)

// TestParamsMatchWGSL checks that each Go params struct has the size and
// the field offsets of the WGSL struct of the same name (WGSL field names
// are the Go names in snake case).
func TestParamsMatchWGSL(t *testing.T) {
	for _, v := range []any{Step{}, QuantParams{}, MatmulParams{}, NormParams{}, RopeParams{}, ActParams{}, EmbedParams{}, AttnParams{}, ArgmaxParams{}, StreamParams{}, GatedParams{}, PrenormParams{}, QKVParams{}, GemvParams{}} {
		typ := reflect.TypeOf(v)
		t.Run(typ.Name(), func(t *testing.T) {
			var fields [][]string
			found := false
			entries, _ := files.ReadDir(".")
			for _, e := range entries {
				text, _ := files.ReadFile(e.Name())
				for _, m := range wgslStruct.FindAllStringSubmatch(string(text), -1) {
					if m[1] == typ.Name() {
						found = true
						for _, f := range wgslField.FindAllStringSubmatch(m[2], -1) {
							fields = append(fields, f[1:])
						}
					}
				}
			}
			if !found {
				t.Fatalf("no WGSL struct %s", typ.Name())
			}
			if len(fields) != typ.NumField() {
				t.Fatalf("WGSL has %d fields, Go %d", len(fields), typ.NumField())
			}
			off := uintptr(0)
			for i, f := range fields {
				gf := typ.Field(i)
				if want := strings.ReplaceAll(f[0], "_", ""); !strings.EqualFold(want, gf.Name) {
					t.Errorf("field %d: WGSL %s, Go %s", i, f[0], gf.Name)
				}
				var kind reflect.Kind
				switch f[1] {
				case "u32":
					kind = reflect.Uint32
				case "f32":
					kind = reflect.Float32
				case "i32":
					kind = reflect.Int32
				default:
					t.Fatalf("field %s: type %s is not a 4-byte scalar", f[0], f[1])
				}
				if gf.Type.Kind() != kind || gf.Offset != off {
					t.Errorf("field %s: WGSL %s at offset %d, Go %s at %d", f[0], f[1], off, gf.Type, gf.Offset)
				}
				off += 4
			}
			if typ.Size() != off || len(Bytes(v)) != int(off) {
				t.Errorf("size: WGSL %d, Go %d (encoded %d)", off, typ.Size(), len(Bytes(v)))
			}
		})
	}
}

func TestExpandKeepsLines(t *testing.T) {
	src, err := Expand(Key{Family: "matmul", Entry: "matmul", Int8: true, WG: 64})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(src.WGSL, "\n")
	for i, l := range lines {
		if strings.Contains(l, "fn matmul(") && !strings.HasPrefix(src.Lines[i], "matmul.wgsl:") {
			t.Fatalf("line %d (%q) attributed to %s", i+1, l, src.Lines[i])
		}
		if strings.Contains(l, "{{") || strings.HasPrefix(strings.TrimSpace(l), "#") {
			t.Fatalf("line %d not expanded: %q", i+1, l)
		}
		if strings.Contains(l, "dot4I8Packed") {
			t.Fatalf("the portable variant uses dot4I8Packed at line %d", i+1)
		}
	}
	if _, err := Expand(Key{Family: "attn", Entry: "attend", WG: 64}); err == nil {
		t.Fatal("attn without HD expanded; want an error naming {{HD}}")
	}
}
