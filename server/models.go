package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

// Cache policies. Shard names carry their sha256, so a shard URL names one
// content forever; the manifest and tokenizer keep their names across model
// versions, so browsers revalidate them (cheaply, by ETag) on every use.
const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheRevalidate = "no-cache"
)

// maxManifestBytes mirrors the format's own limit on a manifest's size, so
// the server refuses what the page's decoder would.
const maxManifestBytes = 64 << 20

// servedModel is one model directory as the server offers it.
type servedModel struct {
	name     string   // the URL segment: the directory's base name
	dir      string   // as given
	root     *os.Root // every file is opened through it
	man      *manifestpb.Manifest
	cfg      *model.Config
	manifest *blob  // as served: shard_base_url rewritten where asked
	baseURL  string // the served manifest's shard_base_url
	files    map[string]modelFile
	hashed   sync.WaitGroup // the background hashing of files
}

// modelFile is a file the manifest lists, with what the server tells about it.
type modelFile struct {
	*verifiedFile
	etag         string
	contentType  string
	cacheControl string
}

// blob is an in-memory response body with its strong ETag.
type blob struct {
	data []byte
	etag string
}

func newBlob(data []byte) *blob {
	sum := sha256.Sum256(data)
	return &blob{data: data, etag: etagOf(hex.EncodeToString(sum[:]))}
}

// etagOf is the strong ETag of content whose sha256 is sum (hex).
func etagOf(sum string) string { return `"sha256:` + sum + `"` }

// openServedModel reads and checks dir's manifest and confirms that every
// file it lists is a regular file of the listed size inside dir. shardBase,
// when not empty, becomes the served manifest's shard_base_url. The files'
// hashes are checked before they are served (see verifiedFile), not here,
// so that a server starts without reading every byte first.
func openServedModel(name, dir, shardBase string) (m *servedModel, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			root.Close()
		}
	}()
	data, err := readSmall(root, format.ManifestFile, maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	man, err := format.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("model %s: %s: %w", dir, format.ManifestFile, err)
	}
	cfg, err := format.ConfigFromProto(man.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("model %s: %s: %w", dir, format.ManifestFile, err)
	}
	if shardBase != "" {
		if data, err = rewriteShardBase(man, shardBase); err != nil {
			return nil, fmt.Errorf("model %s: %w", dir, err)
		}
	}
	if shardBase == "" {
		shardBase = man.GetShardBaseUrl()
	}
	m = &servedModel{name: name, dir: dir, root: root, man: man, cfg: cfg, manifest: newBlob(data), baseURL: shardBase, files: make(map[string]modelFile)}
	for _, s := range man.GetShards() {
		m.files[s.GetFile()] = modelFile{
			verifiedFile: &verifiedFile{name: s.GetFile(), size: int64(s.GetSize()), sha256: s.GetSha256()},
			etag:         etagOf(s.GetSha256()), contentType: "application/octet-stream", cacheControl: cacheImmutable,
		}
	}
	if t := man.GetTokenizer(); t != nil {
		ct := "application/octet-stream"
		if t.GetKind() == manifestpb.TokenizerKind_TOKENIZER_KIND_HF_JSON {
			ct = "application/json"
		}
		m.files[t.GetFile()] = modelFile{
			verifiedFile: &verifiedFile{name: t.GetFile(), size: int64(t.GetSize()), sha256: t.GetSha256()},
			etag:         etagOf(t.GetSha256()), contentType: ct, cacheControl: cacheRevalidate,
		}
	}
	for file, f := range m.files {
		st, err := root.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", dir, err)
		}
		if !st.Mode().IsRegular() || st.Size() != f.size {
			return nil, fmt.Errorf("model %s: %s: %s of %d bytes, the manifest lists a file of %d", dir, file, st.Mode().Type(), st.Size(), f.size)
		}
	}
	return m, nil
}

// verifyInBackground hashes every file of m once, so that the first
// requests rarely wait for it; a mismatch is logged now, and refused when
// asked for.
func (m *servedModel) verifyInBackground(logf func(string, ...any)) {
	m.hashed.Add(1)
	go func() {
		defer m.hashed.Done()
		for _, f := range m.files {
			if _, done, err := f.open(m.root); errors.Is(err, errClosed) {
				return
			} else if err != nil {
				logf("wick serve: model %s: %v", m.dir, err)
			} else {
				done()
			}
		}
	}()
}

