package chat

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
)

// PNG cards keep their JSON in tEXt chunks. image/png reads the pixels and
// skips text chunks without exposing them, and no maintained module in the
// proxy reads and writes them, so the chunk layer is written here: a PNG is
// the signature, then chunks of length (4 bytes, big-endian), type (4),
// data, and a CRC-32 of type and data (RFC 2083, section 3).

const maxPNGChunks = 1 << 16

type pngChunk struct {
	typ  string
	data []byte
}

// pngChunks splits a PNG file into its chunks, checking lengths and CRCs,
// up to and including IEND.
func pngChunks(data []byte) ([]pngChunk, error) {
	if !bytes.HasPrefix(data, pngSignature) {
		return nil, errors.New("not a PNG image")
	}
	rest := data[len(pngSignature):]
	var out []pngChunk
	for len(out) < maxPNGChunks {
		if len(rest) < 12 {
			return nil, errors.New("the PNG image is truncated (no IEND chunk)")
		}
		n := binary.BigEndian.Uint32(rest)
		typ := rest[4:8]
		if uint64(n) > uint64(len(rest)-12) {
			return nil, fmt.Errorf("the PNG chunk %q claims %d bytes, more than the file holds", typ, n)
		}
		body := rest[8 : 8+n]
		if crc32.ChecksumIEEE(rest[4:8+n]) != binary.BigEndian.Uint32(rest[8+n:]) {
			return nil, fmt.Errorf("the PNG chunk %q is damaged (bad CRC)", typ)
		}
		out = append(out, pngChunk{string(typ), body})
		rest = rest[12+n:]
		if string(typ) == "IEND" {
			return out, nil
		}
	}
	return nil, fmt.Errorf("the PNG image has more than %d chunks", maxPNGChunks)
}

// pngTexts returns the tEXt chunks of a PNG file by keyword (the first of
// each keyword wins).
func pngTexts(data []byte) (map[string]string, error) {
	chunks, err := pngChunks(data)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, c := range chunks {
		if c.typ != "tEXt" {
			continue
		}
		key, text, ok := bytes.Cut(c.data, []byte{0})
		if !ok {
			continue // no keyword separator: not a text chunk anyone can use
		}
		if _, seen := out[string(key)]; !seen {
			out[string(key)] = string(text)
		}
	}
	return out, nil
}

func appendChunk(out []byte, typ string, data []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	start := len(out)
	out = append(out, typ...)
	out = append(out, data...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[start:]))
}

// MarshalPNG returns the card inside a PNG image: img (a PNG file, such as
// the card's avatar) with its old card chunks replaced, or a plain
// placeholder image when img is empty. A V2 card is written to a "chara"
// chunk; a V3 card to "ccv3", with its V2 form in "chara" too for readers
// that know only V2.
func (c *SharedCard) MarshalPNG(img []byte, spec string) ([]byte, error) {
	if len(img) == 0 {
		img = placeholderPNG()
	}
	if len(img) > MaxCardFileBytes {
		return nil, fmt.Errorf("character card %q: the image is %d bytes, more than the limit of %d", c.Name, len(img), MaxCardFileBytes)
	}
	chunks, err := pngChunks(img)
	if err != nil {
		return nil, fmt.Errorf("character card %q: image: %w", c.Name, err)
	}
	texts := map[string][]byte{}
	v2, err := c.MarshalSpec(SpecV2)
	if err != nil {
		return nil, err
	}
	texts["chara"] = v2
	if spec == SpecV3 {
		if texts["ccv3"], err = c.MarshalSpec(SpecV3); err != nil {
			return nil, err
		}
	} else if spec != SpecV2 {
		return nil, fmt.Errorf("character card: cannot export as spec %q (want %s or %s)", spec, SpecV2, SpecV3)
	}
	out := append([]byte(nil), pngSignature...)
	for _, ch := range chunks {
		if ch.typ == "tEXt" {
			if key, _, _ := bytes.Cut(ch.data, []byte{0}); string(key) == "chara" || string(key) == "ccv3" {
				continue
			}
		}
		if ch.typ == "IEND" {
			for _, key := range []string{"chara", "ccv3"} {
				if js, ok := texts[key]; ok {
					body := append([]byte(key+"\x00"), base64.StdEncoding.EncodeToString(js)...)
					out = appendChunk(out, "tEXt", body)
				}
			}
		}
		out = appendChunk(out, ch.typ, ch.data)
	}
	return out, nil
}

// placeholderPNG is a small plain image for a card without an avatar.
func placeholderPNG() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for i := 0; i < len(img.Pix); i += 4 {
		copy(img.Pix[i:], []byte{0xef, 0xe9, 0xdc, 0xff})
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img) // writing to memory cannot fail
	return b.Bytes()
}
