package chat

import (
	"slices"
	"testing"
)

func TestLlama2Template(t *testing.T) {
	tok := loadTokenizer(t)
	ct, err := Llama2ChatTemplate(tok, bos, eos)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := New(ct, tok)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) []int32 { return tok.Encode(s) }
	cat := func(parts ...[]int32) []int32 { return slices.Concat(parts...) }
	msgs := []Message{sys("Be brief."), user("Hi"), assistant("Hello"), user("Bye")}
	want := cat([]int32{bos}, enc("[INST] "), enc("Be brief."), enc("\n\n"), enc("Hi"), enc(" [/INST]"),
		enc(" "), enc("Hello"), []int32{eos, bos},
		enc("[INST] "), enc("Bye"), enc(" [/INST]"), enc(" "))
	if got := tm.Encode(msgs, true); !slices.Equal(got, want) {
		t.Errorf("Encode:\n got %v\nwant %v", got, want)
	}
	if !tm.IsStop(eos) || tm.IsStop(bos) {
		t.Errorf("stops %v, want only eos %d", tm.StopIDs(), eos)
	}
	if _, err := Llama2ChatTemplate(tok, bos, 1000); err == nil {
		t.Error("an eos outside the vocabulary was accepted")
	}
}
