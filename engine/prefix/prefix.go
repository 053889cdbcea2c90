// Package prefix is wick's prefix cache: the KV of token prefixes that
// conversations have computed, kept so that another conversation starting
// the same way (the same character card, a regenerated or edited last
// message) restores it instead of prefilling it again.
//
// Prefixes are cut into blocks of a fixed number of tokens. Each cached block
// holds the KV of its own positions only (kv.Snapshot of [start, end)), and
// is keyed by a rolling hash: its key hashes its parent prefix's key and its
// own tokens. The blocks form a tree, a prefix's children being its
// continuations, so conversations that share a beginning share its KV, and
// restoring a prefix means restoring the chain of blocks from the root. Each
// block stores its tokens and its parent, and every match checks both, so a
// hash collision can cost a cache miss but never return another prefix's KV.
//
// The cache evicts least recently used blocks under a byte budget. Using a
// block also uses its ancestors, so a parent is always more recent than its
// children and eviction takes leaves first: a cached block's whole chain is
// always cached. A Cache is safe for concurrent use; the snapshots it hands
// out are shared and must not be modified.
package prefix

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/wick-run/wick/engine/kv"
)

// DefaultBlock is the block size in tokens. Smaller blocks reuse more (a
// lookup falls back to the last block boundary, so on average half a block
// is recomputed) but cost a snapshot, a tree node and a hash per block; and
// the recomputed tail is one prefill chunk, which on a GPU costs about what
// one decode step does up to a few dozen tokens. 32 recomputes at most 31
// tokens per hit (turn boundaries rarely fall on a block boundary, and a
// character card plus template is some hundreds of tokens), while a 4096
// position conversation needs only 128 nodes, and a block's snapshot (32
// positions of every producer) is large enough to copy efficiently.
const DefaultBlock = 32

// Key identifies a prefix: the hash of its parent's key and its last block.
type Key uint64

// HashFunc computes a block's key from its parent prefix's key (0 for the
// empty prefix) and the block's tokens. Tests inject a weak one to force
// collisions.
type HashFunc func(parent Key, block []int32) Key

// Options configure a Cache.
type Options struct {
	Block  int      // tokens per block; 0 means DefaultBlock
	Budget int64    // most bytes of KV (and bookkeeping) held; must be positive
	Hash   HashFunc // nil means a seeded maphash
}

// Stats describe a cache's contents and what happened to it.
type Stats struct {
	Blocks     int   // blocks held
	Bytes      int64 // bytes held, counted against the budget
	Budget     int64
	Inserts    int64 // blocks added
	Evictions  int64 // blocks evicted for room
	Collisions int64 // lookups or inserts that met another prefix under the same key
}

// nodeOverhead is what a block costs besides its KV and tokens: the node,
// its map entry and its list element, roughly.
const nodeOverhead = 160

// Cache is a prefix cache of one model's KV (see the package doc).
type Cache struct {
	block  int
	budget int64
	hash   HashFunc

	mu    sync.Mutex
	nodes map[Key]*node
	lru   *list.List // of *node, most recent first
	stats Stats
}

// node is one cached block: the prefix ending with it is its ancestors'
// blocks and its own.
type node struct {
	key      Key
	parent   *node   // nil for a first block
	tokens   []int32 // the block's own tokens, checked on every match
	snap     *kv.Snapshot
	children int
	elem     *list.Element
	bytes    int64
}

// New makes an empty cache.
func New(opts Options) (*Cache, error) {
	if opts.Block == 0 {
		opts.Block = DefaultBlock
	}
	if opts.Block < 1 {
		return nil, fmt.Errorf("prefix cache: block of %d tokens, must be positive", opts.Block)
	}
	if opts.Budget <= 0 {
		return nil, fmt.Errorf("prefix cache: budget of %d bytes, must be positive", opts.Budget)
	}
	if opts.Hash == nil {
		opts.Hash = seededHash(maphash.MakeSeed())
	}
	return &Cache{block: opts.Block, budget: opts.Budget, hash: opts.Hash,
		nodes: map[Key]*node{}, lru: list.New(), stats: Stats{Budget: opts.Budget}}, nil
}

// seededHash hashes with a per-process random seed, so that no one can craft
// colliding prefixes ahead of time to degrade a shared cache.
func seededHash(seed maphash.Seed) HashFunc {
	return func(parent Key, block []int32) Key {
		buf := make([]byte, 8, 8+4*len(block))
		binary.LittleEndian.PutUint64(buf, uint64(parent))
		for _, t := range block {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(t))
		}
		return Key(maphash.Bytes(seed, buf))
	}
}

// Block is the cache's block size in tokens: Insert takes prefixes of a
// multiple of it, and Lookup finds them.
func (c *Cache) Block() int { return c.block }

// Lookup finds the longest cached prefix of tokens, and returns its length
// (a multiple of Block) and the chain of block snapshots that together hold
// its KV, ready for engine.Snapshotter's Restore. It returns 0 and nil when
// not even the first block is cached. The chain counts as used.
func (c *Cache) Lookup(tokens []int32) (n int, parts []*kv.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	path := c.walk(tokens, len(tokens)/c.block)
	for i := len(path) - 1; i >= 0; i-- {
		c.lru.MoveToFront(path[i].elem) // ancestors end up more recent
	}
	for _, nd := range path {
		parts = append(parts, nd.snap)
	}
	return len(path) * c.block, parts
}

