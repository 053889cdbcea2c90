package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
)

func init() {
	commands["cachebench"] = command{"simulate many interleaved chats and measure the prefix cache", runCacheBench}
}

// benchCards are the character cards of the simulated workload: several
// conversations share each one, as many users chat with one character.
var benchCards = []string{
	"You are Ada, a cartographer of the northern seas. You have drawn every coast from the white cliffs to the ice fields, " +
		"you keep your maps in oilcloth, and you speak briefly, with a dry humour. You never lie about the weather, " +
		"and you ask the traveller where they mean to go before you give any advice.",
	"You are Brother Tomas, the librarian of a mountain monastery. You know the history of every book on your shelves " +
		"and you answer questions with a story from one of them. You are patient, a little forgetful, and fond of bread.",
	"You are Captain Mira Voss of the merchant ship Kestrel. You trade spices and rumours between the southern ports, " +
		"you distrust the harbour masters, and you speak to passengers as if they were new crew.",
}

var benchMessages = []string{
	"Hello! Who are you?", "Where should I travel this spring?", "Tell me about the oldest map you own.",
	"What is the weather like at sea today?", "Can you tell me a story?", "What do you fear most?",
	"How did you learn your trade?", "Which port would you avoid, and why?", "What should I pack?",
	"Do you have any advice for a first voyage?", "What happened last winter?", "Thank you. One more question?",
}

// benchTurn is one request of the workload: a new message in a
// conversation, or a regeneration of its last reply.
type benchTurn struct {
	conv  int
	msg   string // "" regenerates
	order int
}

// benchResult is what one pass over the workload measured.
type benchResult struct {
	prompt, cached int             // tokens over all turns
	ttft           []time.Duration // per turn: until the first text of the reply
	total          time.Duration
	replies        [][]int32
	finalTokens    []int // each conversation's length at the end
	fileBytes      int64 // saved-conversation file bytes, summed
}

func runCacheBench(args []string) error {
	fs := flag.NewFlagSet("cachebench", flag.ContinueOnError)
	dir := fs.String("model", "testdata/cai-tiny", "model directory")
	backend := fs.String("backend", "cpu", "cpu or webgpu")
	convs := fs.Int("convs", 24, "conversations")
	turns := fs.Int("turns", 5, "user turns per conversation")
	regen := fs.Float64("regen", 0.15, "fraction of later turns that regenerate the last reply instead")
	maxTokens := fs.Int("max-tokens", 24, "most tokens per reply (greedy)")
	budget := fs.Int64("cache-bytes", 0, "prefix cache budget (0: the engine's default)")
	seed := fs.Uint64("seed", 1, "workload seed")
	postHistory := fs.String("post-history", "", "a character card's post_history_instructions: placed after the conversation for each reply, and absent from the history after it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *convs < 1 || *turns < 1 {
		return fmt.Errorf("-convs and -turns must be positive")
	}
	work := benchWorkload(*convs, *turns, *regen, *seed)
	return cacheBench(os.Stdout, *dir, *backend, work, *convs, *turns, *maxTokens, *budget, *postHistory)
}

// cacheBench runs work without and with the prefix cache and prints the
// comparison to out.
func cacheBench(out io.Writer, dir, backend string, work []benchTurn, convs, turns, maxTokens int, budget int64, postHistory string) error {
	var res [2]*benchResult
	var models [2]*engine.Model
	for i, cache := range []int64{-1, max(budget, 0)} {
		m, err := engine.Load(dir, engine.Options{Backend: backend, CacheBytes: cache})
		if err != nil {
			return err
		}
		defer m.Close()
		models[i] = m
		if res[i], err = benchRun(m, work, convs, maxTokens, postHistory); err != nil {
			return err
		}
	}
	same := slices.EqualFunc(res[0].replies, res[1].replies, slices.Equal[[]int32])
	printCacheBench(out, models[1], work, convs, turns, res, same, postHistory)
	if !same {
		return fmt.Errorf("replies with the prefix cache differ from those without")
	}
	return nil
}

// benchWorkload deals the turns of every conversation in a random
// interleaving; each conversation's turns stay in order.
func benchWorkload(convs, turns int, regen float64, seed uint64) []benchTurn {
	r := rand.New(rand.NewPCG(seed, 2))
	left := make([]int, convs)
	for i := range left {
		left[i] = turns
	}
	var work []benchTurn
	for active := convs; active > 0; {
		c := r.IntN(convs)
		if left[c] == 0 {
			continue
		}
		t := benchTurn{conv: c, msg: benchMessages[r.IntN(len(benchMessages))], order: turns - left[c]}
		if t.order > 0 && r.Float64() < regen {
			t.msg = ""
		}
		work = append(work, t)
		if left[c]--; left[c] == 0 {
			active--
		}
	}
	return work
}

