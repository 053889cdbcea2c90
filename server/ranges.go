package server

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRanges caps the ranges of one request. The page asks for one range at
// a time; RFC 9110 §14.2 lets a server reject many small ranges, which cost
// a multipart header each and serve nobody.
const maxRanges = 16

// serveContent is http.ServeContent (conditional and Range requests against
// the ETag already set) with two fixes to what it accepts as a Range:
// a zero-length suffix ("bytes=-0"), which it answers with a 206 and an
// invalid Content-Range, is unsatisfiable (RFC 9110 §14.1.1: dropped from a
// list, a 416 alone); and more than maxRanges ranges are refused with a 416.
func serveContent(w http.ResponseWriter, r *http.Request, size int64, content io.ReadSeeker) {
	if rng := r.Header.Get("Range"); rng != "" && rangeApplies(w, r) {
		specs, ok := strings.CutPrefix(rng, "bytes=")
		if ok {
			var kept []string
			for spec := range strings.SplitSeq(specs, ",") {
				spec = strings.TrimSpace(spec)
				if suffix, isSuffix := strings.CutPrefix(spec, "-"); isSuffix {
					if n, err := strconv.ParseInt(suffix, 10, 64); err == nil && n == 0 {
						continue
					}
				}
				if spec != "" {
					kept = append(kept, spec)
				}
			}
			switch {
			case len(kept) > maxRanges:
				unsatisfiable(w, size, fmt.Sprintf("%d ranges in one request; at most %d are served", len(kept), maxRanges))
				return
			case len(kept) == 0:
				unsatisfiable(w, size, "no satisfiable range")
				return
			}
			r.Header.Set("Range", "bytes="+strings.Join(kept, ","))
		}
	}
	http.ServeContent(w, r, "", time.Time{}, content)
}

// rangeApplies reports whether ServeContent would look at the Range header:
// an If-Range that does not match the ETag makes it serve the whole content.
func rangeApplies(w http.ResponseWriter, r *http.Request) bool {
	ir := r.Header.Get("If-Range")
	return ir == "" || ir == w.Header().Get("ETag")
}

func unsatisfiable(w http.ResponseWriter, size int64, why string) {
	w.Header().Del("Content-Encoding") // the message below is plain text
	w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
	http.Error(w, "range not satisfiable: "+why, http.StatusRequestedRangeNotSatisfiable)
}
