package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"bytes"
	"encoding/binary"
)

func init() {
	commands["logits"] = command{"write the logits of a token sequence as a NumPy .npy file", runLogits}
}

func runLogits(args []string) error {
	fs := flag.NewFlagSet("logits", flag.ContinueOnError)
	var mf modelFlags
	mf.register(fs)
	idList := fs.String("ids", "", "comma-separated token ids")
	out := fs.String("out", "", "output .npy file: float32 [tokens, vocab]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *idList == "" || *out == "" {
		return fmt.Errorf("-ids and -out are required")
	}
	var ids []int32
	for _, f := range strings.Split(*idList, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return fmt.Errorf("-ids: %q is not a token id", f)
		}
		ids = append(ids, int32(v))
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	defer m.Close()
	if len(ids) > m.Context() {
		return fmt.Errorf("-ids: %d tokens exceed the context of %d (raise -context)", len(ids), m.Context())
	}
	seq, err := m.Backend.NewSequence(m.Context())
	if err != nil {
		return err
	}
	defer seq.Close()
	V := m.Config.Vocab
	logits := make([]float32, len(ids)*V)
	if err := seq.Forward(ids, 0, logits); err != nil {
		return err
	}
	return writeNpy(*out, logits, len(ids), V)
}

// writeNpy writes a float32 [rows, cols] array atomically (temp + rename).
func writeNpy(path string, data []float32, rows, cols int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".wick-*.npy")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(npyFloat32(data, rows, cols)); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// npyFloat32 encodes a little-endian float32 C-order [rows, cols] array in
// NumPy's .npy format, version 1.0. Written by hand: the format is a magic,
// a padded Python-dict header and the raw data, and the Go npy library pulls
// in gonum and wants a [][]float32 copy of a large logits matrix.
func npyFloat32(data []float32, rows, cols int) []byte {
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols)
	// magic(6) + version(2) + header length(2) + header + '\n', padded to 64 bytes.
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	binary.Write(&b, binary.LittleEndian, data)
	return b.Bytes()
}
