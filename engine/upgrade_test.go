package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/kv"
	"github.com/wick-run/wick/internal/modeltest"
)

// asFormatVersion1 copies the model directory src to a temporary one whose
// manifest is what a format version 1 writer made of the same model: the
// same shards, no kv_role.
func asFormatVersion1(t *testing.T, src string) string {
	t.Helper()
	f := modeltest.Open(t, src)
	dir := t.TempDir()
	modeltest.Copy(t, src, dir)
	m := proto.Clone(f.Manifest()).(*manifestpb.Manifest)
	m.FormatVersion = 1
	for _, l := range m.Config.Layers {
		l.KvRole = manifestpb.KvRole_KV_ROLE_UNSPECIFIED
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, format.ManifestFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSaveUnderOldManifestReplays checks what a browser's saved chat meets
// after the model's manifest was rewritten in the new format version (same
// weights): the save is stamped with the old manifest, so its KV is refused
// cleanly (kv.ErrSnapshotModel) and the chat comes back from its messages,
// answering exactly as the old model answers the same replayed messages.
func TestSaveUnderOldManifestReplays(t *testing.T) {
	ctx := context.Background()
	old := load(t, asFormatVersion1(t, testModels[0]), Options{})
	s := newSession(t, old, card)
	if _, err := s.Send(ctx, "Hello, Ada.", greedy, nil); err != nil {
		t.Fatal(err)
	}
	saved, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	oldReplay, err := old.ReplaySession(saved)
	if err != nil {
		t.Fatal(err)
	}
	defer oldReplay.Close()
	want, err := oldReplay.Send(ctx, "Go on.", greedy, nil)
	if err != nil {
		t.Fatal(err)
	}

	cur := load(t, testModels[0], Options{})
	if got, err := format.Open(testModels[0]); err != nil || got.Manifest().FormatVersion != format.VersionFor(got.Config()) {
		t.Fatalf("testdata model is not at the format version its writer would stamp (%v): run make testdata", err)
	}
	if r, err := cur.RestoreSession(saved); !errors.Is(err, kv.ErrSnapshotModel) || r != nil {
		t.Fatalf("restoring a save of the old manifest: %v, %v; want kv.ErrSnapshotModel", r, err)
	}
	r, err := cur.ReplaySession(saved)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Messages()) != 3 || r.KVLen() != 0 || r.Messages()[0].Content != card {
		t.Fatalf("replay gave %d messages and %d tokens of KV, want the 3 saved and none", len(r.Messages()), r.KVLen())
	}
	got, err := r.Send(ctx, "Go on.", greedy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tokens, want.Tokens) || got.CachedTokens != 0 {
		t.Errorf("replayed chat replied %v (cached %d), the old model %v", got.Tokens, got.CachedTokens, want.Tokens)
	}
}
