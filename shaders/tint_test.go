//go:build !js && !wasip1

package shaders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkResult is one kernel's result from node/wgsl-check.mjs.
type checkResult struct {
	Label   string
	Needs   []string
	Backend string // "adapter", or "null": Dawn's Null backend (Tint alone)
	Tint    []struct {
		Type         string
		Line, Column int
		Message      string
	}
	Pipeline *string
	Naga     *struct {
		Unsupported bool
		Message     string
	}
}

// checkReport is node/wgsl-check.mjs's output.
type checkReport struct {
	Adapter          string
	LanguageFeatures []string
	Naga             string
	Results          []checkResult
}

// checkTimeout bounds the Node process: Dawn has been seen to keep it
// alive after its work is done.
const checkTimeout = 10 * time.Minute

// browserCheck runs node/wgsl-check.mjs on every variant and returns its
// report, or fails saying how to install what it needs.
func browserCheck(t *testing.T, ks []Key) *checkReport {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: run `make deps` (%v)", err)
	}
	for _, pkg := range []string{"webgpu", "naga-wasm"} {
		if _, err := os.Stat(filepath.Join("..", "node", "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is not installed in node/node_modules: run `make deps` (%v)", pkg, err)
		}
	}
	type kernel struct {
		Label string `json:"label"`
		WGSL  string `json:"wgsl"`
		Entry string `json:"entry"`
	}
	var in []kernel
	for _, k := range ks {
		src, err := Expand(k)
		if err != nil {
			t.Fatalf("%s: %v", k.Label(), err)
		}
		in = append(in, kernel{k.Label(), src.WGSL, k.Entry})
	}
	dir := t.TempDir()
	inPath, outPath := filepath.Join(dir, "kernels.json"), filepath.Join(dir, "results.json")
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("..", "node", "wgsl-check.mjs"), "-o", outPath, inPath)
	var logs bytes.Buffer // Dawn's device notices and compilation logs
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("node/wgsl-check.mjs ran past %v\n%s", checkTimeout, logs.String())
		}
		t.Fatalf("node/wgsl-check.mjs: %v\n%s", err, logs.String())
	}
	out, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatalf("node/wgsl-check.mjs wrote no results: %v\n%s", err, logs.String())
	}
	var r checkReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("node/wgsl-check.mjs results: %v", err)
	}
	return &r
}

// TestVariantsCompileInBrowsers compiles every variant of the enumeration
// with the shader compilers of Chrome and Edge (Tint, through Dawn) and of
// Firefox (naga, as far as its WGSL front end goes), and fails naming each
// variant that either rejects or that Tint warns about. It also checks
// what each variant needs of the browser: nothing, except that the Dot4
// variants need WGSL's packed_4x8_integer_dot_product, and the Subgroups
// ones the subgroups feature and WGSL's subgroup_id, and the Matrix ones
// chromium-experimental-subgroup-matrix and subgroups. Dawn accepts the
// Matrix variants' `enable` only on a device with the feature, which only
// some GPUs have (lavapipe has not): where the adapter lacks it,
// wgsl-check compiles them on Dawn's Null backend, through all of Tint's
// checks but no driver's compiler (the kernel tests run them where a
// device has the feature).
func TestVariantsCompileInBrowsers(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles every variant through Dawn and naga (about half a minute); make test runs it")
	}
	ks := Variants()
	r := browserCheck(t, ks)
	t.Logf("Dawn adapter %s; naga %s", r.Adapter, r.Naga)
	byLabel := map[string]*checkResult{}
	for i := range r.Results {
		byLabel[r.Results[i].Label] = &r.Results[i]
	}
	var unsupported int
	for _, k := range ks {
		res := byLabel[k.Label()]
		if res == nil {
			t.Errorf("%s: no result", k.Label())
			continue
		}
		src, _ := Expand(k)
		var want []string
		if k.Matrix {
			want = append(want, FeatureSubgroupMatrix)
		}
		if k.Subgroups || k.Matrix {
			want = append(want, FeatureSubgroups)
		}
		if k.Dot4 {
			want = append(want, WGSLPackedDot)
		}
		if k.Subgroups || k.Matrix {
			want = append(want, WGSLSubgroupID)
		}
		if !slices.Equal(res.Needs, want) {
			t.Errorf("%s needs %v, want %v", k.Label(), res.Needs, want)
		}
		if res.Backend == "null" {
			t.Logf("%s: compiled by Tint on Dawn's Null backend: the adapter lacks what it needs", k.Label())
		}
		for _, m := range res.Tint {
			if m.Type == "info" {
				t.Logf("%s: Tint note: %s", k.Label(), m.Message)
				continue
			}
			t.Errorf("%s: Tint %s at %s: %s", k.Label(), m.Type, sourceLine(src, m.Line), m.Message)
		}
		if res.Pipeline != nil {
			t.Errorf("%s: Dawn pipeline: %s", k.Label(), *res.Pipeline)
		}
		if res.Naga != nil {
			if res.Naga.Unsupported {
				unsupported++
				t.Logf("%s: naga does not parse it yet: %s", k.Label(), firstLine(res.Naga.Message))
				continue
			}
			t.Errorf("%s: naga: %s", k.Label(), res.Naga.Message)
		}
	}
	t.Logf("%d variants through Tint and naga (%d beyond naga's WGSL)", len(ks), unsupported)
}

// sourceLine names the source file and line of line n (1-based) of an
// expanded variant.
func sourceLine(src *Source, n int) string {
	if n < 1 || n > len(src.Lines) {
		return fmt.Sprintf("line %d", n)
	}
	return fmt.Sprintf("%s (line %d: %s)", src.Lines[n-1], n, strings.TrimSpace(strings.Split(src.WGSL, "\n")[n-1]))
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
