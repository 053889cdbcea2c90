package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine"
)

// readNpy parses what npyFloat32 writes, checking the parts NumPy checks.
func readNpy(t *testing.T, b []byte) (header string, data []float32) {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
		t.Fatalf("bad magic %q", b[:8])
	}
	n := int(binary.LittleEndian.Uint16(b[8:10]))
	if (10+n)%64 != 0 || b[10+n-1] != '\n' {
		t.Fatalf("header of %d bytes: data must start 64-aligned after a newline", n)
	}
	header = string(b[10 : 10+n])
	data = make([]float32, (len(b)-10-n)/4)
	binary.Read(bytes.NewReader(b[10+n:]), binary.LittleEndian, data)
	return header, data
}

func TestLogitsCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "l.npy")
	ids := "2,4,100,5,7"
	if err := runLogits([]string{"-model", "../../testdata/cai-tiny", "-backend", "cpu", "-ids", ids, "-out", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	header, data := readNpy(t, b)
	if !strings.Contains(header, "'descr': '<f4'") || !strings.Contains(header, "'shape': (5, 384)") {
		t.Fatalf("header %q", header)
	}
	// The last row is what a session's forward pass gives for these tokens.
	m, err := engine.Load("../../testdata/cai-tiny", engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := m.Backend.NewSequence(16)
	last := make([]float32, 384)
	if err := seq.Forward([]int32{2, 4, 100, 5, 7}, 0, last); err != nil {
		t.Fatal(err)
	}
	for i, v := range last {
		if data[4*384+i] != v || math.IsNaN(float64(v)) {
			t.Fatalf("logit %d of the last token: file %v, forward %v", i, data[4*384+i], v)
		}
	}
}

func TestLogitsCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad id", []string{"-ids", "1,x", "-out", "o.npy"}, `"x" is not a token id`},
		{"id out of vocab", []string{"-ids", "1,384", "-out", filepath.Join(t.TempDir(), "o.npy"), "-backend", "cpu"}, "outside the vocabulary"},
		{"missing flags", []string{"-ids", "1"}, "required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-model", "../../testdata/cai-tiny"}, tc.args...)
			err := runLogits(args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
