package chat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The fixtures in testdata/cards: JSON written by hand, PNGs built from
// them by testdata/cards/make_png.py (not by wick's writer).
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata/cards", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseCardFixtures(t *testing.T) {
	tests := []struct {
		file, spec, name, greeting string
		alternates                 int
		extra                      []string // keys Extra must hold
	}{
		{"v1.json", SpecV1, "Ada", "Put it on the bench, {{user}}. Let us see what time did to it.", 0, nil},
		{"v2-book.json", SpecV2, "Captain Ives", "*slaps the rail* Steady, old girl. Welcome aboard, {{user}}.", 2, []string{"character_book", "extensions", "x_unknown_field"}},
		{"v2.png", SpecV2, "Captain Ives", "*slaps the rail* Steady, old girl. Welcome aboard, {{user}}.", 2, []string{"character_book", "extensions", "x_unknown_field"}},
		{"v3.json", SpecV3, "Wren", "Package for {{user}}? Sign here.", 0, []string{"nickname", "group_only_greetings", "assets", "creation_date", "extensions"}},
		{"v3.png", SpecV3, "Wren", "Package for {{user}}? Sign here.", 0, []string{"nickname", "assets"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := ParseCard(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.Spec != tt.spec || c.Name != tt.name || c.FirstMes != tt.greeting || len(c.AlternateGreetings) != tt.alternates {
				t.Fatalf("got spec %q name %q greeting %q, %d alternates; want %q %q %q, %d", c.Spec, c.Name, c.FirstMes, len(c.AlternateGreetings), tt.spec, tt.name, tt.greeting, tt.alternates)
			}
			for _, k := range tt.extra {
				if _, ok := c.Extra[k]; !ok {
					t.Errorf("Extra lacks %s (has %v)", k, keys(c.Extra))
				}
			}
		})
	}
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// canonical is a card's data object as generic JSON, for comparisons that
// ignore key order and spacing.
func canonical(t testing.TB, c *SharedCard) any {
	t.Helper()
	js, err := c.MarshalSpec(SpecV2)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatal(err)
	}
	return v["data"]
}

// TestCardRoundTrip exports every fixture as V2 and V3, as JSON and PNG,
// and reads it back: every field, character_book, extensions and unknown
// fields included, must survive.
func TestCardRoundTrip(t *testing.T) {
	for _, file := range []string{"v1.json", "v2-book.json", "v2.png", "v3.json", "v3.png"} {
		orig, err := ParseCard(readFixture(t, file))
		if err != nil {
			t.Fatal(err)
		}
		want := canonical(t, orig)
		for _, spec := range []string{SpecV2, SpecV3} {
			for _, form := range []string{"json", "png", "png over the original"} {
				t.Run(file+" as "+spec+" "+form, func(t *testing.T) {
					var out []byte
					switch form {
					case "json":
						out, err = orig.MarshalSpec(spec)
					case "png":
						out, err = orig.MarshalPNG(nil, spec)
					default:
						img := readFixture(t, "v3.png")
						out, err = orig.MarshalPNG(img, spec)
					}
					if err != nil {
						t.Fatal(err)
					}
					back, err := ParseCard(out)
					if err != nil {
						t.Fatal(err)
					}
					if back.Spec != spec {
						t.Errorf("read back as spec %q, want %q", back.Spec, spec)
					}
					got := canonical(t, back)
					if spec == SpecV3 {
						// V3 export adds the field its spec requires.
						if g, ok := got.(map[string]any); ok {
							if _, had := orig.Extra["group_only_greetings"]; !had {
								delete(g, "group_only_greetings")
							}
						}
					}
					if !reflect.DeepEqual(got, want) {
						a, _ := json.Marshal(got)
						b, _ := json.Marshal(want)
						t.Fatalf("round trip changed the card:\n got %s\nwant %s", a, b)
					}
					if strings.HasPrefix(form, "png") {
						texts, err := pngTexts(out)
						if err != nil {
							t.Fatal(err)
						}
						if _, ok := texts["chara"]; !ok {
							t.Errorf("the PNG has no chara chunk")
						}
						if _, ok := texts["ccv3"]; ok != (spec == SpecV3) {
							t.Errorf("ccv3 chunk present %v, want %v", ok, spec == SpecV3)
						}
						if n := bytes.Count(out, []byte("tEXtchara")); n != 1 {
							t.Errorf("the PNG has %d chara chunks, want 1", n)
						}
					}
				})
			}
		}
	}
}

