package chat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"unicode/utf8"
)

// Limits on a shared card, which is untrusted input: a file from anywhere.
const (
	MaxCardFileBytes   = 32 << 20  // a PNG card, its image included
	MaxCardJSONBytes   = 4 << 20   // the card's JSON, in a file or a PNG chunk
	MaxCardFieldBytes  = 256 << 10 // one text field
	MaxCardListEntries = 256       // alternate greetings, tags
)

// The specs a shared card declares. Cards of the first version declare none:
// their fields are the top-level object.
const (
	SpecV1 = ""
	SpecV2 = "chara_card_v2"
	SpecV3 = "chara_card_v3"
)

// SharedCard is a character card in the format people share them in
// (the "Tavern" card specs V1, V2 and V3, as JSON or inside a PNG image).
// The fields wick uses are parsed; everything else the card's data holds
// (character_book, extensions, V3's assets, fields unknown to wick) is kept
// in Extra as it came, so that an exported card carries it on.
type SharedCard struct {
	Spec string `json:"spec"` // the spec the card came in: SpecV1, SpecV2 or SpecV3

	Name                    string   `json:"name"`
	Description             string   `json:"description"`
	Personality             string   `json:"personality"`
	Scenario                string   `json:"scenario"`
	FirstMes                string   `json:"first_mes"`
	MesExample              string   `json:"mes_example"`
	SystemPrompt            string   `json:"system_prompt"`
	PostHistoryInstructions string   `json:"post_history_instructions"`
	AlternateGreetings      []string `json:"alternate_greetings"`
	CreatorNotes            string   `json:"creator_notes"`
	Creator                 string   `json:"creator"`
	CharacterVersion        string   `json:"character_version"`
	Tags                    []string `json:"tags"`

	// Extra is every other field of the card's data object, verbatim.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`
}

// textFields are the card's string fields, by their JSON names.
func (c *SharedCard) textFields() []struct {
	name string
	v    *string
} {
	return []struct {
		name string
		v    *string
	}{
		{"name", &c.Name}, {"description", &c.Description}, {"personality", &c.Personality},
		{"scenario", &c.Scenario}, {"first_mes", &c.FirstMes}, {"mes_example", &c.MesExample},
		{"system_prompt", &c.SystemPrompt}, {"post_history_instructions", &c.PostHistoryInstructions},
		{"creator_notes", &c.CreatorNotes}, {"creator", &c.Creator}, {"character_version", &c.CharacterVersion},
	}
}

// listFields are the card's lists of strings.
func (c *SharedCard) listFields() []struct {
	name string
	v    *[]string
} {
	return []struct {
		name string
		v    *[]string
	}{{"alternate_greetings", &c.AlternateGreetings}, {"tags", &c.Tags}}
}

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// ParseCard reads a shared card: JSON (V1, V2 or V3), or a PNG image with
// the card in a tEXt chunk (base64 of the JSON), "ccv3" preferred over
// "chara". It fails with an error naming what is wrong: the size limits
// (MaxCardFileBytes and the others), a damaged PNG, bad base64 or JSON, an
// unknown spec, a field of the wrong type or too long, or a card without a
// name.
func ParseCard(data []byte) (*SharedCard, error) {
	if len(data) > MaxCardFileBytes {
		return nil, fmt.Errorf("character card: the file is %d bytes, more than the limit of %d", len(data), MaxCardFileBytes)
	}
	if bytes.HasPrefix(data, pngSignature) {
		js, err := cardFromPNG(data)
		if err != nil {
			return nil, fmt.Errorf("character card: %w", err)
		}
		data = js
	}
	c, err := parseCardJSON(data)
	if err != nil {
		return nil, fmt.Errorf("character card: %w", err)
	}
	return c, nil
}

// cardFromPNG returns the JSON a PNG card carries.
func cardFromPNG(data []byte) ([]byte, error) {
	texts, err := pngTexts(data)
	if err != nil {
		return nil, err
	}
	key := "ccv3"
	b64, ok := texts[key]
	if !ok {
		key = "chara"
		if b64, ok = texts[key]; !ok {
			return nil, errors.New("the PNG image holds no card (no tEXt chunk named ccv3 or chara)")
		}
	}
	if base64.StdEncoding.DecodedLen(len(b64)) > MaxCardJSONBytes {
		return nil, fmt.Errorf("the PNG's %s chunk is %d bytes, more than the limit of %d for a card", key, len(b64), MaxCardJSONBytes)
	}
	// Writers differ in padding and may wrap lines: both are accepted.
	clean := strings.TrimRight(strings.Join(strings.Fields(b64), ""), "=")
	js, err := base64.RawStdEncoding.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("the PNG's %s chunk is not base64: %w", key, err)
	}
	return js, nil
}

