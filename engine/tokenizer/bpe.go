package tokenizer

import (
	"container/heap"
	"fmt"
	"unicode/utf8"
)

// bpe is a Hugging Face BPE model: it turns one pre-tokenized word into ids
// by starting from its characters and applying the merges in rank order,
// the leftmost first among equal ranks, as tokenizers does. Written here
// rather than taken from a library because the pure-Go ports of tokenizers
// either lack byte_fallback and ignore_merges or pull in Go's RE2 regexp for
// their pre-tokenizers, which cannot express the patterns these models use.
type bpe struct {
	vocab        map[string]int32
	merges       map[[2]int32]merge
	unk          int32 // -1: none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	bytes        [256]int32 // <0xAB> ids under byte fallback; -1 where absent
}

type merge struct{ rank, id int32 }

func newBPE(m *hfBPEModel, pieces []piece) (*bpe, error) {
	b := &bpe{vocab: make(map[string]int32, len(m.Vocab)), merges: make(map[[2]int32]merge, len(m.Merges)),
		unk: -1, fuseUnk: m.FuseUnk, byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges}
	for tok, id := range m.Vocab {
		b.vocab[tok] = int32(id)
	}
	if m.UnkToken != nil {
		id, ok := b.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model: unk_token %q is not in the vocab", *m.UnkToken)
		}
		b.unk = id
	}
	for i := range b.bytes {
		b.bytes[i] = -1
		if id, ok := b.vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.bytes[i] = id
		}
	}
	for rank, raw := range m.Merges {
		l, r, err := parseMerge(raw)
		if err != nil {
			return nil, fmt.Errorf("model: merges[%d]: %w", rank, err)
		}
		li, lok := b.vocab[l]
		ri, rok := b.vocab[r]
		id, ok := b.vocab[l+r]
		if !lok || !rok || !ok {
			return nil, fmt.Errorf("model: merges[%d] (%q, %q): a token of it is not in the vocab", rank, l, r)
		}
		k := [2]int32{li, ri}
		if _, dup := b.merges[k]; !dup {
			b.merges[k] = merge{rank: int32(rank), id: id}
		}
	}
	return b, nil
}

// symbol is one element of a word while merging: a token id and its
// neighbours (-1 at the ends), in a list over the word's slice.
type symbol struct {
	id         int32
	prev, next int
	dead       bool
}

// candidate is a possible merge of symbols[pos] with its next neighbour.
type candidate struct {
	rank, id    int32
	pos         int
	left, right int32 // the ids it was computed for, to detect stale entries
}

type candidates []candidate

func (c candidates) Len() int { return len(c) }
func (c candidates) Less(i, j int) bool {
	return c[i].rank < c[j].rank || c[i].rank == c[j].rank && c[i].pos < c[j].pos
}
func (c candidates) Swap(i, j int) { c[i], c[j] = c[j], c[i] }
func (c *candidates) Push(x any)   { *c = append(*c, x.(candidate)) }
func (c *candidates) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

// encode appends the ids of word to dst.
func (b *bpe) encode(dst []int32, word string) []int32 {
	if word == "" {
		return dst
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[word]; ok {
			return append(dst, id)
		}
	}
	syms := make([]symbol, 0, len(word))
	add := func(id int32) {
		if b.fuseUnk && id == b.unk && len(syms) > 0 && syms[len(syms)-1].id == b.unk {
			return
		}
		syms = append(syms, symbol{id: id})
	}
	for i, r := range word {
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, size = utf8.DecodeRuneInString(word[i:])
		}
		ch := word[i : i+size]
		if id, ok := b.vocab[ch]; ok {
			add(id)
			continue
		}
		if b.byteFallback {
			all := true
			for j := 0; j < len(ch); j++ {
				all = all && b.bytes[ch[j]] >= 0
			}
			if all {
				for j := 0; j < len(ch); j++ {
					syms = append(syms, symbol{id: b.bytes[ch[j]]})
				}
				continue
			}
		}
		if b.unk >= 0 {
			add(b.unk)
		}
		// Without an unk token, tokenizers drops the character.
	}
	for i := range syms {
		syms[i].prev, syms[i].next = i-1, i+1
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	var q candidates
	try := func(pos int) {
		if pos < 0 || syms[pos].next < 0 {
			return
		}
		l, r := syms[pos].id, syms[syms[pos].next].id
		if m, ok := b.merges[[2]int32{l, r}]; ok {
			heap.Push(&q, candidate{rank: m.rank, id: m.id, pos: pos, left: l, right: r})
		}
	}
	for i := range syms {
		try(i)
	}
	for q.Len() > 0 {
		c := heap.Pop(&q).(candidate)
		s := &syms[c.pos]
		if s.dead || s.id != c.left || s.next < 0 || syms[s.next].id != c.right {
			continue
		}
		nx := s.next
		s.id = c.id
		syms[nx].dead = true
		s.next = syms[nx].next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
		}
		try(s.prev)
		try(c.pos)
	}
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}
