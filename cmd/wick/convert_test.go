package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestConvertCommand converts the Llama parity fixture with -quant f32 and
// checks that `wick logits` on the result gives transformers' logits.
func TestConvertCommand(t *testing.T) {
	in := "../../testdata/hf/llama"
	out := filepath.Join(t.TempDir(), "llama")
	if err := runConvert([]string{"-in", in, "-out", out, "-quant", "f32", "-shard-size", "64KiB"}); err != nil {
		t.Fatal(err)
	}
	var ref struct{ Prompt []int32 }
	data, err := os.ReadFile(filepath.Join(in, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(ref.Prompt))
	for i, id := range ref.Prompt {
		ids[i] = strconv.Itoa(int(id))
	}
	npy := filepath.Join(t.TempDir(), "l.npy")
	if err := runLogits([]string{"-model", out, "-backend", "cpu", "-ids", strings.Join(ids, ","), "-out", npy}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(npy)
	if err != nil {
		t.Fatal(err)
	}
	_, got := readNpy(t, b)
	if b, err = os.ReadFile(filepath.Join(in, "logits.npy")); err != nil {
		t.Fatal(err)
	}
	_, want := readNpy(t, b)
	if len(got) != len(want) {
		t.Fatalf("%d logits, transformers %d", len(got), len(want))
	}
	const V = 384
	for p := 0; p < len(want)/V; p++ {
		var d, m float64
		for i := p * V; i < (p+1)*V; i++ {
			d = max(d, math.Abs(float64(got[i]-want[i])))
			m = max(m, math.Abs(float64(want[i])))
		}
		if d > 1e-4*m {
			t.Fatalf("position %d: max |wick - transformers| = %.3g, %.3g of the row's max", p, d, d/m)
		}
	}
}

func TestConvertFlags(t *testing.T) {
	in := "../../testdata/hf/llama"
	out := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-in", in}, "usage: wick convert"},
		{[]string{"-in", in, "-out", out, "-quant", "int4"}, `-quant "int4": want int8 or f32`},
		{[]string{"-in", in, "-out", out, "-shard-size", "12XB"}, `-shard-size: "12XB" is not a positive size`},
		{[]string{"-in", in, "-out", out, "-shard-size", "100B"}, "must be at least 256 bytes"},
		{[]string{"-in", "../../testdata/cai-tiny", "-out", out}, "config.json"},
	} {
		err := runConvert(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("wick convert %s: error %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"32MiB", 32 << 20}, {"512KiB", 512 << 10}, {"1GiB", 1 << 30}, {"4096", 4096}, {"300B", 300}, {"0", -1}, {"-1MiB", -1}, {"MiB", -1}, {"1.5MiB", -1}} {
		got, err := parseSize(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
