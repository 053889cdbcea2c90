package server

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
)

// webTypes are the files the page may consist of, with their Content-Type.
// Nothing else in the asset tree is served: Go sources and notes that sit
// beside the page are embedded with it but stay private.
var webTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".wasm":        "application/wasm",
	".json":        "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".svg":         "image/svg+xml",
	".ico":         "image/x-icon",
	".png":         "image/png",
	".webp":        "image/webp",
}

// incompressible types are already compressed.
var incompressible = map[string]bool{".png": true, ".webp": true}

// Encodings, in the server's order of preference among equal q-values.
const (
	encBrotli   = "br"
	encGzip     = "gzip"
	encIdentity = "identity"
)

// brotliQuality trades startup time for size: on a 7 MB Go wasm module,
// quality 6 takes ~0.7 s on one core for 1.45 MB, quality 11 ~30 s for
// 1.24 MB. Ship name.br beside a file (built with quality 11) to get the
// smaller one without the wait.
const brotliQuality = 6

// minCompress is the size below which compressing is not worth a variant.
const minCompress = 256

// asset is one file of the page, in every encoding worth serving.
type asset struct {
	contentType string
	variants    []variant // identity first
}

// variant is an asset in one content coding. Its ETag is the sha256 of its
// own bytes: different bytes under one URL need different strong ETags.
type variant struct {
	encoding string // encIdentity, encBrotli or encGzip
	*blob
}

// loadAssets reads every web file of fsys and compresses it. A precompressed
// sibling (name.br, name.gz) is used instead of compressing when it
// decompresses to exactly the file; a stale one is ignored with a log line.
func loadAssets(fsys fs.FS, logf func(string, ...any)) (map[string]*asset, error) {
	assets := make(map[string]*asset)
	var names []string
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ct, ok := webTypes[path.Ext(name)]; ok && d.Type().IsRegular() {
			assets[name] = &asset{contentType: ct}
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := assets["index.html"]; !ok {
		return nil, fmt.Errorf("no index.html")
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, name := range names {
		wg.Go(func() {
			vs, err := assetVariants(fsys, name, logf)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			assets[name].variants = vs
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return assets, nil
}

func assetVariants(fsys fs.FS, name string, logf func(string, ...any)) ([]variant, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	vs := []variant{{encIdentity, newBlob(data)}}
	if len(data) < minCompress || incompressible[path.Ext(name)] {
		return vs, nil
	}
	for _, c := range codings {
		packed, err := fs.ReadFile(fsys, name+c.ext)
		if err == nil && !decompressesTo(packed, data, c.decompress) {
			logf("wick serve: %s%s does not decompress to %s; compressing it again", name, c.ext, name)
			err = fs.ErrInvalid
		}
		if err != nil {
			if packed, err = compressOnce(data, c.encoding, c.compress); err != nil {
				return nil, fmt.Errorf("%s: %w", c.encoding, err)
			}
		}
		// A variant that saves under 5% is not worth a Vary'd response.
		if len(packed) < len(data)-len(data)/20 {
			vs = append(vs, variant{c.encoding, newBlob(packed)})
		}
	}
	return vs, nil
}

// packedCache holds what compressOnce made, by the file's sha256 and the
// coding: a process that starts several servers (the end-to-end tests)
// compresses each file once, not once a server (brotli takes seconds on
// the wasm modules).
var packedCache sync.Map // packedKey -> []byte

type packedKey struct {
	sum      [32]byte
	encoding string
}

// compressOnce is compress(data), made once per process for the same bytes.
func compressOnce(data []byte, encoding string, compress func([]byte) ([]byte, error)) ([]byte, error) {
	key := packedKey{sha256.Sum256(data), encoding}
	if p, ok := packedCache.Load(key); ok {
		return p.([]byte), nil
	}
	p, err := compress(data)
	if err != nil {
		return nil, err
	}
	packedCache.Store(key, p)
	return p, nil
}

// codings are the compressed variants the server offers, with the
// extension of a precompressed sibling (Precompress writes them).
var codings = []struct {
	encoding, ext string
	compress      func([]byte) ([]byte, error)
	decompress    func(io.Reader) (io.Reader, error)
}{
	{encBrotli, ".br", compressBrotli, func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil }},
	{encGzip, ".gz", compressGzip, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
}

func decompressesTo(packed, want []byte, decompress func(io.Reader) (io.Reader, error)) bool {
	r, err := decompress(bytes.NewReader(packed))
	if err != nil {
		return false
	}
	got, err := io.ReadAll(io.LimitReader(r, int64(len(want))+1))
	return err == nil && bytes.Equal(got, want)
}

func compressBrotli(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w := brotli.NewWriterOptions(&b, brotli.WriterOptions{Quality: brotliQuality, LGWin: 24})
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func compressGzip(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.DefaultCompression) // level 9 is 3x slower for 1% less
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// serveAsset serves a page file in the encoding the client prefers. Range
// and conditional requests apply to the encoded bytes, as RFC 9110 §8.8.3
// and §14 define them for a representation.
func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "" {
		name = "index.html"
	}
	a := s.assets[name]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	v := a.pick(r.Header.Get("Accept-Encoding"))
	h := w.Header()
	if len(a.variants) > 1 {
		h.Add("Vary", "Accept-Encoding")
	}
	if v.encoding != encIdentity {
		h.Set("Content-Encoding", v.encoding)
	}
	// The page's names are not content-addressed: revalidate every time,
	// which costs a 304 when nothing changed.
	serveBlob(w, r, v.blob, a.contentType, cacheRevalidate)
}

// pick returns the variant the Accept-Encoding header prefers: the highest
// q-value, ties going to br, then gzip, then identity. Identity is the
// answer when nothing else is acceptable (RFC 9110 §12.5.3 allows it rather
// than a 406).
func (a *asset) pick(acceptEncoding string) variant {
	q := parseAcceptEncoding(acceptEncoding)
	best, bestQ := a.variants[0], q(encIdentity)
	for _, enc := range []string{encBrotli, encGzip} {
		for _, v := range a.variants[1:] {
			if v.encoding == enc && q(enc) > 0 && (q(enc) > bestQ || q(enc) == bestQ && best.encoding == encIdentity) {
				best, bestQ = v, q(enc)
			}
		}
	}
	return best
}

// parseAcceptEncoding returns the q-value the header gives a coding. An
// absent header accepts only identity; "*" stands for every coding not
// named; identity is acceptable unless refused by name or by "*;q=0".
func parseAcceptEncoding(header string) func(coding string) float64 {
	named := make(map[string]float64)
	star := -1.0
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding == "" {
			continue
		}
		if coding == "x-gzip" { // RFC 9110 §8.4.1.3
			coding = encGzip
		}
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil && f >= 0 && f <= 1 {
					q = f
				} else {
					q = 0 // a malformed weight accepts nothing rather than everything
				}
			}
		}
		if coding == "*" {
			star = q
		} else {
			named[coding] = q
		}
	}
	return func(coding string) float64 {
		if q, ok := named[coding]; ok {
			return q
		}
		if star >= 0 {
			return star
		}
		if coding == encIdentity {
			return 1
		}
		return 0
	}
}
