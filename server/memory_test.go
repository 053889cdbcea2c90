package server

import (
	"bytes"
	"encoding/json"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wick-run/wick/engine"
)

// heapPeak samples the Go heap (runtime/metrics, live and not yet swept
// objects) until stop is closed, and returns the largest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	return out
}

// TestLargeBodiesBoundedMemory sends 32 concurrent requests of 1 MiB
// messages, each far too long for the context: they must be refused with
// the heap staying under 64 MiB plus 2 MiB per request. Tokenizing each
// whole body before it queued once cost ~110 MiB per request.
func TestLargeBodiesBoundedMemory(t *testing.T) {
	_, hs := newAPIServer(t, Config{Models: testModelDirs[:1]})
	const clients = 32
	text := strings.Repeat("Tell me about the old maps of the north. ", (1<<20-512)/41)
	body, err := json.Marshal(request("cai-tiny", false, 4, msg{"role": "user", "content": text}))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > defaultMaxBody {
		t.Fatalf("body of %d bytes is over the default limit", len(body))
	}
	runtime.GC()
	stop := make(chan struct{})
	peak := heapPeak(stop)
	start := make(chan struct{})
	var wg sync.WaitGroup
	codes := make([]string, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := hs.Client().Post(hs.URL+"/v1/chat/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				codes[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			var e struct {
				Error struct {
					Code *string `json:"code"`
				} `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			codes[i] = resp.Status + " " + deref(e.Error.Code)
		}()
	}
	close(start)
	wg.Wait()
	close(stop)
	got := <-peak
	for i, c := range codes {
		if c != "400 Bad Request context_length_exceeded" {
			t.Errorf("request %d: %s, want 400 context_length_exceeded", i, c)
		}
	}
	limit := uint64(64<<20 + clients*2<<20)
	t.Logf("peak heap %.1f MiB with %d concurrent 1 MiB requests (limit %.0f MiB)", float64(got)/(1<<20), clients, float64(limit)/(1<<20))
	if got > limit {
		t.Errorf("peak heap %.1f MiB, above the limit of %.0f MiB", float64(got)/(1<<20), float64(limit)/(1<<20))
	}
}

// TestLongPromptRefusedUntokenized checks the byte-length rule alone: a
// message whose bytes could not fit the context is refused without being
// tokenized, with the numbers in the message.
func TestLongPromptRefusedUntokenized(t *testing.T) {
	_, hs := newAPIServer(t, Config{Models: testModelDirs[:1], Engine: engine.Options{Context: 64}})
	resp, body := post(t, hs, "/v1/chat/completions", request("cai-tiny", false, 4, msg{"role": "user", "content": strings.Repeat("x", 64<<10)}))
	if resp.StatusCode != 400 || !strings.Contains(string(body), "bytes of text, more than the 64 tokens") {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
}
