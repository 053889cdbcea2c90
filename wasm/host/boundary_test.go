package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wick-run/wick/internal/modeltest"
)

// TestBadInputIsAnError sends bad input through the boundary: each call
// returns an error to the host (an *Error, not a trap), and the next valid
// call on the same instance works.
func TestBadInputIsAnError(t *testing.T) {
	ctx := testCtx(t)
	rt := sharedRuntime(t)
	dir := t.TempDir()
	modeltest.Copy(t, "../../testdata/cai-tiny", filepath.Join(dir, "good"))
	modeltest.Copy(t, "../../testdata/cai-tiny", filepath.Join(dir, "bad"))
	man := filepath.Join(dir, "bad", "manifest.pb")
	data, err := os.ReadFile(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(man, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	inst, err := rt.Instantiate(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	cpu := LoadOptions{Backend: "cpu"}
	var s *Session
	for _, tc := range []struct {
		name    string
		bad     func() error
		want    string
		thenRun func() error
	}{
		{"a call before load",
			func() error { _, err := inst.NewSession(ctx, ""); return err }, "no model is loaded",
			func() error { return inst.LoadModel(ctx, ModelMount+"/good", cpu) }},
		{"a truncated manifest",
			func() error { return inst.LoadModel(ctx, ModelMount+"/bad", cpu) }, "manifest.pb",
			func() (err error) { s, err = inst.NewSession(ctx, ""); return err }},
		{"a missing model directory",
			func() error { return inst.LoadModel(ctx, ModelMount+"/none", cpu) }, "manifest.pb",
			func() error { _, err := s.Complete(ctx, Turn{IDs: []int32{1, 2}, MaxTokens: 2}, nil); return err }},
		{"an out-of-range token id",
			func() error {
				_, err := s.Complete(ctx, Turn{IDs: []int32{1, int32(inst.Info.Vocab)}, MaxTokens: 2}, nil)
				return err
			}, "outside the vocabulary",
			func() error { _, err := s.Complete(ctx, Turn{IDs: []int32{3}, MaxTokens: 2}, nil); return err }},
		{"a negative token id",
			func() error { _, err := s.Complete(ctx, Turn{IDs: []int32{-1}, MaxTokens: 2}, nil); return err }, "outside the vocabulary",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 2}, nil); return err }},
		{"bad sampling parameters",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", Temperature: -1}, nil); return err }, "temperature",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 2}, nil); return err }},
		{"an unknown session",
			func() error {
				_, err := (&Session{i: inst, id: 99}).Send(ctx, Turn{Text: "hi"}, nil)
				return err
			}, "no session 99",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 1}, nil); return err }},
		{"input that is not JSON",
			func() error { _, err := inst.run(ctx, nil, "wick_send", []byte("{"), uint64(s.id)); return err }, "input",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 1}, nil); return err }},
		{"a resume with nothing in flight",
			func() error { return inst.status(ctx, "wick_resume", 0) }, "no call is in flight",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 1}, nil); return err }},
		{"a readback nobody asked for",
			func() error { return inst.status(ctx, "wick_mapped", 7, 0, 0) }, "mapped",
			func() error { _, err := s.Send(ctx, Turn{Text: "hi", MaxTokens: 1}, nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.bad()
			var me *Error
			if !errors.As(err, &me) {
				t.Fatalf("got %v, want an error returned by the module", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if err := tc.thenRun(); err != nil {
				t.Fatalf("the next valid call failed: %v", err)
			}
		})
	}
}

// status calls an export that returns a status and turns statusError
// into an *Error.
func (i *Instance) status(ctx context.Context, name string, args ...uint64) error {
	v, err := i.call(ctx, name, args...)
	if err != nil {
		return err
	}
	if int32(v) == statusError {
		msg, err := i.packed(ctx, "wick_error")
		if err != nil {
			return err
		}
		return &Error{Msg: string(msg)}
	}
	return nil
}

// TestCancelKeepsTheTokens stops a reply after its first token, on the
// CPU path and on the GPU path (where the reply runs on in greedy batches
// and the cancel must still end it), and the next turn works.
func TestCancelKeepsTheTokens(t *testing.T) {
	for _, backend := range []string{"cpu", "webgpu"} {
		t.Run(backend, func(t *testing.T) {
			ctx := testCtx(t)
			inst, err := sharedRuntime(t).Load(ctx, LoadOptions{Dir: "../../testdata/cai-tiny", Backend: backend})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)
			s, err := inst.NewSession(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Send(ctx, Turn{Text: "hello", MaxTokens: 8}, func(Token) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			if r.Finish != "cancelled" || len(r.Tokens) != 1 {
				t.Fatalf("cancelled after one token: got %d tokens, finish %q", len(r.Tokens), r.Finish)
			}
			if _, err := s.Send(ctx, Turn{Text: "again", MaxTokens: 2}, nil); err != nil {
				t.Fatalf("the turn after a cancel: %v", err)
			}
		})
	}
}

// TestCompilationCacheSkipsCompiling compiles the module twice into one
// cache directory: the second time writes nothing new and is much faster.
func TestCompilationCacheSkipsCompiling(t *testing.T) {
	wasm := module(t)
	dir := t.TempDir()
	files := func() map[string]time.Time {
		m := map[string]time.Time{}
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				m[p] = fi.ModTime()
			}
			return nil
		})
		return m
	}
	compile := func() time.Duration {
		t0 := time.Now()
		rt, err := New(context.Background(), wasm, Config{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		rt.Close(context.Background())
		return d
	}
	first := compile()
	after1 := files()
	if len(after1) == 0 {
		t.Fatal("the first compile left nothing in the cache directory")
	}
	second := compile()
	after2 := files()
	if len(after2) != len(after1) {
		t.Errorf("the second compile changed the cache: %d files, then %d", len(after1), len(after2))
	}
	for p, mt := range after1 {
		if !after2[p].Equal(mt) {
			t.Errorf("the second compile rewrote %s", p)
		}
	}
	t.Logf("compile %v, from the cache %v", first, second)
	if second*3 > first {
		t.Errorf("loading from the cache took %v, compiling %v: want at least 3x faster", second, first)
	}
}
