package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRouting drives a multi-turn, multi-conversation workload through
// HAProxy (deploy/haproxy/haproxy.cfg) in front of three `wick serve -api`
// processes on loopback, and compares the prefix cache's hit rate and the
// time to first token of sticky routing (consistent hashing on
// X-Conversation-Id) with one process and with round-robin. Then it kills
// one instance mid-run: only requests in flight to it may fail, and its
// conversations re-prefill on the others. HAProxy comes from
// scripts/install-deps.sh (make deps).
func TestRouting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers and HAProxy")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: run scripts/install-deps.sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wick := buildWick(t)
	servers := make([]*wickProc, 3)
	for i := range servers {
		servers[i] = startWick(t, ctx, wick, fmt.Sprintf("wick%d", i+1))
	}
	for _, s := range servers {
		s.waitReady(t, ctx)
	}
	cfg, err := os.ReadFile("../deploy/haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	sticky := string(cfg)
	if !strings.Contains(sticky, "balance hdr(X-Conversation-Id)") || !strings.Contains(sticky, "hash-type consistent") {
		t.Fatal("deploy/haproxy/haproxy.cfg no longer hashes X-Conversation-Id consistently")
	}
	roundRobin := strings.Replace(sticky, "balance hdr(X-Conversation-Id)", "balance roundrobin", 1)

	one := runWorkload(t, ctx, servers[0].url, "one", nil)
	stickyURL := startHAProxy(t, ctx, haproxy, sticky, servers)
	stickyRes := runWorkload(t, ctx, stickyURL, "sticky", nil)
	checkUserKey(t, stickyURL, stickyRes)
	rrRes := runWorkload(t, ctx, startHAProxy(t, ctx, haproxy, roundRobin, servers), "roundrobin", nil)
	// Kill the instance that holds the most conversations (every run uses
	// the same keys, so the kill run routes them as the sticky run did).
	var killedAt time.Time
	victim, per := servers[0], stickyRes.conversationsPer()
	for _, s := range servers {
		if per[s.name] > per[victim.name] {
			victim = s
		}
	}
	killRes := runWorkload(t, ctx, startHAProxy(t, ctx, haproxy, sticky, servers), "kill", func(done, total int) {
		if done == total/2 {
			killedAt = time.Now()
			victim.cmd.Process.Kill()
		}
	})

	t.Logf("%-26s %8s %8s %9s %9s %6s", "routing", "prompt", "cached", "hit rate", "TTFT p50", "p90")
	for _, r := range []*workloadResult{one, stickyRes, rrRes, killRes} {
		p50, p90 := r.ttft()
		t.Logf("%-26s %8d %8d %8.1f%% %9s %6s", r.name, r.prompt, r.cached, 100*r.hitRate(), p50.Round(time.Millisecond), p90.Round(time.Millisecond))
	}
	t.Logf("sticky: conversations per instance %v", stickyRes.conversationsPer())
	if one.hitRate() < 0.5 {
		t.Errorf("one process: hit rate %.1f%%; the workload should mostly hit the prefix cache", 100*one.hitRate())
	}
	if d := one.hitRate() - stickyRes.hitRate(); d > 0.05 {
		t.Errorf("sticky routing's hit rate %.1f%% is %.1f points below one process's", 100*stickyRes.hitRate(), 100*d)
	}
	// Round-robin still hits on the character cards (cached on every
	// instance) and on the instance that served a conversation's last turn
	// a third of the time; in runs so far it was 14-17 points below.
	if d := stickyRes.hitRate() - rrRes.hitRate(); d < 0.10 {
		t.Errorf("round-robin's hit rate %.1f%% is only %.1f points below sticky routing's", 100*rrRes.hitRate(), 100*d)
	}
	for _, r := range []*workloadResult{one, stickyRes, rrRes} {
		for _, q := range r.requests {
			if q.err != nil {
				t.Errorf("%s: conversation %d turn %d failed: %v", r.name, q.conv, q.turn, q.err)
			}
		}
	}
	checkKill(t, killRes, killedAt, victim.name)
}

