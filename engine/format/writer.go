package format

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// A Writer streams tensors into shards in a model directory and finishes by
// writing the manifest. It holds no tensor bytes beyond the caller's and a
// small write buffer, so a converter can stream checkpoints larger than
// memory one tensor at a time.
//
// Files appear in the directory only complete: shards and the tokenizer are
// written to temporary files and renamed once hashed, the manifest last. On
// an I/O error the Writer aborts itself; callers that give up for their own
// reasons call Abort (it is safe to defer).
type Writer struct {
	dir       string
	shardSize uint64
	tensors   []*manifestpb.Tensor
	names     map[string]bool
	shards    []*manifestpb.Shard
	cur       *tempFile     // the shard being filled; nil between shards
	open      *TensorWriter // the tensor being written, between BeginTensor and its Close
	created   []string      // files this Writer added to dir, removed by Abort
	err       error         // sticky: set once the Writer has failed or finished
}

var errFinished = errors.New("writer already finished")

// NewWriter returns a Writer that puts shards of at most shardSize bytes into
// dir, creating dir if needed. shardSize <= 0 selects DefaultShardSize.
func NewWriter(dir string, shardSize int64) (*Writer, error) {
	w, err := newWriter(dir, shardSize)
	if err != nil {
		return nil, fmt.Errorf("write model %s: %w", dir, err)
	}
	return w, nil
}

