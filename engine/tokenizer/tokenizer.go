// Package tokenizer turns text into token ids and back, in pure Go so that
// the same code runs in the browser's wasm module and natively. It reads two
// kinds of file: SentencePiece BPE models of Gemma's kind (tokenizer.model),
// and Hugging Face tokenizer.json files with a BPE model (Llama 3, Qwen,
// SmolLM2, Phi, Gemma; see hfjson.go for what is read and refused).
//
// SentencePiece encoding is github.com/eliben/go-sentencepiece's; the
// tokenizer.json pipeline is this package's own (pipeline.go, bpe.go), with
// Go's regexp for the pre-tokenizers' patterns (regex.go says how their
// Unicode \s and lookahead are carried over). This package adds what a
// chat runtime needs around it: loading errors that name the file, lookups of
// special tokens by their text, decoding that never panics on ids the model
// invents, and a [StreamDecoder] that prints generated text as it arrives
// without splitting characters.
package tokenizer

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	sentencepiece "github.com/eliben/go-sentencepiece"
	"google.golang.org/protobuf/encoding/protowire"
)

// Tokenizer is a loaded SentencePiece model. It is safe for concurrent use.
type Tokenizer struct {
	name   string                   // the file it was loaded from, for errors
	proc   *sentencepiece.Processor // a SentencePiece model; nil for tokenizer.json
	hf     *hfTokenizer             // a tokenizer.json; nil for SentencePiece
	pieces []piece                  // by id
	ids    map[string]int32         // piece text -> id, every type of piece
}

// piece is one entry of the model's vocabulary.
type piece struct {
	text string
	kind pieceType
	b    byte // the byte a byte piece (<0xAB>) stands for
}

// pieceType is ModelProto.SentencePiece.Type in sentencepiece_model.proto.
// Only the two values this package looks at are named; the others are
// UNKNOWN 2, CONTROL 3, USER_DEFINED 4 and UNUSED 5.
type pieceType int32

const (
	pieceNormal      pieceType = 1 // the proto's default
	pieceControl     pieceType = 3 // never matched in text, decodes to nothing (<bos>, and tokenizer.json's special added tokens)
	pieceUserDefined pieceType = 4 // matched whole in text, decodes to its text (<start_of_turn>, <think>)
	pieceUnused      pieceType = 5 // an id no text encodes to (a hole in a tokenizer.json's ids)
	pieceByte        pieceType = 6 // <0xAB>: one byte of a character outside the vocabulary
)

// Load reads a SentencePiece model file (a serialised ModelProto).
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer: %w", err)
	}
	return FromBytes(path, data)
}

// FromBytes parses a tokenizer held in memory (in the browser, the bytes of
// the fetched file): a Hugging Face tokenizer.json, told by its leading '{',
// or else a SentencePiece model. name is the file it came from; errors name
// it.
//
// Only SentencePiece models that go-sentencepiece encodes exactly are accepted: BPE, with
// add_dummy_prefix and remove_extra_whitespaces off (Gemma's tokenizer and
// testdata/tokenizer/tokenizer.model are such models).
func FromBytes(name string, data []byte) (*Tokenizer, error) {
	if isHFJSON(data) {
		hf, pieces, err := parseHF(data)
		if err != nil {
			return nil, fmt.Errorf("loading tokenizer %s: %w", name, err)
		}
		return newTokenizer(name, pieces, nil, hf), nil
	}
	pieces, err := parseModel(data)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", name, err)
	}
	proc, err := sentencepiece.NewProcessor(bytes.NewReader(withMergeRoom(data, pieces)))
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", name, err)
	}
	return newTokenizer(name, pieces, proc, nil), nil
}

func newTokenizer(name string, pieces []piece, proc *sentencepiece.Processor, hf *hfTokenizer) *Tokenizer {
	t := &Tokenizer{name: name, proc: proc, hf: hf, pieces: pieces, ids: make(map[string]int32, len(pieces))}
	for i, p := range pieces {
		if _, dup := t.ids[p.text]; !dup && p.kind != pieceUnused {
			t.ids[p.text] = int32(i)
		}
	}
	return t
}