func (m *servedModel) close() error {
	for _, f := range m.files {
		f.close()
	}
	m.hashed.Wait()
	return m.root.Close()
}

// readSmall reads a whole file from root, refusing one above limit bytes
// before reading it all.
func readSmall(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than the limit of %d bytes", name, limit)
	}
	return data, nil
}

// rewriteShardBase returns man encoded with shard_base_url set to base, after
// checking that the format's decoder accepts the result.
func rewriteShardBase(man *manifestpb.Manifest, base string) ([]byte, error) {
	out := proto.Clone(man).(*manifestpb.Manifest)
	out.ShardBaseUrl = base
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("rewrite shard_base_url: %w", err)
	}
	if _, err := format.DecodeManifest(data); err != nil {
		return nil, fmt.Errorf("rewrite shard_base_url: %w", err)
	}
	return data, nil
}

// shardBase is a parsed Config.ShardBase.
type shardBase struct {
	url    string // ends with "/"; may hold "{model}"
	origin string // scheme://host[:port], for the CSP's connect-src
}

// modelPlaceholder in a shard base URL stands for the model's name, for
// deployments that keep each model's shards in its own folder. Without it
// all models share one folder, which content-addressed names make safe.
const modelPlaceholder = "{model}"

func parseShardBase(raw string) (shardBase, error) {
	if raw == "" {
		return shardBase{}, nil
	}
	if !strings.HasSuffix(raw, "/") {
		raw += "/"
	}
	b := shardBase{url: raw}
	// Check the URL as a model's would be; forModel checks each again.
	u, err := b.check(strings.ReplaceAll(raw, modelPlaceholder, "m"))
	if err != nil {
		return shardBase{}, err
	}
	b.origin = u.Scheme + "://" + u.Host
	return b, nil
}

