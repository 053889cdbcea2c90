package engine

import (
	"slices"
	"testing"

	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// TestFirstAheadStepsBounds checks how far the reply's first decode batch
// may run when it is submitted before the prompt's pick is back
// (Session.firstAheadSteps): every step of it can be taken back, since the
// pick may be a stop, and the blocks the prompt's last step completed stay
// capturable after it, since they go into the prefix cache only once the
// pick is out (Session.rememberNow). On cai-tiny's rings (window 8, shorter
// than a block) a prompt's last step ends at the first block it completes,
// so only the rewind bound can bind there; this layout's rings have a
// window of 60 (between one and two 32-token blocks), where a step runs up
// to kv.Layout.CaptureBound past its first block and the capture bound is
// the tighter one.
func TestFirstAheadStepsBounds(t *testing.T) {
	m := load(t, "../testdata/cai-tiny", Options{CacheBytes: 0})
	if m.Cache == nil || m.Cache.Block() != 32 {
		t.Fatalf("the test assumes a prefix cache of 32-token blocks")
	}
	cfg := *m.Config
	cfg.Layers = slices.Clone(cfg.Layers)
	for i := range cfg.Layers {
		if cfg.Layers[i].Kind == model.Local {
			cfg.Layers[i].Window = 60
		}
	}
	lay, err := kv.NewLayout(&cfg, m.context)
	if err != nil {
		t.Fatal(err)
	}
	m.layout = lay
	// Block [0, 32)'s live part in a ring of 60 + RingRoom slots is all of
	// it, overwritten once position 68 is written; positions from 65 can be
	// taken back while at most 74 (65 - 59 + 68) are written.
	const blockBound = 0 + 60 + kv.RingRoom
	if got := lay.CaptureBound(0, 32); got != blockBound {
		t.Fatalf("CaptureBound(0, 32) = %d, want %d", got, blockBound)
	}
	for _, tc := range []struct {
		name       string
		cache      bool
		start, end int
		written    int // how far the sequence has written (at least end)
		want       int
	}{
		{"a block's live part ends the batch", true, 0, 65, 65, blockBound - 65},
		{"at the capture bound: none ahead", true, 0, blockBound, blockBound, 0},
		{"no block completed: a whole batch", true, 40, 50, 50, maxGreedySteps},
		{"no cache: the rewind bound alone", false, 0, 65, 65, maxGreedySteps},
		{"written to the rewind bound", false, 0, 65, 74, maxGreedySteps},
		{"written past the rewind bound", false, 0, 65, 75, 0},
		{"at the context limit", false, 0, m.context - 2, m.context - 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession(t, m, "")
			if !tc.cache {
				s.cache = nil
			}
			s.toks = testmodel.Tokens(tc.end, m.Config.Vocab, 1)
			s.written = tc.written
			got := s.firstAheadSteps(tc.start, tc.end, 0)
			if got != tc.want {
				t.Fatalf("firstAheadSteps(%d, %d) with %d written = %d, want %d", tc.start, tc.end, tc.written, got, tc.want)
			}
			// Whatever it allows keeps both promises.
			if got > 0 {
				last := max(tc.written, tc.end+got)
				if !lay.CanRewind(last, tc.end) {
					t.Errorf("a batch to %d cannot be taken back to %d", last, tc.end)
				}
				if s.cache != nil {
					for _, sp := range s.blockSpans(tc.start, tc.end) {
						if !lay.CanCapture(last, sp.From, sp.To) {
							t.Errorf("block %v is lost once %d are written", sp, last)
						}
					}
				}
			}
		})
	}
}