// withMergeRoom works around a bug of go-sentencepiece v0.6.0: its BPE
// merge loop concatenates two neighbouring symbols into a buffer of the
// longest piece's length, which panics ("slice bounds out of range") as soon
// as two adjacent pieces are together longer than the longest piece, as in
// any longer English sentence with an 8k vocabulary. The buffer is sized
// from the model, so the processor is given the model plus one UNUSED piece
// twice as long as the longest: no two symbols are ever longer than that,
// and the extra piece can never be produced (a merge makes it only from two
// pieces of maxLen bytes of U+0001 each, which no vocabulary has). Repeated
// protobuf fields may be appended to a serialised message, so this is one
// more ModelProto.pieces record at the end. The id it would get lies past
// the vocabulary the rest of wick sees.
func withMergeRoom(data []byte, pieces []piece) []byte {
	maxLen := 0
	for _, p := range pieces {
		maxLen = max(maxLen, len(p.text))
	}
	var sp []byte
	sp = protowire.AppendTag(sp, 1, protowire.BytesType) // SentencePiece.piece
	sp = protowire.AppendString(sp, strings.Repeat("\x01", 2*maxLen))
	sp = protowire.AppendTag(sp, 3, protowire.VarintType) // SentencePiece.type
	sp = protowire.AppendVarint(sp, 5)                    // UNUSED
	out := append([]byte(nil), data...)
	out = protowire.AppendTag(out, 1, protowire.BytesType) // ModelProto.pieces
	return protowire.AppendBytes(out, sp)
}

// parseModel reads the vocabulary out of a ModelProto and checks the fields
// go-sentencepiece dereferences without checking, so that a bad file is an
// error here rather than a panic there. go-sentencepiece keeps its parsed
// proto private, and the piece types (which ids are bytes, which are control
// tokens) are needed for ID and StreamDecoder, hence this small wire-format
// walk instead of a second generated copy of sentencepiece_model.proto.
func parseModel(data []byte) ([]piece, error) {
	var pieces []piece
	var normalizer []byte
	haveNormalizer := false
	err := walk(data, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType: // ModelProto.pieces
			p, err := parsePiece(v)
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(pieces), err)
			}
			pieces = append(pieces, p)
		case num == 3 && typ == protowire.BytesType: // ModelProto.normalizer_spec
			normalizer, haveNormalizer = v, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(pieces) == 0 {
		return nil, errors.New("model has no pieces")
	}
	if len(pieces) > math.MaxInt32 {
		return nil, fmt.Errorf("model has %d pieces, more than int32 ids can name", len(pieces))
	}
	if !haveNormalizer {
		return nil, errors.New("model has no normalizer_spec")
	}
	// Both fields default to true in the proto, which go-sentencepiece does not
	// implement; it reads them through pointers, so they must be present.
	var dummyPrefix, extraWhitespace bool
	err = walk(normalizer, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 3:
			dummyPrefix = true
		case 4:
			extraWhitespace = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("normalizer_spec: %w", err)
	}
	if !dummyPrefix || !extraWhitespace {
		return nil, errors.New("normalizer_spec must set add_dummy_prefix and remove_extra_whitespaces (both false; retrain with --add_dummy_prefix=false --remove_extra_whitespaces=false)")
	}
	return pieces, nil
}

// parsePiece reads one ModelProto.SentencePiece message.
func parsePiece(data []byte) (piece, error) {
	p := piece{kind: pieceNormal}
	err := walk(data, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			p.text = string(v)
		case num == 3 && typ == protowire.VarintType:
			p.kind = pieceType(x)
		}
		return nil
	})
	if err != nil {
		return piece{}, err
	}
	if p.kind == pieceByte {
		hex, ok := strings.CutPrefix(p.text, "<0x")
		hex, ok2 := strings.CutSuffix(hex, ">")
		b, err := strconv.ParseUint(hex, 16, 8)
		if !ok || !ok2 || len(hex) != 2 || err != nil {
			return piece{}, fmt.Errorf("byte piece %q is not of the form <0xAB>", p.text)
		}
		p.b = byte(b)
	}
	return p, nil
}