// check parses a shard base URL with {model} substituted: an absolute http
// or https URL, with no query, fragment or user info (shard names are
// appended to it), and none of the characters that would end or extend a
// directive of the Content-Security-Policy its origin goes into (';', ',',
// quotes, whitespace) or anything else outside plain URL characters.
func (b shardBase) check(s string) (*url.URL, error) {
	fail := func(why string) (*url.URL, error) {
		return nil, fmt.Errorf("server: shard base %q: %s", b.url, why)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-._~:/?#[]@!$&()*+=%", c)
		if !ok {
			return fail(fmt.Sprintf("character %q is not allowed (it could break the Content-Security-Policy)", c))
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fail(err.Error())
	case u.Scheme != "http" && u.Scheme != "https":
		return fail("want an http or https URL")
	case u.Host == "" || u.Hostname() == "":
		return fail("no host")
	case u.Fragment != "" || u.RawQuery != "" || u.User != nil || u.Opaque != "":
		return fail("no query, fragment or user info allowed (shard names are appended to it)")
	}
	return u, nil
}

func (b shardBase) forModel(name string) (string, error) {
	s := strings.ReplaceAll(b.url, modelPlaceholder, name)
	if _, err := b.check(s); err != nil {
		return "", err
	}
	return s, nil
}

// serveModelFile serves a file the manifest lists: the manifest from memory,
// shards and the tokenizer from disk through http.ServeContent, which
// answers Range and conditional requests against the ETag set here.
func (s *Server) serveModelFile(w http.ResponseWriter, r *http.Request) {
	m := s.byName[r.PathValue("name")]
	if m == nil {
		http.NotFound(w, r)
		return
	}
	file := r.PathValue("file")
	if file == format.ManifestFile {
		serveBlob(w, r, m.manifest, "application/x-protobuf", cacheRevalidate)
		return
	}
	mf, ok := m.files[file]
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, done, err := mf.open(m.root)
	switch {
	case errors.Is(err, errChanged):
		s.logf("wick serve: model %s: %v", m.dir, err)
		http.Error(w, fmt.Sprintf("model file %s %v", file, errChanged), http.StatusInternalServerError)
		return
	case err != nil:
		s.logf("wick serve: model %s: %v", m.dir, err)
		http.NotFound(w, r)
		return
	}
	defer done()
	h := w.Header()
	h.Set("Content-Type", mf.contentType)
	h.Set("Cache-Control", mf.cacheControl)
	h.Set("ETag", mf.etag)
	serveContent(w, r, mf.size, io.NewSectionReader(f, 0, mf.size))
}

// serveBlob serves an in-memory body with its ETag.
func serveBlob(w http.ResponseWriter, r *http.Request, b *blob, contentType, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", b.etag)
	serveContent(w, r, int64(len(b.data)), bytes.NewReader(b.data))
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	serveBlob(w, r, s.list, "application/json", cacheRevalidate)
}

// modelInfo describes a served model for the page's model picker.
type modelInfo struct {
	Name         string        `json:"name"`     // the name in URLs and in API requests
	Title        string        `json:"title"`    // the name the manifest gives
	Manifest     string        `json:"manifest"` // the manifest's URL
	ShardBaseURL string        `json:"shard_base_url,omitempty"`
	API          bool          `json:"api"` // also served natively at /v1/
	Config       configSummary `json:"config"`
	Sizes        sizeSummary   `json:"sizes"`
}

type configSummary struct {
	DType         string `json:"dtype"`
	Params        int64  `json:"params"`
	Vocab         int    `json:"vocab"`
	Hidden        int    `json:"hidden"`
	FFNHidden     int    `json:"ffn_hidden"`
	Layers        int    `json:"layers"`
	LocalLayers   int    `json:"local_layers"`
	KVProducers   int    `json:"kv_producers"` // layers that own a KV cache (the rest share one)
	Window        int    `json:"window,omitempty"`
	Heads         int    `json:"heads"`
	KVHeads       int    `json:"kv_heads"`
	HeadDim       int    `json:"head_dim"`
	ContextLen    int    `json:"context_len"`
	TiedEmbedding bool   `json:"tied_embedding"`
}

type sizeSummary struct {
	Download       int64 `json:"download_bytes"` // manifest + shards + tokenizer
	Shards         int   `json:"shards"`
	ShardBytes     int64 `json:"shard_bytes"`
	TokenizerBytes int64 `json:"tokenizer_bytes"`
	ManifestBytes  int64 `json:"manifest_bytes"`
	// KVBytes is the KV cache of one conversation at the full context.
	KVBytes int64 `json:"kv_bytes_full_context"`
}

// modelList renders the JSON of /models/ once: it changes only on restart.
func modelList(models []*servedModel, api bool) (*blob, error) {
	infos := make([]modelInfo, len(models))
	for i, m := range models {
		c := m.cfg
		sum := configSummary{
			DType: c.DType.String(), Params: c.Params(), Vocab: c.Vocab, Hidden: c.Hidden, FFNHidden: c.FFNHidden,
			Layers: len(c.Layers), Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, ContextLen: c.ContextLen,
			TiedEmbedding: c.TiedEmbedding,
		}
		for j, l := range c.Layers {
			if l.Kind == model.Local {
				sum.LocalLayers++
				sum.Window = max(sum.Window, l.Window)
			}
			if c.Producer(j) {
				sum.KVProducers++
			}
		}
		sizes := sizeSummary{ManifestBytes: int64(len(m.manifest.data)), Shards: len(m.man.GetShards()), KVBytes: c.KVBytes(c.ContextLen)}
		for _, s := range m.man.GetShards() {
			sizes.ShardBytes += int64(s.GetSize())
		}
		sizes.TokenizerBytes = int64(m.man.GetTokenizer().GetSize())
		sizes.Download = sizes.ManifestBytes + sizes.ShardBytes + sizes.TokenizerBytes
		infos[i] = modelInfo{
			Name: m.name, Title: m.man.GetName(), Manifest: "/models/" + m.name + "/" + format.ManifestFile,
			ShardBaseURL: m.baseURL, API: api, Config: sum, Sizes: sizes,
		}
	}
	data, err := json.MarshalIndent(struct {
		Models []modelInfo `json:"models"`
	}{infos}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("model list: %w", err)
	}
	return newBlob(append(data, '\n')), nil
}