func TestParseCardErrors(t *testing.T) {
	v2 := func(data string) []byte {
		return []byte(`{"spec":"chara_card_v2","spec_version":"2.0","data":` + data + `}`)
	}
	pngWith := func(key, text string) []byte {
		img := placeholderPNG()
		chunks, _ := pngChunks(img)
		out := append([]byte(nil), pngSignature...)
		for _, c := range chunks {
			if c.typ == "IEND" {
				out = appendChunk(out, "tEXt", []byte(key+"\x00"+text))
			}
			out = appendChunk(out, c.typ, c.data)
		}
		return out
	}
	good, _ := (&SharedCard{Name: "A"}).MarshalPNG(nil, SpecV2)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-20] ^= 1
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a card's JSON object"},
		{"not json", []byte("hello"), "not a card's JSON object"},
		{"array", []byte("[1]"), "not a card's JSON object"},
		{"null", []byte("null"), "null"},
		{"no name", []byte(`{"description":"x"}`), "no name"},
		{"blank name", v2(`{"name":"  "}`), "no name"},
		{"unknown spec", []byte(`{"spec":"chara_card_v9","data":{}}`), "unknown spec"},
		{"v2 without data", []byte(`{"spec":"chara_card_v2"}`), "no data object"},
		{"v2 data not object", v2(`[]`), "data is not an object"},
		{"name not string", v2(`{"name":5}`), "field name is not a string"},
		{"greetings not list", v2(`{"name":"a","alternate_greetings":"hi"}`), "alternate_greetings is not a list"},
		{"field too long", v2(`{"name":"a","description":"` + strings.Repeat("x", MaxCardFieldBytes+1) + `"}`), "field description is"},
		{"too many greetings", v2(`{"name":"a","alternate_greetings":[` + strings.Repeat(`"g",`, MaxCardListEntries) + `"g"]}`), "more than the limit"},
		{"json too big", append([]byte(`{"name":"a","x":"`), bytes.Repeat([]byte("y"), MaxCardJSONBytes)...), "JSON is"},
		{"file too big", make([]byte, MaxCardFileBytes+1), "the file is"},
		{"png without card", placeholderPNG(), "holds no card"},
		{"png truncated", good[:len(good)-30], "more than the file holds"},
		{"png without IEND", good[:len(good)-12], "truncated"},
		{"png bad crc", badCRC, "bad CRC"},
		{"png bad base64", pngWith("chara", "@@@@"), "not base64"},
		{"png bad json", pngWith("chara", base64.StdEncoding.EncodeToString([]byte("{"))), "not a card's JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCard(tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "character card: ") {
				t.Errorf("error %q does not say it is about a character card", err)
			}
		})
	}
}

func TestCardSystemPrompt(t *testing.T) {
	tests := []struct {
		name string
		card Card
		want string
	}{
		{"name and persona (the wording saved chats were made with)",
			Card{Name: "Maren", Persona: "A baker.", Greeting: "Hi."},
			"You are Maren. A baker.\nStay in character as Maren: reply only as Maren would, and never write the user's lines."},
		{"no name", Card{}, "You are the character.\nStay in character as the character: reply only as the character would, and never write the user's lines."},
		{"every part, in order",
			Card{Name: "Ives", Persona: "{{char}} steers a barge.", Personality: "loud", Scenario: "{{USER}} comes aboard.",
				UserName: "Tom", UserPersona: "A tired traveller.", Examples: "<START>\n{{user}}: Hi\n{{char}}: Ho\n<start>\n\n<START>  {{Char}}: Again  "},
			"You are Ives. Ives steers a barge.\nStay in character as Ives: reply only as Ives would, and never write the user's lines.\n" +
				"Ives's personality: loud\nScenario: Tom comes aboard.\nAbout Tom: A tired traveller.\nExample dialogue:\nTom: Hi\nIves: Ho\n\nIves: Again"},
		{"instructions with {{original}}",
			Card{Name: "A", Persona: "P.", Instructions: "{{original}}\nBe brief."},
			"You are A. P.\nStay in character as A: reply only as A would, and never write the user's lines.\nBe brief."},
		{"instructions without {{original}}: the persona follows",
			Card{Name: "A", Persona: "P.", Instructions: "Play <BOT> for <user>."},
			"Play A for User.\nP."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.card.SystemPrompt(); got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSharedCardGreetings(t *testing.T) {
	c, err := ParseCard(readFixture(t, "v2-book.json"))
	if err != nil {
		t.Fatal(err)
	}
	card := c.Card("Tom", "")
	got := c.Greetings(card)
	want := []string{"*slaps the rail* Steady, old girl. Welcome aboard, Tom.", "You are wet through, Tom. Come to the stove.", "*the barge groans* Do not mind her, she complains."}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("greetings %q, want %q", got, want)
	}
	msgs := card.Messages()
	if len(msgs) != 2 || msgs[1].Content != want[0] {
		t.Fatalf("messages %+v: want the substituted first greeting", msgs)
	}
	if !strings.HasPrefix(msgs[0].Content, "You are Captain Ives. Captain Ives commands") || !strings.Contains(msgs[0].Content, "\nWrite in the present tense.") {
		t.Fatalf("system prompt %q", msgs[0].Content)
	}
}

// FuzzParseCard feeds the card reader arbitrary bytes (seeds in
// testdata/fuzz/FuzzParseCard, run by every go test). It must never
// panic, and a card it accepts must survive export and re-import.
func FuzzParseCard(f *testing.F) {
	for _, name := range []string{"v1.json", "v2-book.json", "v3.json", "v2.png", "v3.png"} {
		data, err := os.ReadFile(filepath.Join("testdata/cards", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCard(data)
		if err != nil {
			return
		}
		want := canonical(t, c)
		for _, spec := range []string{SpecV2, SpecV3} {
			js, err := c.MarshalSpec(spec)
			if err != nil {
				t.Fatalf("export %s: %v", spec, err)
			}
			back, err := ParseCard(js)
			if err != nil {
				if strings.Contains(err.Error(), "limit") {
					return // the export grew past a limit the input was just under
				}
				t.Fatalf("re-import of the %s export: %v\n%s", spec, err, js)
			}
			got := canonical(t, back)
			if g, ok := got.(map[string]any); ok && spec == SpecV3 {
				if _, had := c.Extra["group_only_greetings"]; !had {
					delete(g, "group_only_greetings")
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip through %s changed the card", spec)
			}
		}
		_ = c.Card("", "").SystemPrompt()
	})
}
