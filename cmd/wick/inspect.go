package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/model"
)

func init() {
	commands["inspect"] = command{"print a model's config, sizes and KV cache cost", runInspect}
}

func runInspect(args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	verify := fs.Bool("verify", true, "hash every shard")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: wick inspect [-verify=false] DIR")
	}
	checked, err := engine.Check(fs.Arg(0))
	if err != nil {
		return err
	}
	f := checked.Format
	if *verify {
		if err := f.Verify(); err != nil {
			return err
		}
	}
	c := f.Config()
	m := f.Manifest()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	defer w.Flush()
	var shardBytes uint64
	for _, s := range m.GetShards() {
		shardBytes += s.GetSize()
	}
	fmt.Fprintf(w, "model\t%s (%s)\n", m.GetName(), fs.Arg(0))
	fmt.Fprintf(w, "dtype\t%v\n", c.DType)
	fmt.Fprintf(w, "parameters\t%d (%.2f M)\n", c.Params(), float64(c.Params())/1e6)
	fmt.Fprintf(w, "files\t%d shards, %d bytes\n", len(m.GetShards()), shardBytes)
	fmt.Fprintf(w, "vocab / hidden / ffn\t%d / %d / %d\n", c.Vocab, c.Hidden, c.FFNHidden)
	fmt.Fprintf(w, "heads\t%d query, %d KV (%s), head_dim %d\n", c.Heads, c.KVHeads, attnName(c), c.HeadDim)
	fmt.Fprintf(w, "context\t%d\n", c.ContextLen)
	fmt.Fprintf(w, "layers\t%d\n", len(c.Layers))
	for i, l := range c.Layers {
		desc := l.Kind.String()
		if l.Kind == model.Local {
			desc += fmt.Sprintf(" window %d", l.Window)
		}
		if c.Producer(i) {
			desc += ", KV producer"
		} else {
			desc += fmt.Sprintf(", reads KV of layer %d", l.KVSource)
		}
		fmt.Fprintf(w, "  %d\t%s, rope theta %g\n", i, desc, c.RopeTheta(i))
	}
	fmt.Fprintf(w, "norms\teps %g, 1+w %v, qk-norm %v, post-attn %v, post-ffn %v\n", c.NormEps, c.NormOnePlus, c.QKNorm, c.PostAttnNorm, c.PostFFNNorm)
	fmt.Fprintf(w, "ffn\t%v\n", c.Activation)
	fmt.Fprintf(w, "embedding\ttied %v, scale %g; attention scale %g; final softcap %g\n", c.TiedEmbedding, c.Embedding(), c.Scale(), c.FinalSoftcap)
	fmt.Fprintf(w, "attention\tq/k/v bias %v, logit softcap %g, rotary dims %d of %d\n", c.QKVBias, c.AttnSoftcap, c.Rotary(), c.HeadDim)
	fmt.Fprintf(w, "rope scaling\t%s\n", ropeScaling(c))
	fmt.Fprintf(w, "\nKV cache\tbytes/token\ttotal\tMHA, all global, unshared\treduction\n")
	for _, ctx := range kvQuoteLengths(c.ContextLen) {
		kv, base := c.KVBytes(ctx), c.BaselineKVBytes(ctx)
		fmt.Fprintf(w, "  at %d\t%.0f\t%s\t%s\t%.1fx\n", ctx, c.KVBytesPerToken(ctx), human(kv), human(base), float64(base)/float64(kv))
	}
	return nil
}

// kvQuoteLengths are the context lengths to quote KV sizes at: the usual
// ones the model can hold, and its own context.
func kvQuoteLengths(contextLen int) []int {
	var out []int
	for _, n := range []int{1024, 8192, 32768} {
		if n < contextLen {
			out = append(out, n)
		}
	}
	return append(out, contextLen)
}

// ropeScaling describes the model's RoPE scaling, if any.
func ropeScaling(c *model.Config) string {
	switch l := c.LongRope; {
	case c.RopeScaling.Factor != 0:
		rs := c.RopeScaling
		return fmt.Sprintf("Llama 3: factor %g, low/high frequency factors %g/%g, original context %d", rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalContext)
	case l.On() && slices.Equal(l.ShortFactor, l.LongFactor):
		return fmt.Sprintf("per-pair frequency divisors %.3g..%.3g (GGUF rope_freqs), cos/sin factor %g", slices.Min(l.ShortFactor), slices.Max(l.ShortFactor), l.AttnFactor)
	case l.On():
		return fmt.Sprintf("LongRoPE: short factors below position %d, long from it; cos/sin factor %.4g", l.OriginalContext, l.AttnFactor)
	}
	return "none"
}

func attnName(c *model.Config) string {
	switch {
	case c.KVHeads == 1:
		return "multi-query"
	case c.KVHeads == c.Heads:
		return "multi-head"
	}
	return "grouped-query"
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
