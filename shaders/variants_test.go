//go:build !js && !wasip1

package shaders

import (
	"regexp"
	"strings"
	"testing"
)

// TestVariantsExpand checks the enumeration itself: every variant expands,
// no two share a label (the label names a variant in errors and in the
// compile checks), and every compute entry point of every source is in it.
func TestVariantsExpand(t *testing.T) {
	labels := map[string]bool{}
	entries := map[string]bool{}
	for _, k := range Variants() {
		if _, err := Expand(k); err != nil {
			t.Errorf("%s: %v", k.Label(), err)
		}
		if labels[k.Label()] {
			t.Errorf("%s is listed twice", k.Label())
		}
		labels[k.Label()] = true
		entries[k.Family+"."+k.Entry] = true
	}
	dir, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	entry := regexp.MustCompile(`@compute[^\n]*\n\s*fn (\w+)`)
	include := regexp.MustCompile(`(?m)^#include "([^"]+)"`)
	// A file that one family's source alone includes (attn_group.wgsl in
	// attn.wgsl) holds that family's entry points.
	texts := map[string]string{}
	includers := map[string][]string{}
	for _, f := range dir {
		text, err := files.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		texts[f.Name()] = string(text)
		for _, m := range include.FindAllStringSubmatch(string(text), -1) {
			includers[m[1]] = append(includers[m[1]], f.Name())
		}
	}
	family := func(file string) string {
		for len(includers[file]) == 1 {
			file = includers[file][0]
		}
		return strings.TrimSuffix(file, ".wgsl")
	}
	for _, f := range dir {
		for _, m := range entry.FindAllStringSubmatch(texts[f.Name()], -1) {
			if name := family(f.Name()) + "." + m[1]; !entries[name] {
				t.Errorf("entry point %s has no variant in Variants", name)
			}
		}
	}
	t.Logf("%d variants", len(labels))
}

// TestVariantsCompileNative builds every variant on the native device
// (wgpu-native, whose WGSL compiler is naga): what wick serve and the
// tests run on. TestVariantsCompileInBrowsers does the same through the
// browsers' compilers. The Dot4, Subgroups and Matrix variants are left
// out: wgpu-native's naga (cogentcore/webgpu v0.23) predates dot4I8Packed,
// subgroups and subgroup matrices, and nothing plans them on it.
func TestVariantsCompileNative(t *testing.T) {
	d := device(t)
	for _, k := range Variants() {
		if k.Dot4 || k.Subgroups || k.Matrix {
			continue
		}
		kern, err := Compile(d, k)
		if err != nil {
			t.Errorf("%s: %v", k.Label(), err)
			continue
		}
		d.FreeKernel(kern)
	}
}
