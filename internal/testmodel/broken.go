package testmodel

import (
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
)

// Broken is a model directory that must be refused, and what the refusal
// must say.
type Broken struct {
	Dir, Want string
}

// TB is the part of testing.TB the fixture helpers use. Naming it here
// keeps package testing (and its flags) out of the chat module, which links
// this package through bench.
type TB interface {
	Helper()
	Fatal(args ...any)
	TempDir() string
}

// BrokenDirs returns copies of a test model, each broken in a way the
// manifest decoder alone accepts but no session could run, with what the
// error must say. Tests of every command that opens a model (inspect,
// serve, Load) use the same table.
func BrokenDirs(t TB, src string) map[string]Broken {
	t.Helper()
	edit := func(fn func(m *manifestpb.Manifest)) string {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, format.ManifestFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := new(manifestpb.Manifest)
		if err := proto.Unmarshal(data, m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		if data, err = proto.Marshal(m); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	missingShard := edit(func(m *manifestpb.Manifest) {})
	f, err := format.Open(missingShard)
	if err != nil {
		t.Fatal(err)
	}
	shard := f.Manifest().Shards[0].File
	os.Remove(filepath.Join(missingShard, shard))
	return map[string]Broken{
		"no stop_ids":      {Dir: edit(func(m *manifestpb.Manifest) { m.Chat.StopIds = nil }), Want: "no stop_ids"},
		"no chat template": {Dir: edit(func(m *manifestpb.Manifest) { m.Chat = nil }), Want: "chat template: missing"},
		"no tokenizer":     {Dir: edit(func(m *manifestpb.Manifest) { m.Tokenizer = nil }), Want: "names no tokenizer"},
		"unknown special": {Dir: edit(func(m *manifestpb.Manifest) {
			m.Chat.SpecialTokens = append(m.Chat.SpecialTokens, &manifestpb.SpecialToken{Text: "<no such piece>", Id: 3})
		}), Want: `special token "<no such piece>"`},
		"tokenizer too big":  {Dir: edit(func(m *manifestpb.Manifest) { m.Tokenizer.Size++ }), Want: "size"},
		"missing shard file": {Dir: missingShard, Want: shard},
	}
}
