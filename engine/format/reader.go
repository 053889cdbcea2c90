package format

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// Model is an opened model directory: a checked manifest, with shard bytes
// read on demand. Each shard file is hashed in full the first time any of
// its tensors is read, once per Model, so corruption surfaces as an error
// naming the shard rather than as wrong outputs. A Model is safe for
// concurrent use.
type Model struct {
	dir     string
	man     *manifestpb.Manifest
	cfg     *model.Config
	tensors map[string]*manifestpb.Tensor
	shards  []shardState
}

// shardState remembers whether a shard's file has been checked.
type shardState struct {
	mu sync.Mutex
	ok bool
}

// Open reads and checks the manifest in dir (see DecodeManifest). Shards are
// checked as they are read, or all at once by Verify. They are read from dir
// even when the manifest names a shard_base_url: dir is then a local copy.
func Open(dir string) (*Model, error) {
	data, err := readManifest(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	man, cfg, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %s: %w", dir, ManifestFile, err)
	}
	m := &Model{
		dir:     dir,
		man:     man,
		cfg:     cfg,
		tensors: make(map[string]*manifestpb.Tensor, len(man.Tensors)),
		shards:  make([]shardState, len(man.Shards)),
	}
	for _, t := range man.Tensors {
		m.tensors[t.Name] = t
	}
	return m, nil
}

// readManifest reads the manifest file, refusing one too large to be real
// before allocating for it.
func readManifest(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%s: larger than the limit of %d bytes", path, maxManifestBytes)
	}
	return data, nil
}

// Manifest returns the checked manifest. Callers must not modify it.
func (m *Model) Manifest() *manifestpb.Manifest { return m.man }

// Config returns the model's validated config.
func (m *Model) Config() *model.Config { return m.cfg }

// Dir returns the directory the model was opened from.
func (m *Model) Dir() string { return m.dir }

// TokenizerPath returns the path of the tokenizer file, or "" if the model
// has none. The file is not checked; ReadTokenizer and Verify check it.
func (m *Model) TokenizerPath() string {
	if m.man.Tokenizer == nil {
		return ""
	}
	return filepath.Join(m.dir, m.man.Tokenizer.File)
}

// ReadTokenizer returns the tokenizer file's bytes after checking its size
// and sha256 against the manifest.
func (m *Model) ReadTokenizer() ([]byte, error) {
	tok := m.man.Tokenizer
	if tok == nil {
		return nil, fmt.Errorf("load model %s: the manifest names no tokenizer", m.dir)
	}
	data, err := readChecked(m.TokenizerPath(), tok.Size, tok.Sha256)
	if err != nil {
		return nil, fmt.Errorf("load model %s: tokenizer %s: %w", m.dir, tok.File, err)
	}
	return data, nil
}

// ReadTensor returns the bytes of the named tensor, checking each shard it
// touches on first use.
func (m *Model) ReadTensor(name string) ([]byte, error) {
	data, err := m.readTensor(name)
	if err != nil {
		return nil, fmt.Errorf("load model %s: tensor %q: %w", m.dir, name, err)
	}
	return data, nil
}

func (m *Model) readTensor(name string) ([]byte, error) {
	t, ok := m.tensors[name]
	if !ok {
		return nil, errors.New("not in the manifest")
	}
	// The decoder checked that the pieces add up to the tensor's size and
	// lie inside shards whose sizes the shard check confirms.
	var size uint64
	for _, p := range t.Pieces {
		size += p.Length
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%d bytes do not fit in memory on this platform", size)
	}
	data := make([]byte, size)
	pos := 0
	for _, p := range t.Pieces {
		if err := m.checkShard(int(p.Shard)); err != nil {
			return nil, err
		}
		s := m.man.Shards[p.Shard]
		if err := readAt(filepath.Join(m.dir, s.File), data[pos:pos+int(p.Length)], int64(p.Offset)); err != nil {
			return nil, fmt.Errorf("shard %s: %w", s.File, err)
		}
		pos += int(p.Length)
	}
	return data, nil
}

func readAt(path string, buf []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, off); err != nil {
		// The file was checked a moment ago, so it changed since.
		return fmt.Errorf("read %d bytes at %d: %w (file changed while open)", len(buf), off, err)
	}
	return nil
}

// checkShard hashes shard i's file the first time it is asked for.
func (m *Model) checkShard(i int) error {
	st := &m.shards[i]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ok {
		return nil
	}
	s := m.man.Shards[i]
	if err := checkFile(filepath.Join(m.dir, s.File), s.Size, s.Sha256); err != nil {
		return fmt.Errorf("shard %s: %w", s.File, err)
	}
	st.ok = true
	return nil
}

// Verify checks every shard and the tokenizer against the manifest's sizes
// and hashes.
func (m *Model) Verify() error {
	for i := range m.shards {
		if err := m.checkShard(i); err != nil {
			return fmt.Errorf("verify model %s: %w", m.dir, err)
		}
	}
	if tok := m.man.Tokenizer; tok != nil {
		if err := checkFile(m.TokenizerPath(), tok.Size, tok.Sha256); err != nil {
			return fmt.Errorf("verify model %s: tokenizer %s: %w", m.dir, tok.File, err)
		}
	}
	return nil
}

// checkFile streams the file at path through sha256 and compares it and its
// size with the manifest's.
func checkFile(path string, size uint64, sum string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < 0 || uint64(fi.Size()) != size {
		return fmt.Errorf("size %d, manifest says %d (file truncated or replaced)", fi.Size(), size)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if uint64(n) != size {
		return fmt.Errorf("read %d bytes, manifest says %d (file changed while read)", n, size)
	}
	if hex.EncodeToString(h.Sum(nil)) != sum {
		return errors.New("sha256 mismatch (file corrupted or replaced)")
	}
	return nil
}

// readChecked reads a whole small file and checks its size and sha256.
func readChecked(path string, size uint64, sum string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Read one byte more than promised, so a longer file is noticed without
	// trusting its length.
	data, err := io.ReadAll(io.LimitReader(f, int64(size)+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if uint64(len(data)) != size {
		return nil, fmt.Errorf("size %d, manifest says %d (file truncated or replaced)", len(data), size)
	}
	if s := sha256.Sum256(data); hex.EncodeToString(s[:]) != sum {
		return nil, errors.New("sha256 mismatch (file corrupted or replaced)")
	}
	return data, nil
}
