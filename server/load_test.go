package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
	"github.com/wick-run/wick/internal/testmodel"
)

// closeCounter is a backend that only counts how many were made and closed,
// to show that a failed start closes every model it loaded.
type closeCounter struct{ made, closed *atomic.Int64 }

func (b closeCounter) Name() string { return "close-counter" }
func (b closeCounter) NewSequence(int) (engine.Sequence, error) {
	return nil, errors.New("close-counter runs nothing")
}
func (b closeCounter) Close() error { b.closed.Add(1); return nil }

var counted = struct{ made, closed atomic.Int64 }{}

func init() {
	engine.Register("server-test-close-counter", func(*model.Config, *model.Weights, bool) (engine.Backend, error) {
		counted.made.Add(1)
		return closeCounter{&counted.made, &counted.closed}, nil
	})
}

// editModelManifest copies the first test model and edits its manifest.
func editModelManifest(t *testing.T, edit func(m *manifestpb.Manifest)) string {
	t.Helper()
	dir := copyModel(t, testModelDirs[0], "m")
	path := filepath.Join(dir, format.ManifestFile)
	m := new(manifestpb.Manifest)
	if err := proto.Unmarshal(readFile(t, path), m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAPILoadFailures starts the API on models the engine cannot load: each
// start must fail with an error saying why (it used to panic), and close the
// models loaded before the failing one.
func TestAPILoadFailures(t *testing.T) {
	shard, data := firstShard(t, testModelDirs[0])
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (string, engine.Options)
		want  []string
	}{
		{"corrupted shard", func(t *testing.T) (string, engine.Options) {
			dir := copyModel(t, testModelDirs[0], "m")
			bad := append([]byte(nil), data...)
			bad[len(bad)/2] ^= 1
			os.WriteFile(filepath.Join(dir, shard), bad, 0o644)
			return dir, engine.Options{}
		}, []string{shard, "sha256 mismatch", "DIR"}},
		{"corrupted tokenizer", func(t *testing.T) (string, engine.Options) {
			dir := copyModel(t, testModelDirs[0], "m")
			tok := readFile(t, filepath.Join(dir, "tokenizer.model"))
			tok[len(tok)/2] ^= 1
			os.WriteFile(filepath.Join(dir, "tokenizer.model"), tok, 0o644)
			return dir, engine.Options{}
		}, []string{"tokenizer", "sha256 mismatch", "DIR"}},
		{"wrong sha", func(t *testing.T) (string, engine.Options) {
			return editModelManifest(t, func(m *manifestpb.Manifest) { m.Tokenizer.Sha256 = strings.Repeat("0", 64) }), engine.Options{}
		}, []string{"tokenizer", "sha256 mismatch", "DIR"}},
		{"no stop_ids", func(t *testing.T) (string, engine.Options) {
			return editModelManifest(t, func(m *manifestpb.Manifest) { m.Chat.StopIds = nil }), engine.Options{}
		}, []string{"no stop_ids", "DIR"}},
		{"no tokenizer", func(t *testing.T) (string, engine.Options) {
			return editModelManifest(t, func(m *manifestpb.Manifest) { m.Tokenizer = nil }), engine.Options{}
		}, []string{"names no tokenizer", "DIR"}},
		{"bogus backend", func(t *testing.T) (string, engine.Options) {
			return copyModel(t, testModelDirs[0], "m"), engine.Options{Backend: "bogus"}
		}, []string{`unknown backend "bogus"`, "model plain-tiny"}},
		{"negative context", func(t *testing.T) (string, engine.Options) {
			return copyModel(t, testModelDirs[0], "m"), engine.Options{Context: -1}
		}, []string{"context -1", "model plain-tiny"}},
		{"context above the model's", func(t *testing.T) (string, engine.Options) {
			return copyModel(t, testModelDirs[0], "m"), engine.Options{Context: 99999}
		}, []string{"context 99999", "model plain-tiny"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, opts := tc.setup(t)
			made, closed := counted.made.Load(), counted.closed.Load()
			if opts.Backend == "" {
				opts.Backend = "server-test-close-counter"
			}
			s, err := New(Config{Models: []string{testModelDirs[1], dir}, API: true, Engine: opts, Assets: testAssets(), Logf: t.Logf})
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if w == "DIR" {
					w = dir // the directory of the model that failed
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if m, c := counted.made.Load()-made, counted.closed.Load()-closed; m != c {
				t.Errorf("%d backends made, %d closed", m, c)
			}
		})
	}
}

// TestStaticServeRefusesWhatEngineRefuses checks that wick serve, even
// without -api, refuses every model the engine would (it used to offer the
// page models that no session could run), saying the same as engine.Check.
func TestStaticServeRefusesWhatEngineRefuses(t *testing.T) {
	for name, tc := range testmodel.BrokenDirs(t, testModelDirs[0]) {
		t.Run(name, func(t *testing.T) {
			_, want := engine.Check(tc.Dir)
			s, err := New(Config{Models: []string{tc.Dir}, Assets: testAssets(), Logf: t.Logf})
			if err == nil {
				s.Close()
				t.Fatal("New served a model the engine refuses")
			}
			if want == nil || !strings.Contains(err.Error(), want.Error()) || !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("New: %v; engine.Check: %v; want both to say %q", err, want, tc.Want)
			}
		})
	}
}
