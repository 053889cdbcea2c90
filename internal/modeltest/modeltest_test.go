package modeltest

import (
	"path/filepath"
	"testing"
)

// TestCopyLoads copies a test model and loads the copy: every shard made
// it across whole (LoadWeights checks their hashes).
func TestCopyLoads(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "copy")
	Copy(t, "../../testdata/cai-tiny", dst)
	f, w := Load(t, dst)
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	if w.Embed.Rows != f.Config().Vocab {
		t.Errorf("embedding of %d rows, config's vocabulary %d", w.Embed.Rows, f.Config().Vocab)
	}
}
