package chat

import (
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine/format/manifestpb"
	"github.com/wick-run/wick/engine/tokenizer"
)

// Llama2ChatTemplate returns Llama 2's chat template for tok, as a manifest
// stores it, with bos and eos the ids of the model's <s> and </s>:
//
//	<s>[INST] {system}\n\n{user} [/INST] {reply}</s><s>[INST] {user} [/INST] ...
//
// stopping at eos. Llama 2 wraps the system prompt in <<SYS>> markers inside
// the first [INST]; here it is folded into the first user message like
// Gemma's, which chat models of that family follow as well. The reply ends
// right at </s>, as the model generates it, so that the next turn extends
// the cached tokens.
func Llama2ChatTemplate(tok *tokenizer.Tokenizer, bos, eos int32) (*manifestpb.ChatTemplate, error) {
	if tok == nil {
		return nil, errors.New("llama 2 chat template: no tokenizer")
	}
	var special []*manifestpb.SpecialToken
	text := make(map[int32]string)
	for _, id := range []int32{bos, eos} {
		p, ok := tok.Piece(id)
		if !ok {
			return nil, fmt.Errorf("llama 2 chat template: id %d is outside tokenizer %s's %d pieces", id, tok.Name(), tok.Vocab())
		}
		if _, dup := text[id]; !dup {
			special = append(special, &manifestpb.SpecialToken{Text: p, Id: id})
		}
		text[id] = p
	}
	return &manifestpb.ChatTemplate{
		BosId:                   bos,
		User:                    &manifestpb.RoleFormat{Prefix: "[INST] ", Suffix: " [/INST]"},
		Assistant:               &manifestpb.RoleFormat{Prefix: " ", Suffix: text[eos] + text[bos]},
		FoldSystemIntoFirstUser: true,
		StopIds:                 []int32{eos},
		SpecialTokens:           special,
	}, nil
}
