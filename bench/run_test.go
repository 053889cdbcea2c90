//go:build !js && !wasip1

package bench

import (
	"strconv"
	"strings"
	"testing"

	"github.com/wick-run/wick/internal/gputest"
)

// TestRunModelRow runs package bench on a tiny model on wgpu-native and
// reads its model table back: every row has the header's columns, and
// greedy and sampled decode and prefill are positive rates, so a column
// added to one and not the other, or a figure that was never timed, fails.
func TestRunModelRow(t *testing.T) {
	dev := gputest.Native().Open(t)
	var out strings.Builder
	o := Options{Model: "../testdata/cai-tiny", MiB: 1, Decode: 4, Prompt: 8, Gemv: "256x8"}
	if err := Run(dev, o, &out); err != nil {
		t.Fatal(err)
	}
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(line, "| "), " | ")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	var header []string
	rows := 0
	for _, line := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "| model |"):
			header = cells(line)
		case header != nil && strings.HasPrefix(line, "| "+o.Model+" |"):
			rows++
			row := cells(line)
			if len(row) != len(header) {
				t.Fatalf("row has %d cells, header %d:\n%s\n%s", len(row), len(header), strings.Join(header, " | "), line)
			}
			for i, h := range header {
				if !strings.Contains(h, "tok/s") {
					continue
				}
				rate, err := strconv.ParseFloat(strings.Fields(row[i])[0], 64)
				if err != nil || !(rate > 0) {
					t.Errorf("%s: %q, want a positive rate", h, row[i])
				}
			}
			if !strings.Contains(strings.Join(header, "|"), "sampled tg4 tok/s") {
				t.Errorf("no sampled decode column in %q", header)
			}
		}
	}
	// The device's tier and, where it has more, the fallback: at least one
	// row, each with every rate.
	if rows == 0 {
		t.Fatalf("no row for %s in:\n%s", o.Model, out.String())
	}
}