// walk calls f for each field of a protobuf message: v holds the bytes of a
// length-delimited field, x the value of a varint.
func walk(data []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("malformed protobuf: %w", protowire.ParseError(n))
		}
		data = data[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(data)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(data)
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return fmt.Errorf("malformed protobuf field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// Name returns the file the tokenizer was loaded from.
func (t *Tokenizer) Name() string { return t.name }

// Vocab returns the number of pieces; ids are 0 to Vocab()-1.
func (t *Tokenizer) Vocab() int { return len(t.pieces) }

// ID returns the id of a piece given its exact text, of any type: control
// tokens such as "<bos>" and "<eos>", user-defined ones such as
// "<start_of_turn>", bytes such as "<0x0A>", or ordinary pieces (where a space
// is spelled "▁").
func (t *Tokenizer) ID(piece string) (int32, bool) {
	id, ok := t.ids[piece]
	return id, ok
}

// Piece returns the text of piece id as stored in the model (spaces as "▁",
// bytes as "<0xAB>"), and false when id is outside the vocabulary.
func (t *Tokenizer) Piece(id int32) (string, bool) {
	if !t.valid(id) {
		return "", false
	}
	return t.pieces[id].text, true
}

// IsSpecial reports whether id is a control or user-defined token (<bos>,
// <|im_end|>, <start_of_turn>, <think>): a token a chat template may name.
func (t *Tokenizer) IsSpecial(id int32) bool {
	return t.valid(id) && (t.pieces[id].kind == pieceControl || t.pieces[id].kind == pieceUserDefined)
}

func (t *Tokenizer) valid(id int32) bool { return id >= 0 && int(id) < len(t.pieces) }

// Encode returns the token ids of text. No bos or eos is added: that is the
// chat template's business.
//
// User-defined symbols (Gemma's <start_of_turn> and <end_of_turn>) are matched
// whole wherever they occur in text and become their single ids:
// go-sentencepiece matches them before merging, as SentencePiece does, so no
// pre-splitting is needed here. Control tokens (<bos>, <eos>, <pad>) are never
// matched in text, also as in SentencePiece: "<eos>" typed by a user is five
// characters of text, not the end of the sequence. Characters outside the
// vocabulary fall back to one byte piece per UTF-8 byte.
//
// A tokenizer.json encodes as Hugging Face tokenizers does without a
// post-processor: its added tokens, special or not, are matched whole in
// text, and the text between goes through the normalizer, the
// pre-tokenizer and the BPE model.
func (t *Tokenizer) Encode(text string) []int32 {
	if text == "" {
		return nil
	}
	if t.hf != nil {
		return t.hf.encode(text)
	}
	toks := t.proc.Encode(text)
	ids := make([]int32, len(toks))
	for i, tok := range toks {
		ids[i] = int32(tok.ID)
	}
	return ids
}

// Decode returns the text of ids. Control tokens decode to nothing, the
// unknown token to SentencePiece's " ⁇ ", and runs of byte pieces to the
// characters they spell, with U+FFFD for each byte that is not part of a valid
// UTF-8 sequence. An id outside the vocabulary (a model whose output layer is
// padded past the tokenizer, say) decodes to U+FFFD instead of failing.
//
// A tokenizer.json decodes alike: special added tokens to nothing, other
// added tokens to their text, ByteLevel and byte-fallback tokens to their
// bytes, and the decoder's leading-space strip applies at the start.
func (t *Tokenizer) Decode(ids []int32) string {
	if t.hf != nil {
		d := t.NewStreamDecoder()
		var sb strings.Builder
		for _, id := range ids {
			sb.WriteString(d.Push(id))
		}
		sb.WriteString(d.Flush())
		return sb.String()
	}
	var sb strings.Builder
	run := make([]int, 0, len(ids))
	flush := func() {
		if len(run) > 0 {
			sb.WriteString(t.proc.Decode(run))
			run = run[:0]
		}
	}
	for _, id := range ids {
		if !t.valid(id) {
			// go-sentencepiece indexes its pieces with the id unchecked.
			flush()
			sb.WriteRune(utf8.RuneError)
			continue
		}
		run = append(run, int(id))
	}
	flush()
	return sb.String()
}

// StreamDecoder decodes generated tokens one at a time for display. A
// character that the model spells as several byte pieces (<0xE2> <0x82>
// <0xAC> for "€") comes out whole once its last byte arrives, never as
// U+FFFD halves. The concatenation of everything Push and Flush return equals
// Decode of all the ids pushed. A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	tok *Tokenizer
	// pending holds the bytes of byte pieces that so far form only the
	// beginning of a character: at most 3 bytes.
	pending []byte
	// strip is how many leading spaces a tokenizer.json's decoder still
	// removes at the start of the stream; started says a token that
	// decodes to something has been pushed.
	strip   int
	started bool
}

// NewStreamDecoder returns a StreamDecoder with nothing pending.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	d := &StreamDecoder{tok: t, pending: make([]byte, 0, utf8.UTFMax)}
	if t.hf != nil {
		d.strip = t.hf.stripLead
	}
	return d
}

