//go:build wasip1

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wick-run/wick/engine/chat"
)

// The exports here need no model: the page calls them on an instance of its
// own. Character cards are parsed and written by engine/chat, so the page and
// `wick chat -card` read a card the same way and give the model the same
// system prompt; sha256 is here for pages without crypto.subtle (served
// over plain http, which is not a secure context). Each returns statusDone
// or statusError at once.

// cardWire is a character as the page keeps it: chat.Card with JSON names,
// and the greeting's alternatives.
type cardWire struct {
	Name               string   `json:"name"`
	Persona            string   `json:"persona"`
	Greeting           string   `json:"greeting"`
	AlternateGreetings []string `json:"alternate_greetings"`
	Personality        string   `json:"personality"`
	Scenario           string   `json:"scenario"`
	Examples           string   `json:"examples"`
	Instructions       string   `json:"instructions"`
	PostHistory        string   `json:"post_history"`
	UserName           string   `json:"user_name"`
	UserPersona        string   `json:"user_persona"`
}

func (w cardWire) card() chat.Card {
	return chat.Card{
		Name: w.Name, Persona: w.Persona, Greeting: w.Greeting, Personality: w.Personality,
		Scenario: w.Scenario, Examples: w.Examples, Instructions: w.Instructions,
		PostHistory: w.PostHistory, UserName: w.UserName, UserPersona: w.UserPersona,
	}
}

// tool runs a model-free export: the input, f's output or error.
func tool(what string, n uint32, f func([]byte) ([]byte, error)) int32 {
	return guard(func() int32 {
		if current != nil {
			return fail(errBusy)
		}
		data, err := in(n)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", what, err))
		}
		out, err := f(data)
		if err != nil {
			return fail(err)
		}
		setOutput(out)
		return statusDone
	})
}

// wick_card_read parses a shared card file (JSON or PNG). Output: the
// chat.SharedCard as JSON.
//
//go:wasmexport wick_card_read
func wickCardRead(n uint32) int32 {
	return tool("card", n, func(data []byte) ([]byte, error) {
		c, err := chat.ParseCard(data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(c)
	})
}

// wick_card_write writes a shared card. Input: JSON {"card": SharedCard,
// "spec": "chara_card_v2" | "chara_card_v3", "png": bool, "image": base64
// of a PNG (optional)}. Output: the card's bytes, JSON or PNG.
//
//go:wasmexport wick_card_write
func wickCardWrite(n uint32) int32 {
	return tool("card", n, func(data []byte) ([]byte, error) {
		var req struct {
			Card  *chat.SharedCard `json:"card"`
			Spec  string           `json:"spec"`
			PNG   bool             `json:"png"`
			Image []byte           `json:"image"`
		}
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, fmt.Errorf("card export: %w", err)
		}
		if req.Card == nil {
			return nil, errors.New("card export: no card")
		}
		if req.PNG {
			return req.Card.MarshalPNG(req.Image, req.Spec)
		}
		return req.Card.MarshalSpec(req.Spec)
	})
}

// wick_card_prompt renders a character. Input: cardWire as JSON. Output:
// {"system": the system prompt, "greetings": [the greeting, then its
// alternatives, substituted], "post_history": the instructions that stand
// after the conversation, before each reply}.
//
//go:wasmexport wick_card_prompt
func wickCardPrompt(n uint32) int32 {
	return tool("card prompt", n, func(data []byte) ([]byte, error) {
		var w cardWire
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, fmt.Errorf("card prompt: %w", err)
		}
		c := w.card()
		greetings := []string{}
		for _, g := range append([]string{w.Greeting}, w.AlternateGreetings...) {
			if g = c.Substitute(g, ""); g != "" {
				greetings = append(greetings, g)
			}
		}
		return json.Marshal(map[string]any{"system": c.SystemPrompt(), "greetings": greetings, "post_history": c.PostHistoryText()})
	})
}

// wick_sha256 returns the hex sha256 of its input.
//
//go:wasmexport wick_sha256
func wickSHA256(n uint32) int32 {
	return tool("sha256", n, func(data []byte) ([]byte, error) {
		sum := sha256.Sum256(data)
		return []byte(hex.EncodeToString(sum[:])), nil
	})
}