// checkKill checks the run during which the instance named dead was killed
// at killedAt: only requests in flight then failed; every conversation
// finished; conversations on other instances stayed there, and the dead
// instance's moved and prefilled their history again.
func checkKill(t *testing.T, r *workloadResult, killedAt time.Time, dead string) {
	t.Helper()
	if killedAt.IsZero() {
		t.Fatal("the instance was never killed")
	}
	good := map[int][]*request{} // per conversation, in the order sent
	failed := 0
	for _, q := range r.requests {
		if q.err == nil {
			good[q.conv] = append(good[q.conv], q)
			continue
		}
		failed++
		t.Logf("in flight at the kill: conversation %d turn %d: %v", q.conv, q.turn, q.err)
		if q.start.After(killedAt) || q.end.Before(killedAt) {
			t.Errorf("conversation %d turn %d failed though it was not in flight at the kill: %v", q.conv, q.turn, q.err)
		}
	}
	moved := 0
	for conv, qs := range good {
		slices.SortFunc(qs, func(a, b *request) int { return a.start.Compare(b.start) })
		// before: the last turn done before the kill; after: the next one.
		i := slices.IndexFunc(qs, func(q *request) bool { return !q.end.Before(killedAt) })
		if i <= 0 {
			continue
		}
		before, after := qs[i-1], qs[i]
		switch {
		case before.server != dead && after.server != before.server:
			t.Errorf("conversation %d moved from %s to %s though %s is alive", conv, before.server, after.server, before.server)
		case before.server == dead && after.server == dead:
			t.Errorf("conversation %d was served by %s after it was killed", conv, dead)
		case before.server == dead:
			moved++
			if after.cached >= before.prompt {
				t.Errorf("conversation %d moved to %s yet found %d cached tokens of a history that took %d", conv, after.server, after.cached, before.prompt)
			}
		}
	}
	if r.unfinished > 0 {
		t.Errorf("%d conversations did not finish after the kill", r.unfinished)
	}
	t.Logf("kill: %d requests failed in flight (each sent again), %d conversations moved off %s and re-prefilled", failed, moved, dead)
	if moved == 0 {
		t.Errorf("no conversation of %s moved after it was killed: the test checked nothing", dead)
	}
}

// checkUserKey checks that HAProxy takes the body's user field as the key
// when no X-Conversation-Id is sent: such a request goes where the
// conversation of that key went in run r.
func checkUserKey(t *testing.T, url string, r *workloadResult) {
	t.Helper()
	where := map[int]string{}
	for _, q := range r.requests {
		where[q.conv] = q.server
	}
	for conv := range routingConversations {
		body := fmt.Sprintf(`{"model": "cai-tiny", "user": "conv-%d", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}`, conv)
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Wick-Server"); resp.StatusCode != 200 || got != where[conv] {
			t.Errorf("user conv-%d without the header: status %d from %s; the conversation with that key went to %s", conv, resp.StatusCode, got, where[conv])
		}
	}
}

// buildWick builds the wick command into a temporary directory.
func buildWick(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wick")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/wick")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/wick: %v\n%s", err, out)
	}
	return bin
}

type wickProc struct {
	name, url string
	cmd       *exec.Cmd
	log       *bytes.Buffer
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startWick(t *testing.T, ctx context.Context, bin, name string) *wickProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &wickProc{name: name, url: "http://" + addr, log: new(bytes.Buffer)}
	p.cmd = exec.CommandContext(ctx, bin, "serve", "-api", "-backend", "cpu", "-model", "../testdata/cai-tiny",
		"-addr", addr, "-server-name", name)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log)
		}
	})
	return p
}

// waitReady waits until the server answers /v1/models.
func (p *wickProc) waitReady(t *testing.T, ctx context.Context) {
	t.Helper()
	for ctx.Err() == nil {
		if resp, err := http.Get(p.url + "/v1/models"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not come up", p.name)
}

// startHAProxy runs HAProxy with cfg, its ports replaced by fresh ones and
// the shipped instances' by servers', and waits until every instance is
// up. It returns the proxy's URL.
func startHAProxy(t *testing.T, ctx context.Context, bin, cfg string, servers []*wickProc) string {
	t.Helper()
	proxy := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg = strings.Replace(cfg, "bind 127.0.0.1:8000", "bind "+proxy, 1)
	for i, s := range servers {
		cfg = strings.Replace(cfg, fmt.Sprintf("127.0.0.1:%d", 8081+i), strings.TrimPrefix(s.url, "http://"), 1)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-db", "-f", file)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", log.String())
		}
	})
	// Requests without a key go round-robin: seeing every name means every
	// instance passed its health checks.
	seen := map[string]bool{}
	for deadline := time.Now().Add(20 * time.Second); len(seen) < len(servers); {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy at %s reached only %v", proxy, seen)
		}
		if resp, err := http.Get("http://" + proxy + "/v1/models"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				seen[resp.Header.Get("X-Wick-Server")] = true
				continue
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "http://" + proxy
}

// The workload: conversations with one of a few character cards (several
// conversations share each, as many users chat with one character), each
// a few short turns; a few clients send them at once.
const (
	routingConversations = 12
	routingTurns         = 4
	routingClients       = 4
	routingMaxTokens     = 8
)

var routingCards = []string{
	"You are Ada, a cartographer of the northern seas. You keep your maps in oilcloth and speak briefly, with a dry humour.",
	"You are Brother Tomas, the librarian of a mountain monastery. You answer questions with a story from one of your books.",
	"You are Captain Mira Voss of the merchant ship Kestrel. You trade spices and rumours between the southern ports.",
}

var routingMessages = []string{
	"Hello! Who are you?", "Where should I travel this spring?", "Tell me a story.", "What do you fear most?",
	"How did you learn your trade?", "What should I pack?", "What happened last winter?",
}