// walk follows the blocks of tokens from the root for at most blocks blocks
// and returns the cached chain. A key that is held by another prefix (a
// collision) ends the walk: tokens and parent are checked, not trusted.
func (c *Cache) walk(tokens []int32, blocks int) []*node {
	var path []*node
	var parent *node
	var key Key
	for b := 0; b < blocks; b++ {
		blk := tokens[b*c.block : (b+1)*c.block]
		key = c.hash(key, blk)
		nd, ok := c.nodes[key]
		if !ok {
			break
		}
		if nd.parent != parent || !slices.Equal(nd.tokens, blk) {
			c.stats.Collisions++
			break
		}
		path = append(path, nd)
		parent = nd
	}
	return path
}

// Wants reports whether Insert would take the block that ends tokens: its
// parent prefix is cached and it is not. Callers check it before taking a
// snapshot, which may cost a GPU readback.
func (c *Cache) Wants(tokens []int32) bool {
	if len(tokens) == 0 || len(tokens)%c.block != 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	blocks := len(tokens) / c.block
	return len(c.walk(tokens, blocks)) == blocks-1
}

// Held is the length of the longest cached prefix of tokens (a multiple
// of Block), as Lookup finds it but without counting as use: the blocks
// after it are those Insert takes next, in order. Callers check it before
// taking snapshots, which may cost a GPU readback.
func (c *Cache) Held(tokens []int32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.walk(tokens, len(tokens)/c.block)) * c.block
}

// ErrNoParent is returned by Insert when the block's parent prefix is not
// cached (never was, or was evicted): a block alone cannot be restored.
var ErrNoParent = errors.New("prefix cache: the block's parent prefix is not cached")

// Insert adds the block that ends tokens (len(tokens) a multiple of Block),
// whose KV snap holds positions [len(tokens)-Block, len(tokens)). Its parent
// prefix must be cached. A block already cached is left as it is (and
// counts as used), and so is a block whose key another prefix holds (a
// collision). Least recently used blocks are evicted to stay within the
// budget; a block larger than the whole budget is refused.
func (c *Cache) Insert(tokens []int32, snap *kv.Snapshot) error {
	n := len(tokens)
	if n == 0 || n%c.block != 0 {
		return fmt.Errorf("prefix cache: insert of %d tokens, not a positive multiple of the block size %d", n, c.block)
	}
	if snap.Start != n-c.block || snap.End != n {
		return fmt.Errorf("prefix cache: insert of the block [%d, %d) with a snapshot of positions [%d, %d)", n-c.block, n, snap.Start, snap.End)
	}
	blk := slices.Clone(tokens[n-c.block:])
	size := snap.Bytes() + 4*int64(c.block) + nodeOverhead
	if size > c.budget {
		return fmt.Errorf("prefix cache: a block of %d bytes exceeds the whole budget of %d", size, c.budget)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	blocks := n / c.block
	path := c.walk(tokens, blocks)
	if len(path) == blocks {
		c.touch(path[blocks-1])
		return nil
	}
	if len(path) < blocks-1 {
		return ErrNoParent
	}
	var parent *node
	var parentKey Key
	if len(path) > 0 {
		parent = path[len(path)-1]
		parentKey = parent.key
	}
	key := c.hash(parentKey, blk)
	if _, taken := c.nodes[key]; taken {
		// Another prefix holds this key (walk counted the collision): keep
		// it, and miss on this one.
		return nil
	}
	nd := &node{key: key, parent: parent, tokens: blk, snap: snap, bytes: size}
	if parent != nil {
		parent.children++
	}
	nd.elem = c.lru.PushFront(nd)
	c.nodes[key] = nd
	c.stats.Bytes += size
	c.stats.Blocks++
	c.stats.Inserts++
	c.touch(nd)
	c.evict()
	return nil
}

// touch marks nd and its ancestors used, ancestors last (most recent).
func (c *Cache) touch(nd *node) {
	for ; nd != nil; nd = nd.parent {
		c.lru.MoveToFront(nd.elem)
	}
}

// evict drops least recently used leaves until the cache fits its budget.
// The block just inserted and its ancestors are the most recent, so they go
// last (and only when the chain alone exceeds the budget).
func (c *Cache) evict() {
	for e := c.lru.Back(); c.stats.Bytes > c.budget && e != nil; {
		nd := e.Value.(*node)
		prev := e.Prev()
		if nd.children == 0 {
			c.lru.Remove(e)
			delete(c.nodes, nd.key)
			if nd.parent != nil {
				nd.parent.children--
			}
			c.stats.Bytes -= nd.bytes
			c.stats.Blocks--
			c.stats.Evictions++
			// The parent may have become a leaf; it is more recent, so the
			// walk towards the front reaches it.
		}
		e = prev
	}
}

// Stats returns the cache's current numbers.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}
