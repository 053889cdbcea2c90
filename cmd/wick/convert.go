package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/wick-run/wick/engine/convert"
	"github.com/wick-run/wick/engine/format"
	"github.com/wick-run/wick/engine/model"
)

func init() {
	commands["convert"] = command{"convert a Hugging Face checkpoint (Gemma 3, Llama 2/3, SmolLM2) into a wick model", runConvert}
}

func runConvert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	in := fs.String("in", "", "Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.model or tokenizer.json), or a .gguf file")
	out := fs.String("out", "", "wick model directory to write")
	q := fs.String("quant", "int8", "matrix dtype: int8 (per output row) or f32")
	shard := fs.String("shard-size", "32MiB", "largest shard file, in bytes or with a KiB, MiB or GiB suffix")
	name := fs.String("name", "", "model name in the manifest (default: the input directory's name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("usage: wick convert -in HF_DIR -out DIR [-quant int8|f32] [-shard-size 32MiB]")
	}
	var dtype model.DType
	switch *q {
	case "int8":
		dtype = model.Int8
	case "f32":
		dtype = model.F32
	default:
		return fmt.Errorf("-quant %q: want int8 or f32", *q)
	}
	size, err := parseSize(*shard)
	if err != nil {
		return fmt.Errorf("-shard-size: %w", err)
	}
	if size < format.Alignment {
		return fmt.Errorf("-shard-size %s: must be at least %d bytes", *shard, format.Alignment)
	}
	res, err := convert.Convert(*in, *out, convert.Options{DType: dtype, ShardSize: size, Name: *name})
	if err != nil {
		return err
	}
	c := res.Config
	local := 0
	for _, l := range c.Layers {
		if l.Kind == model.Local {
			local++
		}
	}
	fmt.Printf("%s -> %s: %s, %d layers (%d local), %d heads / %d KV heads, vocab %d, %.1fM parameters, %v\n",
		*in, *out, res.Arch, len(c.Layers), local, c.Heads, c.KVHeads, c.Vocab, float64(c.Params())/1e6, c.DType)
	for _, n := range res.ChatNotes {
		fmt.Printf("chat template note: %s\n", n)
	}
	return nil
}

// parseSize reads a byte count such as 33554432, 32MiB or 512KiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<48)/mult {
		return 0, fmt.Errorf("%q is not a positive size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}
