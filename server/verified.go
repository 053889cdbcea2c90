package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// verifiedFile is a model file served under its manifest sha256 as a strong
// (for shards, immutable) ETag. Its bytes are hashed before they are first
// served, and served from the very descriptor that was hashed; a change of
// size, mtime or inode (a rewrite in place, or another file renamed over
// it) makes the next request hash it again, and a mismatch is refused,
// naming the file. Hashing holds the file's lock, so requests wait for it
// rather than see unchecked bytes.
type verifiedFile struct {
	name   string
	size   int64
	sha256 string

	mu     sync.Mutex
	cur    *openFile // nil until hashed, or after a change
	closed bool
}

// openFile is a hashed descriptor shared by the requests reading it; the
// last one to let go of a superseded descriptor closes it.
type openFile struct {
	f     *os.File
	st    os.FileInfo // when hashed
	refs  int
	stale bool
}

// errClosed is what open returns once the server is closing.
var errClosed = errors.New("server closed")

// errChanged marks a file whose bytes no longer match its manifest.
var errChanged = errors.New("does not match its manifest's sha256 (changed on disk since the server started)")

// open returns the file's hashed descriptor and a func to call when done
// reading it, hashing the file first if it was never hashed or changed.
func (v *verifiedFile) open(root *os.Root) (*os.File, func(), error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, nil, errClosed
	}
	if v.cur != nil && !v.changed(root) {
		return v.acquire()
	}
	v.drop()
	f, err := root.Open(v.name)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && (!st.Mode().IsRegular() || st.Size() != v.size) {
		err = fmt.Errorf("%s of %d bytes, the manifest lists a file of %d", st.Mode().Type(), st.Size(), v.size)
	}
	if err == nil {
		err = hashMatches(f, v.size, v.sha256)
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", v.name, err)
	}
	v.cur = &openFile{f: f, st: st}
	return v.acquire()
}

// changed reports whether the file at the name, or the hashed descriptor,
// differs in size, mtime or inode from when it was hashed.
func (v *verifiedFile) changed(root *os.Root) bool {
	was := v.cur.st
	now, err := v.cur.f.Stat()
	if err != nil || now.Size() != was.Size() || !now.ModTime().Equal(was.ModTime()) {
		return true
	}
	at, err := root.Stat(v.name)
	return err != nil || !os.SameFile(at, was) || at.Size() != was.Size() || !at.ModTime().Equal(was.ModTime())
}

func (v *verifiedFile) acquire() (*os.File, func(), error) {
	c := v.cur
	c.refs++
	return c.f, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		c.refs--
		if c.stale && c.refs == 0 {
			c.f.Close()
		}
	}, nil
}

// drop retires the current descriptor; it closes once no request reads it.
func (v *verifiedFile) drop() {
	if c := v.cur; c != nil {
		c.stale = true
		if c.refs == 0 {
			c.f.Close()
		}
		v.cur = nil
	}
}

func (v *verifiedFile) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	v.drop()
}

// hashMatches streams size bytes of f through sha256 and compares.
func hashMatches(f *os.File, size int64, sum string) error {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != sum {
		return errChanged
	}
	return nil
}
