// Command precompress writes FILE.br and FILE.gz beside each FILE, as wick's
// server compresses its web files, so that the server finds them instead of
// compressing at startup (`make wasm` runs it on the wasm modules):
//
//	go run ./server/precompress web/wick.wasm web/convert.wasm
//
// Siblings that already decompress to their file are left alone.
package main

import (
	"fmt"
	"os"

	"github.com/wick-run/wick/server"
)

func main() {
	for _, path := range os.Args[1:] {
		wrote, err := server.Precompress(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if wrote {
			fmt.Printf("precompressed %s\n", path)
		}
	}
}
