// Command wick runs transformer chat models built the Character.AI way
// (multi-query attention, local/global layers, cross-layer KV sharing, int8)
// on WebGPU or the CPU.
//
//	wick gen     -model DIR -prompt TEXT   generate a reply to one message
//	wick chat    -model DIR                chat in the terminal
//	wick inspect DIR                       config, sizes, KV bytes per token
//	wick logits  -model DIR -ids 1,2,3 -out FILE.npy
//
// Run `wick CMD -h` for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	_ "github.com/wick-run/wick/engine/webgpu" // registers the native WebGPU backend
)

type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "help" || os.Args[1] == "--help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "wick: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "wick %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: wick COMMAND [flags]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(os.Stderr, b.String())
}
