// Package format reads and writes the wick model format: a protobuf manifest
// (manifest.pb, schema in manifestpb) that lists a model's config, tokenizer,
// chat template and tensors, beside content-addressed shard files of raw
// little-endian tensor bytes that any static file server or CDN can serve.
//
// Shards are named after their own sha256, so they are immutable and can be
// cached forever; the manifest records every shard's size and hash, and every
// load checks them. A decoded manifest is checked as a whole (DecodeManifest)
// before anything trusts it, so a bad file gives an error that names the file
// and the field, never a panic.
package format

import (
	"encoding/hex"
	"fmt"
	"math/bits"
	"strings"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/model"
)

const (
	// Version is the newest manifest format_version this package writes. It
	// reads it and every version from MinVersion on, each by its own rules.
	// Version 3 added the config's long_rope; the writer stamps the oldest
	// version that holds a model (VersionFor), so readers of version 2 still
	// read every model without LongRoPE and refuse one with it.
	Version = 3
	// MinVersion is the oldest format_version this package reads. Version 1
	// had no kv_role (a layer was a producer when its kv_source was its own
	// index) and let the manifest list tensors the config does not use.
	MinVersion = 1
	// ManifestFile is the manifest's file name inside a model directory.
	ManifestFile = "manifest.pb"
	// Alignment is the byte alignment of every tensor's start in its shard:
	// enough for any GPU buffer copy offset and for direct typed views.
	Alignment = 256
	// DefaultShardSize is the usual cap on a shard's size: small enough to
	// download and cache piecewise, large enough to keep the file count low.
	DefaultShardSize = 32 << 20
)

// VersionFor is the format_version a manifest of cfg is written with: the
// oldest that can express it.
func VersionFor(cfg *model.Config) uint32 {
	if cfg.LongRope.On() {
		return 3
	}
	return 2
}

// Limits that reject absurd manifests before any arithmetic can overflow or
// any allocation is sized from untrusted numbers.
const (
	maxManifestBytes = 64 << 20
	maxTensorBytes   = 1 << 48
	maxShardBytes    = 1 << 48
	maxDims          = 8
)

// tempPattern names the temporary files the writer creates; the leading dot
// keeps them out of directory listings and servers' way.
const tempPattern = ".wick-*.tmp"

// dtypeSize is the byte size of one element, or 0 for an unknown dtype.
func dtypeSize(d manifestpb.DType) uint64 {
	switch d {
	case manifestpb.DType_DTYPE_INT8:
		return 1
	case manifestpb.DType_DTYPE_F32:
		return 4
	}
	return 0
}

// tensorBytes is the byte size of a tensor of dtype and shape, checked for
// overflow and against maxTensorBytes.
func tensorBytes(dtype manifestpb.DType, shape []uint64) (uint64, error) {
	size := dtypeSize(dtype)
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %v", dtype)
	}
	if len(shape) == 0 || len(shape) > maxDims {
		return 0, fmt.Errorf("shape %v has %d dims, want 1 to %d", shape, len(shape), maxDims)
	}
	for _, d := range shape {
		if d == 0 {
			return 0, fmt.Errorf("shape %v has a zero dim", shape)
		}
		hi, lo := bits.Mul64(size, d)
		if hi != 0 || lo > maxTensorBytes {
			return 0, fmt.Errorf("shape %v is too large (over %d bytes)", shape, uint64(maxTensorBytes))
		}
		size = lo
	}
	return size, nil
}

// shardName is the file name of a shard with the given sha256 (hex).
func shardName(sum string) string { return "shard-" + sum + ".bin" }

// isHexSHA256 reports whether s is a lowercase hex sha256.
func isHexSHA256(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// checkPlainName rejects file names that could reach outside the model
// directory or that name the directory itself.
func checkPlainName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("file name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("file name %q is not a plain file name", name)
	case strings.ContainsAny(name, "/\\\x00:"):
		return fmt.Errorf("file name %q is not a plain file name (path separator or reserved character)", name)
	case name == ManifestFile:
		return fmt.Errorf("file name %q is the manifest's", name)
	}
	return nil
}