func parseCardJSON(data []byte) (*SharedCard, error) {
	if len(data) > MaxCardJSONBytes {
		return nil, fmt.Errorf("its JSON is %d bytes, more than the limit of %d", len(data), MaxCardJSONBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a card's JSON object: %w", err)
	}
	if top == nil {
		return nil, errors.New("not a card's JSON object: null")
	}
	c := &SharedCard{}
	var spec string
	if raw, ok := top["spec"]; ok {
		if err := json.Unmarshal(raw, &spec); err != nil {
			return nil, fmt.Errorf("spec: %w", err)
		}
	}
	obj := top
	switch spec {
	case SpecV1:
		// A V1 card is its top-level object. Fields other than V1's (some
		// tools add V2 fields there) are read as V2 fields would be.
		obj = maps.Clone(top)
		delete(obj, "spec")
		delete(obj, "spec_version")
	case SpecV2, SpecV3:
		raw, ok := top["data"]
		if !ok {
			return nil, fmt.Errorf("a %s card has no data object", spec)
		}
		obj = nil
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("a %s card's data is not an object", spec)
		}
	default:
		return nil, fmt.Errorf("unknown spec %q (want %s or %s, or none for a V1 card)", truncate(spec, 64), SpecV2, SpecV3)
	}
	c.Spec = spec
	if err := c.readFields(obj); err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.Name) == "" {
		return nil, errors.New("the card has no name")
	}
	return c, nil
}

// readFields takes the known fields out of obj and keeps the rest in Extra.
func (c *SharedCard) readFields(obj map[string]json.RawMessage) error {
	for _, f := range c.textFields() {
		raw, ok := obj[f.name]
		if !ok {
			continue
		}
		delete(obj, f.name)
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, f.v); err != nil {
			return fmt.Errorf("field %s is not a string", f.name)
		}
		if err := checkText(f.name, *f.v); err != nil {
			return err
		}
	}
	for _, f := range c.listFields() {
		raw, ok := obj[f.name]
		if !ok {
			continue
		}
		delete(obj, f.name)
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, f.v); err != nil {
			return fmt.Errorf("field %s is not a list of strings", f.name)
		}
		if len(*f.v) > MaxCardListEntries {
			return fmt.Errorf("field %s has %d entries, more than the limit of %d", f.name, len(*f.v), MaxCardListEntries)
		}
		for i, s := range *f.v {
			if err := checkText(fmt.Sprintf("%s[%d]", f.name, i), s); err != nil {
				return err
			}
		}
	}
	if len(obj) > 0 {
		c.Extra = obj
	}
	return nil
}

func checkText(name, s string) error {
	if len(s) > MaxCardFieldBytes {
		return fmt.Errorf("field %s is %d bytes, more than the limit of %d", name, len(s), MaxCardFieldBytes)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("field %s is not valid UTF-8", name)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// data returns the card's data object: Extra with the known fields over it.
func (c *SharedCard) data() map[string]any {
	out := make(map[string]any, len(c.Extra)+16)
	for k, v := range c.Extra {
		out[k] = v
	}
	for _, f := range c.textFields() {
		out[f.name] = *f.v
	}
	for _, f := range c.listFields() {
		l := *f.v
		if l == nil {
			l = []string{}
		}
		out[f.name] = l
	}
	return out
}

// MarshalSpec returns the card as JSON of spec SpecV2 or SpecV3 (a card
// is exported as one of these, whatever it came as). Extra is carried over
// verbatim; a V3 card gets the fields its spec requires (group_only_greetings)
// where it lacks them.
func (c *SharedCard) MarshalSpec(spec string) ([]byte, error) {
	d := c.data()
	var version string
	switch spec {
	case SpecV2:
		version = "2.0"
	case SpecV3:
		version = "3.0"
		if _, ok := d["group_only_greetings"]; !ok {
			d["group_only_greetings"] = []string{}
		}
	default:
		return nil, fmt.Errorf("character card: cannot export as spec %q (want %s or %s)", spec, SpecV2, SpecV3)
	}
	out, err := json.Marshal(map[string]any{"spec": spec, "spec_version": version, "data": d})
	if err != nil {
		return nil, fmt.Errorf("character card %q: %w", c.Name, err)
	}
	return out, nil
}

// Card returns the card as wick renders it into a system prompt: the
// description is the persona, first_mes the greeting, system_prompt the
// instructions. userName and userPersona say who the user is.
func (c *SharedCard) Card(userName, userPersona string) Card {
	return Card{
		Name: c.Name, Persona: c.Description, Greeting: c.FirstMes,
		Personality: c.Personality, Scenario: c.Scenario, Examples: c.MesExample,
		Instructions: c.SystemPrompt, PostHistory: c.PostHistoryInstructions,
		UserName: userName, UserPersona: userPersona,
	}
}

// Greetings returns first_mes and the alternate greetings, substituted for
// card; a conversation opens with the first and offers the others as
// alternatives ("swipes") of that opening message. Empty ones are left out.
func (c *SharedCard) Greetings(card Card) []string {
	var out []string
	for _, g := range append([]string{c.FirstMes}, c.AlternateGreetings...) {
		if g = card.Substitute(g, ""); strings.TrimSpace(g) != "" {
			out = append(out, g)
		}
	}
	return out
}