// Push adds one token and returns the text that is now complete, which may
// be empty.
func (d *StreamDecoder) Push(id int32) string {
	t := d.tok
	if t.hf != nil {
		// Every token of a tokenizer.json stands for bytes; a character
		// may be spread over several (ByteLevel tokens split UTF-8 freely).
		if !t.valid(id) {
			return d.drain(true) + string(utf8.RuneError)
		}
		n := len(d.pending)
		p := t.pieces[id]
		d.pending = t.hf.tokenBytes(d.pending, p, !d.started)
		d.started = d.started || p.kind != pieceControl && p.kind != pieceUnused
		for d.strip > 0 && n < len(d.pending) && d.pending[n] == ' ' {
			d.pending = append(d.pending[:n], d.pending[n+1:]...)
			d.strip--
		}
		if len(d.pending) > n {
			d.strip = 0 // only the very start is stripped
		}
		return d.drain(false)
	}
	if t.valid(id) && t.pieces[id].kind == pieceByte {
		d.pending = append(d.pending, t.pieces[id].b)
		return d.drain(false)
	}
	// Any other token ends a run of bytes, exactly as in Decode: what is
	// pending can no longer be completed.
	return d.drain(true) + t.Decode([]int32{id})
}

// Flush returns the text still pending, with U+FFFD for each byte of an
// unfinished character, and leaves the decoder empty, ready for a new stream.
func (d *StreamDecoder) Flush() string {
	s := d.drain(true)
	if d.tok.hf != nil {
		d.strip, d.started = d.tok.hf.stripLead, false
	}
	return s
}

// drain decodes the pending bytes. Unless final, it stops before a trailing
// sequence that more bytes could still complete. utf8.FullRune is true as soon
// as the leading bytes either form a character or can never form one, and in
// both cases utf8.DecodeRune gives the same answer however many bytes follow,
// so the output agrees with go-sentencepiece's decoding of the whole run.
func (d *StreamDecoder) drain(final bool) string {
	p := d.pending
	var sb strings.Builder
	for len(p) > 0 && (final || utf8.FullRune(p)) {
		r, size := utf8.DecodeRune(p)
		sb.WriteRune(r) // utf8.RuneError, U+FFFD, for an invalid byte
		p = p[size:]
	}
	d.pending = append(d.pending[:0], p...)
	return sb.String()
}
