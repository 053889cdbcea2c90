package server

import (
	"fmt"
	"os"
	"path/filepath"
)

// Precompress writes path.br and path.gz beside the web file path, as the
// server would compress it at startup, unless they already decompress to
// it; it reports whether it wrote any. `make wasm` runs it on the wasm
// modules (cmd precompress), so that a server starts without spending
// seconds of brotli on them (about 8 s for the converter module on 2
// cores, once per server process).
func Precompress(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	wrote := false
	for _, c := range codings {
		if old, err := os.ReadFile(path + c.ext); err == nil && decompressesTo(old, data, c.decompress) {
			continue
		}
		packed, err := c.compress(data)
		if err != nil {
			return wrote, fmt.Errorf("precompress %s: %w", path, err)
		}
		if err := writeAtomic(path+c.ext, packed); err != nil {
			return wrote, fmt.Errorf("precompress %s: %w", path, err)
		}
		wrote = true
	}
	return wrote, nil
}

// writeAtomic writes data to path through a temporary file and a rename.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(0o644) // CreateTemp makes 0600; web files are meant to be served
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
	}
	return werr
}