// newWriter and the other lowercase twins of exported methods return errors
// that do not name the directory yet, so that WriteModel wraps them once.
func newWriter(dir string, shardSize int64) (*Writer, error) {
	if shardSize <= 0 {
		shardSize = DefaultShardSize
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Writer{dir: dir, shardSize: uint64(shardSize), names: make(map[string]bool)}, nil
}

// AddTensor appends a tensor of dtype and shape whose bytes are data
// (row-major, little-endian). An int8 tensor names its float32 per-row scale
// tensor in scale, which may be added before or after it; other tensors pass
// "". Each tensor starts at an Alignment boundary; one that does not fit in
// what is left of the current shard starts a new one, and one larger than
// the shard size spans several. A refused argument leaves the Writer usable;
// an I/O error aborts it.
func (w *Writer) AddTensor(name string, dtype manifestpb.DType, shape []int, data []byte, scale string) error {
	if err := w.addTensor(name, dtype, shape, data, scale); err != nil {
		return fmt.Errorf("write model %s: %w", w.dir, err)
	}
	return nil
}

func (w *Writer) addTensor(name string, dtype manifestpb.DType, shape []int, data []byte, scale string) error {
	t, size, err := w.newTensor(name, dtype, shape, scale)
	if err == nil && uint64(len(data)) != size {
		err = fmt.Errorf("%d bytes of data, but %v %v is %d bytes", len(data), dtype, shape, size)
	}
	if err == nil && dtype == manifestpb.DType_DTYPE_F32 {
		err = checkFinite(data)
	}
	if err != nil {
		return fmt.Errorf("tensor %q: %w", name, err)
	}
	tw := w.begin(t, size)
	if _, err := tw.write(data); err != nil {
		return err
	}
	return tw.close()
}

// BeginTensor starts a tensor as AddTensor adds one, for a caller that
// has its bytes only piece by piece (a converter, which must never hold a
// whole tensor): it writes them in order through the TensorWriter and ends
// with its Close. No other tensor may be added until then. A refused
// argument to BeginTensor leaves the Writer usable; any error of Write or
// Close aborts it, as the caller's Abort does.
func (w *Writer) BeginTensor(name string, dtype manifestpb.DType, shape []int, scale string) (*TensorWriter, error) {
	t, size, err := w.newTensor(name, dtype, shape, scale)
	if err != nil {
		return nil, fmt.Errorf("write model %s: tensor %q: %w", w.dir, name, err)
	}
	return w.begin(t, size), nil
}

// A TensorWriter takes the bytes of one tensor in order; see BeginTensor.
type TensorWriter struct {
	w     *Writer
	t     *manifestpb.Tensor
	left  uint64 // bytes still to come
	elem  int    // bytes per element: Write takes whole ones
	begun bool   // the tensor's placement (padding or a new shard) is done
}

// Write appends p, whole elements of the tensor's dtype (float32 ones must
// be finite), to the tensor.
func (tw *TensorWriter) Write(p []byte) (int, error) {
	n, err := tw.write(p)
	if err != nil {
		return n, fmt.Errorf("write model %s: %w", tw.w.dir, err)
	}
	return n, nil
}

// Close ends the tensor, which must have had all its bytes, and records it.
func (tw *TensorWriter) Close() error {
	if err := tw.close(); err != nil {
		return fmt.Errorf("write model %s: %w", tw.w.dir, err)
	}
	return nil
}

// begin returns the TensorWriter of t, size bytes; nothing is written yet.
func (w *Writer) begin(t *manifestpb.Tensor, size uint64) *TensorWriter {
	tw := &TensorWriter{w: w, t: t, left: size, elem: int(dtypeSize(t.Dtype))}
	w.open = tw
	return tw
}

func (tw *TensorWriter) write(p []byte) (int, error) {
	w := tw.w
	err := w.err
	switch {
	case err != nil:
	case w.open != tw:
		err = errors.New("written after Close")
	case uint64(len(p)) > tw.left:
		err = fmt.Errorf("%d more bytes, but only %d are left of the tensor", len(p), tw.left)
	case len(p)%tw.elem != 0:
		err = fmt.Errorf("%d bytes is not a whole number of %d-byte elements", len(p), tw.elem)
	case tw.t.Dtype == manifestpb.DType_DTYPE_F32:
		err = checkFinite(p)
	}
	if err == nil && !tw.begun {
		tw.begun = true
		err = w.startTensor(tw.left) // nothing is written yet: left is the whole size
	}
	if err == nil {
		err = w.place(tw.t, p)
	}
	if err != nil {
		w.fail(err)
		return 0, fmt.Errorf("tensor %q: %w", tw.t.Name, err)
	}
	tw.left -= uint64(len(p))
	return len(p), nil
}

func (tw *TensorWriter) close() error {
	w := tw.w
	err := w.err
	switch {
	case err != nil:
	case w.open != tw:
		err = errors.New("closed twice")
	case tw.left != 0:
		err = fmt.Errorf("closed with %d of its bytes not written", tw.left)
	}
	if err != nil {
		w.fail(err)
		return fmt.Errorf("tensor %q: %w", tw.t.Name, err)
	}
	w.open = nil
	w.names[tw.t.Name] = true
	w.tensors = append(w.tensors, tw.t)
	return nil
}

// newTensor checks the arguments of AddTensor and BeginTensor and returns
// the tensor without pieces and its size; nothing is written yet, so a bad
// call leaves the Writer usable.
func (w *Writer) newTensor(name string, dtype manifestpb.DType, shape []int, scale string) (*manifestpb.Tensor, uint64, error) {
	if w.err != nil {
		return nil, 0, w.err
	}
	if w.open != nil {
		return nil, 0, fmt.Errorf("tensor %q is still being written", w.open.t.Name)
	}
	if name == "" {
		return nil, 0, errors.New("empty name")
	}
	if w.names[name] {
		return nil, 0, errors.New("added twice")
	}
	dims := make([]uint64, len(shape))
	for i, d := range shape {
		if d <= 0 {
			return nil, 0, fmt.Errorf("shape %v has a dim that is not positive", shape)
		}
		dims[i] = uint64(d)
	}
	size, err := tensorBytes(dtype, dims)
	if err != nil {
		return nil, 0, err
	}
	if (dtype == manifestpb.DType_DTYPE_INT8) != (scale != "") {
		return nil, 0, fmt.Errorf("%v tensor with scale %q: int8 tensors, and only they, name a scale tensor", dtype, scale)
	}
	return &manifestpb.Tensor{Name: name, Dtype: dtype, Shape: dims, Scale: scale}, size, nil
}

// startTensor places the start of a tensor of size bytes: at the next
// aligned offset of the current shard, or in a new shard when it would not
// fit the rest of this one.
func (w *Writer) startTensor(size uint64) error {
	if w.cur == nil {
		return nil
	}
	start := alignUp(w.cur.size)
	if start+size > w.shardSize {
		// Close this shard rather than split a tensor that fits whole in
		// a fresh one: fewer pieces, fewer requests for one tensor.
		return w.closeShard()
	}
	_, err := w.cur.Write(zeros[:start-w.cur.size])
	return err
}

// place writes data, the next bytes of t, into shards and records its
// pieces in t, merging with t's last piece where it continues it.
func (w *Writer) place(t *manifestpb.Tensor, data []byte) error {
	for len(data) > 0 {
		if w.cur == nil {
			f, err := newTempFile(w.dir)
			if err != nil {
				return fmt.Errorf("create shard: %w", err)
			}
			w.cur = f
		}
		chunk := min(uint64(len(data)), w.shardSize-w.cur.size)
		// The shard's index is the one it will get when it is closed.
		shard := uint32(len(w.shards))
		if n := len(t.Pieces); n > 0 && t.Pieces[n-1].Shard == shard && t.Pieces[n-1].Offset+t.Pieces[n-1].Length == w.cur.size {
			t.Pieces[n-1].Length += chunk
		} else {
			t.Pieces = append(t.Pieces, &manifestpb.Piece{Shard: shard, Offset: w.cur.size, Length: chunk})
		}
		if _, err := w.cur.Write(data[:chunk]); err != nil {
			return err
		}
		data = data[chunk:]
		if w.cur.size == w.shardSize {
			if err := w.closeShard(); err != nil {
				return err
			}
		}
	}
	return nil
}

var zeros [Alignment]byte

func alignUp(n uint64) uint64 { return (n + Alignment - 1) / Alignment * Alignment }

// closeShard names the current shard after its hash and records it.
func (w *Writer) closeShard() error {
	s := w.cur
	w.cur = nil
	sum := s.sum()
	name := shardName(sum)
	if err := s.commit(filepath.Join(w.dir, name), &w.created); err != nil {
		return fmt.Errorf("shard %s: %w", name, err)
	}
	w.shards = append(w.shards, &manifestpb.Shard{File: name, Size: s.size, Sha256: sum})
	return nil
}

// Finish closes the last shard, copies the tokenizer file at tokenizerPath
// into the directory (as tokenizer.json for a Hugging Face tokenizer.json,
// tokenizer.model for a SentencePiece model; "" for none), checks the
// manifest as a reader would and writes it. On any error it aborts.
func (w *Writer) Finish(name string, cfg *model.Config, tokenizerPath string, chat *manifestpb.ChatTemplate) error {
	if err := w.finishOrFail(name, cfg, tokenizerPath, chat); err != nil {
		return fmt.Errorf("write model %s: %w", w.dir, err)
	}
	return nil
}

func (w *Writer) finishOrFail(name string, cfg *model.Config, tokenizerPath string, chat *manifestpb.ChatTemplate) error {
	if err := w.finish(name, cfg, tokenizerPath, chat); err != nil {
		w.fail(err)
		return err
	}
	w.err = errFinished
	return nil
}

func (w *Writer) finish(name string, cfg *model.Config, tokenizerPath string, chat *manifestpb.ChatTemplate) error {
	if w.err != nil {
		return w.err
	}
	if cfg == nil {
		return errors.New("no config")
	}
	if w.open != nil {
		return fmt.Errorf("tensor %q was begun but not closed", w.open.t.Name)
	}
	if w.cur != nil {
		if err := w.closeShard(); err != nil {
			return err
		}
	}
	m := &manifestpb.Manifest{
		FormatVersion: VersionFor(cfg),
		Name:          name,
		Config:        ConfigToProto(cfg),
		Chat:          chat,
		Tensors:       w.tensors,
		Shards:        w.shards,
	}
	var tok *tempFile
	if tokenizerPath != "" {
		var err error
		if m.Tokenizer, tok, err = w.copyTokenizer(tokenizerPath); err != nil {
			return err
		}
		defer tok.discard()
	}
	if _, err := checkManifest(m); err != nil {
		return fmt.Errorf("manifest would not load: %w", err)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	// The tokenizer goes first: a manifest must never name a file that is
	// not there yet.
	if tok != nil {
		if err := tok.commit(filepath.Join(w.dir, m.Tokenizer.File), &w.created); err != nil {
			return fmt.Errorf("tokenizer %s: %w", m.Tokenizer.File, err)
		}
	}
	mf, err := newTempFile(w.dir)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer mf.discard()
	if _, err := mf.Write(data); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := mf.commit(filepath.Join(w.dir, ManifestFile), nil); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// copyTokenizer copies the tokenizer file into a temporary file in the model
// directory while hashing it, and returns its manifest entry.
func (w *Writer) copyTokenizer(path string) (*manifestpb.Tokenizer, *tempFile, error) {
	tok := &manifestpb.Tokenizer{}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		tok.Kind, tok.File = manifestpb.TokenizerKind_TOKENIZER_KIND_HF_JSON, "tokenizer.json"
	case ".model":
		tok.Kind, tok.File = manifestpb.TokenizerKind_TOKENIZER_KIND_SENTENCEPIECE, "tokenizer.model"
	default:
		return nil, nil, fmt.Errorf("tokenizer %s: cannot tell its kind: want a Hugging Face .json or a SentencePiece .model", path)
	}
	src, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer src.Close()
	tf, err := newTempFile(w.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	if _, err := io.Copy(tf, src); err != nil {
		tf.discard()
		return nil, nil, fmt.Errorf("copy tokenizer %s: %w", path, err)
	}
	tok.Size, tok.Sha256 = tf.size, tf.sum()
	return tok, tf, nil
}

// Abort stops the Writer and removes what it put in the directory: the
// shard being written and the files it completed that were not there
// before. It does nothing after a successful Finish, so it may be deferred.
func (w *Writer) Abort() {
	w.fail(errors.New("writer aborted"))
}

// fail makes err sticky and cleans up, unless the Writer already failed or
// finished.
func (w *Writer) fail(err error) {
	if w.err != nil {
		return
	}
	w.err = err
	if w.cur != nil {
		w.cur.discard()
		w.cur = nil
	}
	for _, p := range w.created {
		os.Remove(p)
	}
	w.created = nil
}

// tempFile is a file being written in the model directory under a temporary
// name, hashed and counted as it goes. It appears under its real name only
// through commit; discard removes it otherwise.
type tempFile struct {
	f    *os.File
	buf  *bufio.Writer
	hash hash.Hash
	size uint64
	done bool
}

func newTempFile(dir string) (*tempFile, error) {
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return nil, err
	}
	// Tensors larger than the buffer bypass it; it only gathers padding and
	// small tensors into fewer writes.
	return &tempFile{f: f, buf: bufio.NewWriterSize(f, 64<<10), hash: sha256.New()}, nil
}

func (t *tempFile) Write(p []byte) (int, error) {
	n, err := t.buf.Write(p)
	t.hash.Write(p[:n])
	t.size += uint64(n)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", t.f.Name(), err)
	}
	return n, nil
}

// sum is the hex sha256 of what was written so far.
func (t *tempFile) sum() string { return hex.EncodeToString(t.hash.Sum(nil)) }

// commit flushes, syncs and closes the file and renames it to path, so that
// path holds either its old content or the whole new one. If path did not
// exist before, it is added to created (when not nil).
func (t *tempFile) commit(path string, created *[]string) error {
	err := t.buf.Flush()
	if err == nil {
		err = t.f.Chmod(0o644) // CreateTemp makes 0600; models are meant to be served
	}
	if err == nil {
		err = t.f.Sync()
	}
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, statErr := os.Lstat(path)
		if err = os.Rename(t.f.Name(), path); err == nil {
			t.done = true
			if created != nil && errors.Is(statErr, os.ErrNotExist) {
				*created = append(*created, path)
			}
			return nil
		}
	}
	os.Remove(t.f.Name())
	t.done = true
	return err
}

func (t *tempFile) discard() {
	if !t.done {
		t.f.Close()
		os.Remove(t.f.Name())
		t.done = true
	}
}
