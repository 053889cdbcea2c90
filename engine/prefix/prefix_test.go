package prefix

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/wick-run/wick/engine/kv"
)

const block = 4

// snap is a stand-in block snapshot of positions [end-block, end) with size
// bytes of KV whose first byte tags it.
func snap(end int, size int, tag byte) *kv.Snapshot {
	d := make([]byte, size)
	d[0] = tag
	return &kv.Snapshot{Start: end - block, End: end, Data: d}
}

// seq makes n tokens: the first `shared` count up from 1, the rest from base.
func seq(n, shared int, base int32) []int32 {
	t := make([]int32, n)
	for i := range t {
		if i < shared {
			t[i] = int32(i + 1)
		} else {
			t[i] = base + int32(i)
		}
	}
	return t
}

// insertAll inserts every block of tokens in order, each tagged with tag.
func insertAll(t *testing.T, c *Cache, tokens []int32, tag byte) {
	t.Helper()
	for e := block; e <= len(tokens); e += block {
		if err := c.Insert(tokens[:e], snap(e, 64, tag)); err != nil {
			t.Fatalf("insert of block ending at %d: %v", e, err)
		}
	}
}

func newCache(t *testing.T, budget int64, h HashFunc) *Cache {
	t.Helper()
	c, err := New(Options{Block: block, Budget: budget, Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLookupFindsLongestPrefix(t *testing.T) {
	c := newCache(t, 1<<20, nil)
	a := seq(12, 12, 0) // three blocks
	b := seq(8, 5, 100) // shares a's first block, then differs inside the second
	insertAll(t, c, a, 'a')
	insertAll(t, c, b, 'b')
	for _, tc := range []struct {
		name   string
		tokens []int32
		want   int
		tags   string
	}{
		{"all of a, and more", append(slices.Clone(a), 7, 7, 7, 7, 7), 12, "aaa"},
		{"a up to inside its last block", a[:11], 8, "aa"},
		{"b's branch", append(slices.Clone(b), 1), 8, "ab"},
		{"differs in the second block", seq(12, 6, 50), 4, "a"},
		{"differs in the first token", seq(12, 0, 50), 0, ""},
		{"shorter than a block", a[:3], 0, ""},
		{"empty", nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, parts := c.Lookup(tc.tokens)
			tags := ""
			for i, p := range parts {
				tags += string(p.Data[0])
				if p.Start != i*block || p.End != (i+1)*block {
					t.Errorf("part %d holds [%d, %d)", i, p.Start, p.End)
				}
			}
			if n != tc.want || tags != tc.tags {
				t.Errorf("found %d tokens from blocks %q, want %d from %q", n, tags, tc.want, tc.tags)
			}
		})
	}
}

func TestInsertChecks(t *testing.T) {
	c := newCache(t, 1<<20, nil)
	a := seq(12, 12, 0)
	if err := c.Insert(a[:8], snap(8, 64, 'a')); !errors.Is(err, ErrNoParent) {
		t.Errorf("second block without the first: %v, want ErrNoParent", err)
	}
	if err := c.Insert(a[:6], snap(6, 64, 'a')); err == nil {
		t.Error("insert of a partial block accepted")
	}
	if err := c.Insert(a[:4], snap(8, 64, 'a')); err == nil {
		t.Error("insert with a snapshot of other positions accepted")
	}
	if err := c.Insert(a[:4], snap(4, 2<<20, 'a')); err == nil {
		t.Error("block larger than the budget accepted")
	}
	if c.Wants(a[:8]) || !c.Wants(a[:4]) {
		t.Errorf("Wants: second block %v (want false), first %v (want true)", c.Wants(a[:8]), c.Wants(a[:4]))
	}
	insertAll(t, c, a[:4], 'a')
	if err := c.Insert(a[:4], snap(4, 64, 'x')); err != nil {
		t.Fatal(err)
	}
	if _, parts := c.Lookup(a); string(parts[0].Data[0]) != "a" {
		t.Error("a second insert of a cached block replaced it")
	}
	if c.Wants(a[:4]) || !c.Wants(a[:8]) {
		t.Error("Wants after the first block is cached")
	}
}

// TestLRURespectsBudget fills a small cache with many conversations and
// checks after every step that it stays within its budget, that what was
// used recently survives, and that every cached block's chain is whole.
func TestLRURespectsBudget(t *testing.T) {
	size := int64(64 + 4*block + nodeOverhead)
	budget := 10 * size // ten blocks
	c := newCache(t, budget, nil)
	hot := seq(12, 12, 0)
	insertAll(t, c, hot, 'h')
	var convs [][]int32
	for i := 0; i < 20; i++ {
		conv := seq(4*block, 0, int32(1000*(i+1)))
		convs = append(convs, conv)
		insertAll(t, c, conv, 'c')
		if st := c.Stats(); st.Bytes > budget || st.Blocks > 10 {
			t.Fatalf("after conversation %d: %d bytes in %d blocks, budget %d", i, st.Bytes, st.Blocks, budget)
		}
		// The hot conversation is used between every two others.
		if n, _ := c.Lookup(hot); n != 12 {
			t.Fatalf("after conversation %d: hot prefix found for %d tokens, want 12", i, n)
		}
	}
	st := c.Stats()
	if st.Evictions == 0 || st.Inserts != st.Evictions+int64(st.Blocks) {
		t.Errorf("stats %+v: inserts must equal evictions plus blocks held", st)
	}
	// The last conversation is the most recent besides hot: its chain holds
	// up to what the budget leaves (10 - 3 blocks = 7 > 4), so all of it.
	if n, _ := c.Lookup(convs[19]); n != 16 {
		t.Errorf("most recent conversation found for %d tokens, want 16", n)
	}
	if n, _ := c.Lookup(convs[0]); n != 0 {
		t.Errorf("oldest conversation still found for %d tokens", n)
	}
	// Every block is reachable from the root: Lookup counts blocks from
	// the root, so the total over all prefixes equals the blocks held.
	total := 3
	for _, conv := range convs {
		n, _ := c.Lookup(conv)
		total += n / block
	}
	if total != c.Stats().Blocks {
		t.Errorf("%d blocks reachable from the root, %d held", total, c.Stats().Blocks)
	}
}

// TestForcedCollision gives every block at the same depth the same key and
// checks that no lookup ever returns another prefix's KV.
func TestForcedCollision(t *testing.T) {
	depthOnly := func(parent Key, _ []int32) Key { return parent + 1 }
	c := newCache(t, 1<<20, depthOnly)
	a := seq(8, 8, 0)
	b := seq(8, 0, 100)  // differs in the first block
	ab := seq(8, 4, 100) // a's first block, then another second block
	insertAll(t, c, a, 'a')
	for _, tc := range []struct {
		name   string
		tokens []int32
		want   string
	}{
		{"the cached prefix", a, "aa"},
		{"colliding first block", b, ""},
		{"colliding second block", ab, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, parts := c.Lookup(tc.tokens)
			tags := ""
			for _, p := range parts {
				tags += string(p.Data[0])
			}
			if tags != tc.want {
				t.Errorf("got blocks %q, want %q", tags, tc.want)
			}
		})
	}
	before := c.Stats().Collisions
	if err := c.Insert(b[:4], snap(4, 64, 'b')); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Lookup(b); n != 0 {
		t.Errorf("a colliding insert made %d tokens of b findable", n)
	}
	if n, parts := c.Lookup(a); n != 8 || parts[0].Data[0] != 'a' {
		t.Error("a colliding insert replaced the cached prefix")
	}
	if c.Stats().Collisions <= before {
		t.Error("collisions not counted")
	}
}

// TestConcurrentUse hammers one cache from several goroutines (run with
// -race to check the locking).
func TestConcurrentUse(t *testing.T) {
	c := newCache(t, 40*(64+4*block+nodeOverhead), nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				conv := seq(4*block, 2*block, int32(1000*(g*7+i%13)))
				for e := block; e <= len(conv); e += block {
					if c.Wants(conv[:e]) {
						if err := c.Insert(conv[:e], snap(e, 64, 'c')); err != nil && !errors.Is(err, ErrNoParent) {
							t.Error(err)
							return
						}
					}
				}
				if n, parts := c.Lookup(conv); len(parts) != n/block {
					t.Errorf("lookup gave %d tokens in %d parts", n, len(parts))
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := c.Stats(); st.Bytes > st.Budget {
		t.Errorf("%d bytes held, budget %d", st.Bytes, st.Budget)
	}
}

func ExampleCache() {
	c, _ := New(Options{Block: 2, Budget: 1 << 20})
	conv := []int32{5, 6, 7, 8, 9}
	for e := 2; e <= len(conv); e += 2 {
		c.Insert(conv[:e], &kv.Snapshot{Start: e - 2, End: e}) // from the sequence's Snapshot(e-2, e)
	}
	n, parts := c.Lookup([]int32{5, 6, 7, 8, 1, 2})
	fmt.Println(n, len(parts))
	// Output: 4 2
}
