package chat

import "strings"

// Card is a character card: who the model plays in a conversation.
type Card struct {
	Name     string // what the character is called
	Persona  string // who the character is and how they talk, in prose
	Greeting string // the character's opening line; empty: the user speaks first
}

// SystemPrompt returns the card's system prompt. This function is the one
// place its wording lives; it is exactly
//
//	You are {Name}. {Persona}
//	Stay in character as {Name}: reply only as {Name} would, and never write the user's lines.
//
// with Name and Persona trimmed of surrounding white space. When Persona is
// empty the first line ends after "You are {Name}."; when Name is empty it
// reads "the character".
func (c Card) SystemPrompt() string {
	name := strings.TrimSpace(c.Name)
	if name == "" {
		name = "the character"
	}
	var b strings.Builder
	b.WriteString("You are " + name + ".")
	if persona := strings.TrimSpace(c.Persona); persona != "" {
		b.WriteString(" " + persona)
	}
	b.WriteString("\nStay in character as " + name + ": reply only as " + name + " would, and never write the user's lines.")
	return b.String()
}

// Messages returns the start of a conversation with the character: the system
// prompt, then the greeting as the character's first message if there is one.
// These tokens are the same for every conversation with the card, so their KV
// can be computed once and shared by all of them.
func (c Card) Messages() []Message {
	msgs := []Message{{Role: System, Content: c.SystemPrompt()}}
	if c.Greeting != "" {
		msgs = append(msgs, Message{Role: Assistant, Content: c.Greeting})
	}
	return msgs
}
