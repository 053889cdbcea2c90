package chat

import (
	"regexp"
	"strings"
)

// Card is a character card: who the model plays in a conversation, and who
// the user is. Only Name, Persona and Greeting are needed; the other fields
// come from the cards people share (see ParseCard) or from the page.
type Card struct {
	Name     string // what the character is called
	Persona  string // who the character is and how they talk, in prose (a shared card's description)
	Greeting string // the character's opening line; empty: the user speaks first

	Personality string // a short summary of the character's temperament
	Scenario    string // the circumstances of the conversation
	// Examples is example dialogue, in blocks that each start with <START>
	// (the convention of shared cards); "{{user}}:" and "{{char}}:" name the
	// speakers.
	Examples string
	// Instructions replaces the default opening of the system prompt (a
	// shared card's system_prompt); {{original}} in it stands for the default.
	Instructions string
	// PostHistory is what a shared card wants placed after the conversation
	// (post_history_instructions), substituted by PostHistoryText: a session
	// puts it between the history and each reply (engine.Session's
	// SetPostHistory), so the last reply's KV is computed again every turn.
	PostHistory string

	UserName    string // what the user is called ({{user}}); empty: "User"
	UserPersona string // who the user is, in prose
}

// userName is the name {{user}} stands for.
func (c Card) userName() string {
	if n := strings.TrimSpace(c.UserName); n != "" {
		return n
	}
	return "User"
}

// charName is the name {{char}} stands for.
func (c Card) charName() string {
	if n := strings.TrimSpace(c.Name); n != "" {
		return n
	}
	return "the character"
}

// macros are the placeholders of shared cards, matched without regard to
// case as the tools that write them do; <USER> and <BOT> are the older
// spellings of {{user}} and {{char}}.
var macros = regexp.MustCompile(`(?i)\{\{(char|user|original)\}\}|<(user|bot)>`)

// Substitute replaces {{char}} and {{user}} (and <BOT>, <USER>) in s by the
// character's and the user's names, and {{original}} by original.
func (c Card) Substitute(s, original string) string {
	if !strings.ContainsAny(s, "{<") {
		return s
	}
	return macros.ReplaceAllStringFunc(s, func(m string) string {
		switch strings.ToLower(strings.Trim(m, "{}<>")) {
		case "char", "bot":
			return c.charName()
		case "user":
			return c.userName()
		default:
			return original
		}
	})
}

// defaultOpening is the system prompt of a card with only a name and a
// persona: exactly
//
//	You are {Name}. {Persona}
//	Stay in character as {Name}: reply only as {Name} would, and never write the user's lines.
//
// with Name and Persona trimmed of surrounding white space. When Persona is
// empty the first line ends after "You are {Name}."; when Name is empty it
// reads "the character".
func (c Card) defaultOpening() string {
	name := c.charName()
	var b strings.Builder
	b.WriteString("You are " + name + ".")
	if persona := strings.TrimSpace(c.Substitute(c.Persona, "")); persona != "" {
		b.WriteString(" " + persona)
	}
	b.WriteString("\nStay in character as " + name + ": reply only as " + name + " would, and never write the user's lines.")
	return b.String()
}

// SystemPrompt returns the card's system prompt. This function is the one
// place its wording lives. In order:
//
//  1. the opening: the default (defaultOpening: the name, the persona and
//     the instruction to stay in character), or Instructions where the card
//     has them ({{original}} in them stands for the default); the persona
//     follows Instructions that do not include the default;
//  2. "{Name}'s personality: {Personality}";
//  3. "Scenario: {Scenario}";
//  4. "About {UserName}: {UserPersona}";
//  5. "Example dialogue:", then each block of Examples (split at <START>,
//     trimmed, empty ones left out), separated by blank lines.
//
// Parts 2 to 5 are left out when empty, each on its own line; {{char}} and
// {{user}} are substituted everywhere. A card with only Name, Persona and
// Greeting gives exactly the default opening, as it always has, so chats
// saved with such a card keep their KV.
func (c Card) SystemPrompt() string {
	opening := c.defaultOpening()
	var b strings.Builder
	if ins := strings.TrimSpace(c.Instructions); ins != "" {
		b.WriteString(c.Substitute(ins, opening))
		if !strings.Contains(strings.ToLower(ins), "{{original}}") {
			if persona := strings.TrimSpace(c.Substitute(c.Persona, "")); persona != "" {
				b.WriteString("\n" + persona)
			}
		}
	} else {
		b.WriteString(opening)
	}
	part := func(label, text string) {
		if text = strings.TrimSpace(c.Substitute(text, "")); text != "" {
			b.WriteString("\n" + label + text)
		}
	}
	part(c.charName()+"'s personality: ", c.Personality)
	part("Scenario: ", c.Scenario)
	part("About "+c.userName()+": ", c.UserPersona)
	if blocks := c.ExampleBlocks(); len(blocks) > 0 {
		b.WriteString("\nExample dialogue:")
		for i, blk := range blocks {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString("\n" + blk)
		}
	}
	return b.String()
}

// PostHistoryText returns the card's post-history instructions, trimmed
// and substituted: what stands after the conversation, before each reply.
func (c Card) PostHistoryText() string {
	return strings.TrimSpace(c.Substitute(c.PostHistory, ""))
}

// startMarker separates example dialogues in shared cards.
var startMarker = regexp.MustCompile(`(?i)<START>`)

// ExampleBlocks returns Examples split at <START>, each block trimmed and
// substituted; empty blocks are left out.
func (c Card) ExampleBlocks() []string {
	var out []string
	for _, blk := range startMarker.Split(c.Examples, -1) {
		if blk = strings.TrimSpace(c.Substitute(blk, "")); blk != "" {
			out = append(out, blk)
		}
	}
	return out
}

// Messages returns the start of a conversation with the character: the system
// prompt, then the greeting (substituted) as the character's first message if
// there is one. These tokens are the same for every conversation with the
// card, so their KV can be computed once and shared by all of them.
func (c Card) Messages() []Message {
	msgs := []Message{{Role: System, Content: c.SystemPrompt()}}
	if g := c.Substitute(c.Greeting, ""); g != "" {
		msgs = append(msgs, Message{Role: Assistant, Content: g})
	}
	return msgs
}

// DefaultCard is the character a chat starts with when none is chosen: the
// chat page's first character (web/store.js) and `wick chat`'s.
var DefaultCard = Card{
	Name:     "Maren",
	Persona:  "A baker who climbs the lighthouse every evening to watch the boats come in.",
	Greeting: "You are late. The bread is still warm, sit down.",
}