// request is one turn sent: what came back, or why it failed.
type request struct {
	conv, turn     int
	start, end     time.Time
	server         string
	prompt, cached int
	ttft           time.Duration
	reply          string
	err            error
}

type workloadResult struct {
	name           string
	requests       []*request
	prompt, cached int // over the good requests
	unfinished     int // conversations that gave up
}

func (r *workloadResult) hitRate() float64 { return float64(r.cached) / float64(max(r.prompt, 1)) }

// conversationsPer counts the conversations each instance served.
func (r *workloadResult) conversationsPer() map[string]int {
	convs := map[string]map[int]bool{}
	for _, q := range r.requests {
		if q.err == nil {
			if convs[q.server] == nil {
				convs[q.server] = map[int]bool{}
			}
			convs[q.server][q.conv] = true
		}
	}
	n := map[string]int{}
	for s, c := range convs {
		n[s] = len(c)
	}
	return n
}

func (r *workloadResult) ttft() (p50, p90 time.Duration) {
	var d []time.Duration
	for _, q := range r.requests {
		if q.err == nil {
			d = append(d, q.ttft)
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*9/10]
}

// runWorkload sends the workload to url. Each conversation carries its
// X-Conversation-Id (the same in every run); its system prompt names the
// run, so that no run finds another's prefixes cached. A failed turn is
// sent once more, as a client would; progress, if set, is called after
// each request with the count done.
func runWorkload(t *testing.T, ctx context.Context, url, name string, progress func(done, total int)) *workloadResult {
	t.Helper()
	res := &workloadResult{name: name}
	var mu sync.Mutex
	total := routingConversations * routingTurns
	record := func(q *request) {
		mu.Lock()
		defer mu.Unlock()
		res.requests = append(res.requests, q)
		if q.err == nil {
			res.prompt += q.prompt
			res.cached += q.cached
		}
		if progress != nil {
			progress(len(res.requests), total)
		}
	}
	client := &http.Client{Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	for c := range routingClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var convs []int
			for i := c; i < routingConversations; i += routingClients {
				convs = append(convs, i)
			}
			history := make([][]map[string]string, routingConversations)
			for _, i := range convs {
				history[i] = []map[string]string{{"role": "system", "content": fmt.Sprintf("Run %s. %s", name, routingCards[i%len(routingCards)])}}
			}
			gaveUp := map[int]bool{}
			for turn := range routingTurns {
				for _, i := range convs {
					if gaveUp[i] || ctx.Err() != nil {
						continue
					}
					msgs := append(history[i], map[string]string{"role": "user", "content": routingMessages[(i+turn)%len(routingMessages)]})
					q := sendTurn(ctx, client, url, fmt.Sprintf("conv-%d", i), i, turn, msgs)
					record(q)
					if q.err != nil {
						q = sendTurn(ctx, client, url, fmt.Sprintf("conv-%d", i), i, turn, msgs)
						record(q)
						if q.err != nil {
							gaveUp[i] = true
							continue
						}
					}
					history[i] = append(msgs, map[string]string{"role": "assistant", "content": q.reply})
				}
			}
			mu.Lock()
			res.unfinished += len(gaveUp)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%s: the workload ran out of time", name)
	}
	return res
}

// sendTurn streams one chat completion, timing the first text of the reply.
func sendTurn(ctx context.Context, client *http.Client, url, key string, conv, turn int, msgs []map[string]string) *request {
	q := &request{conv: conv, turn: turn, start: time.Now()}
	defer func() { q.end = time.Now() }()
	body, _ := json.Marshal(map[string]any{"model": "cai-tiny", "messages": msgs, "stream": true, "max_tokens": routingMaxTokens,
		"temperature": 0, "stream_options": map[string]any{"include_usage": true}})
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		q.err = err
		return q
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Conversation-Id", key)
	resp, err := client.Do(req)
	if err != nil {
		q.err = err
		return q
	}
	defer resp.Body.Close()
	q.server = resp.Header.Get("X-Wick-Server")
	if resp.StatusCode != 200 {
		q.err = fmt.Errorf("status %s from %q", resp.Status, q.server)
		return q
	}
	var reply strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			q.reply = reply.String()
			return q
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens int `json:"prompt_tokens"`
				Details      struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			q.err = fmt.Errorf("event %q: %v", data, err)
			return q
		}
		switch {
		case ev.Error != nil:
			q.err = fmt.Errorf("error event from %s: %s", q.server, ev.Error.Message)
			return q
		case ev.Usage != nil:
			q.prompt, q.cached = ev.Usage.PromptTokens, ev.Usage.Details.CachedTokens
		case len(ev.Choices) == 1 && ev.Choices[0].Delta.Content != "":
			if q.ttft == 0 {
				q.ttft = time.Since(q.start)
			}
			reply.WriteString(ev.Choices[0].Delta.Content)
		}
	}
	q.err = fmt.Errorf("the stream from %s ended without [DONE]: %v", q.server, sc.Err())
	return q
}