// benchRun serves the workload as a stateless server does: every turn gets
// a fresh session given the conversation so far, so all reuse of earlier
// turns' KV comes from the prefix cache.
//
// With postHistory, each reply is generated with those instructions after
// the conversation, as shared cards' post_history_instructions ask and as
// the chat page and `wick chat -card` give them (engine.Session's
// SetPostHistory): between the history and the reply, and not in the
// history after it. The conversation's tokens then no longer only grow at
// the end: the next turn differs from the last one's from the last reply
// on.
func benchRun(m *engine.Model, work []benchTurn, convs, maxTokens int, postHistory string) (*benchResult, error) {
	res := &benchResult{finalTokens: make([]int, convs)}
	history := make([][]chat.Message, convs)
	for c := range history {
		history[c] = []chat.Message{{Role: chat.System, Content: benchCards[c%len(benchCards)]}}
	}
	last := make([]int, convs) // each conversation's last turn in work
	for i, t := range work {
		last[t.conv] = i
	}
	p := engine.GenParams{MaxTokens: maxTokens}
	start := time.Now()
	for i, t := range work {
		s, err := m.NewSession("")
		if err != nil {
			return nil, err
		}
		s.SetPostHistory(postHistory)
		if err := s.SetHistory(history[t.conv]); err != nil {
			return nil, err
		}
		t0 := time.Now()
		var first time.Duration
		onText := func(string) {
			if first == 0 {
				first = time.Since(t0)
			}
		}
		var r *engine.Reply
		if t.msg == "" {
			r, err = s.Regenerate(context.Background(), p, onText)
		} else {
			r, err = s.Send(context.Background(), t.msg, p, onText)
		}
		if err != nil {
			return nil, fmt.Errorf("conversation %d, turn %d: %w", t.conv, t.order, err)
		}
		if first == 0 {
			first = time.Since(t0)
		}
		res.prompt += r.PromptTokens + r.CachedTokens
		res.cached += r.CachedTokens
		res.ttft = append(res.ttft, first)
		res.replies = append(res.replies, r.Tokens)
		history[t.conv] = s.Messages()
		res.finalTokens[t.conv] = len(s.Tokens())
		if i == last[t.conv] {
			// What persisting the finished conversation costs.
			data, err := s.MarshalBinary()
			if err != nil {
				return nil, err
			}
			res.fileBytes += int64(len(data))
		}
		s.Close()
	}
	res.total = time.Since(start)
	return res, nil
}

func printCacheBench(out io.Writer, m *engine.Model, work []benchTurn, convs, turns int, res [2]*benchResult, same bool, postHistory string) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	regens := 0
	for _, t := range work {
		if t.msg == "" {
			regens++
		}
	}
	fmt.Fprintf(w, "workload\t%d conversations x %d turns over %d cards, interleaved; %d regenerations; %s on %s, greedy\n",
		convs, turns, min(convs, len(benchCards)), regens, m.Name, m.Backend.Name())
	fmt.Fprintf(w, "serving\tstateless: each turn a fresh session given the conversation so far\n")
	if postHistory != "" {
		fmt.Fprintf(w, "post-history instructions\t%d tokens after the conversation for each reply, not kept in it\n", len(m.Tokenizer.Encode(postHistory)))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "\tno cache\tprefix cache\n")
	fmt.Fprintf(w, "prompt tokens\t%d\t%d\n", res[0].prompt, res[1].prompt)
	fmt.Fprintf(w, "prefilled tokens\t%d\t%d\n", res[0].prompt-res[0].cached, res[1].prompt-res[1].cached)
	fmt.Fprintf(w, "token hit rate\t%.1f%%\t%.1f%%\n", pct(res[0].cached, res[0].prompt), pct(res[1].cached, res[1].prompt))
	for _, q := range []struct {
		name string
		f    func([]time.Duration) time.Duration
	}{{"TTFT mean", meanDuration}, {"TTFT p50", quantile(0.5)}, {"TTFT p95", quantile(0.95)}} {
		fmt.Fprintf(w, "%s\t%v\t%v\n", q.name, q.f(res[0].ttft).Round(time.Microsecond), q.f(res[1].ttft).Round(time.Microsecond))
	}
	fmt.Fprintf(w, "wall time\t%v\t%v\n", res[0].total.Round(time.Millisecond), res[1].total.Round(time.Millisecond))
	fmt.Fprintf(w, "replies identical\t%v\t\n\n", same)

	var toks, live, base int64
	for _, n := range res[1].finalTokens {
		toks += int64(n)
		live += m.Config.KVBytes(n)
		base += m.Config.BaselineKVBytes(n)
	}
	n := int64(convs)
	fmt.Fprintf(w, "per conversation (mean)\t\t\n")
	fmt.Fprintf(w, "tokens at the end\t%d\t\n", toks/n)
	fmt.Fprintf(w, "KV snapshot bytes\t%d\t(local rings: only the window a continuation reads; shared layers once)\n", live/n)
	fmt.Fprintf(w, "same model MHA, all global, unshared\t%d\t(%.1fx larger)\n", base/n, float64(base)/float64(live))
	fmt.Fprintf(w, "saved file bytes\t%d\t(KV + tokens + messages + header)\n", res[1].fileBytes/n)
	if m.Cache != nil {
		st := m.Cache.Stats()
		fmt.Fprintf(w, "\nprefix cache\t%d blocks of %d tokens, %d bytes of %d; %d evictions, %d collisions\t\n",
			st.Blocks, m.Cache.Block(), st.Bytes, st.Budget, st.Evictions, st.Collisions)
	}
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func meanDuration(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(max(len(d), 1))
}

func quantile(q float64) func([]time.Duration) time.Duration {
	return func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
}
