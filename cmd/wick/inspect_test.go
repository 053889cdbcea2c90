package main

import (
	"os"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestInspectRefusesWhatEngineRefuses checks that inspect applies the
// engine's validation, with its words.
func TestInspectRefusesWhatEngineRefuses(t *testing.T) {
	for name, tc := range testmodel.BrokenDirs(t, "../../testdata/cai-tiny") {
		t.Run(name, func(t *testing.T) {
			_, want := engine.Check(tc.Dir)
			err := runInspect([]string{"-verify=false", tc.Dir})
			if err == nil || want == nil || err.Error() != want.Error() {
				t.Errorf("inspect: %v; engine.Check: %v", err, want)
			}
		})
	}
}

// TestInspectKVUpToContext checks that inspect quotes the KV cache only at
// lengths the model can hold, and at its own context.
func TestInspectKVUpToContext(t *testing.T) {
	out := captureStdout(t, func() {
		if err := runInspect([]string{"../../testdata/cai-tiny"}); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.Contains(out, "at 512\t") && !strings.Contains(out, "at 512 ") {
		t.Errorf("no KV quote at the context of 512:\n%s", out)
	}
	for _, beyond := range []string{"at 1024", "at 8192", "at 32768"} {
		if strings.Contains(out, beyond) {
			t.Errorf("KV quoted %s for a model of context 512:\n%s", beyond, out)
		}
	}
}

// captureStdout runs f with os.Stdout sent to a pipe and returns what it
// printed.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				done <- b.String()
				return
			}
		}
	}()
	defer func() { os.Stdout = old }()
	f()
	w.Close()
	os.Stdout = old
	return <-done
}
