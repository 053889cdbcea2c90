package server

import (
	"fmt"
	"net/http"
	"unicode"
)

// Behind a proxy that runs several wick servers, each conversation should
// go back to the server whose prefix cache holds its KV: there the next
// turn prefills only the new message. The proxy routes on a conversation
// key (deploy/haproxy/ hashes it consistently); the server itself only
// reads the key, checks it and echoes it, with its own name, so that an
// operator can see where each conversation went.

const (
	// ConversationHeader carries the conversation key a client sends, and
	// the key the server read, echoed on the reply.
	ConversationHeader = "X-Conversation-Id"
	// ServerHeader names the instance that answered (Config.ServerName).
	ServerHeader = "X-Wick-Server"
	// maxKeyBytes bounds a conversation key: a proxy hashes it and logs it.
	maxKeyBytes = 256
)

// conversationKey is the request's conversation key: the X-Conversation-Id
// header, else the OpenAI body's user field, else "" (then a proxy has no
// key to route on and spreads the request as it likes). A key too long or
// holding control characters is refused, naming where it came from.
func conversationKey(r *http.Request, req *chatRequest) (string, *apiError) {
	key, from := r.Header.Get(ConversationHeader), "header "+ConversationHeader
	if key == "" {
		key, from = req.User, "user"
	}
	if len(key) > maxKeyBytes {
		return "", invalid(paramOf(from), "", "the conversation key (%s) is %d bytes; the limit is %d", from, len(key), maxKeyBytes)
	}
	for _, c := range key {
		if unicode.IsControl(c) {
			return "", invalid(paramOf(from), "", "the conversation key (%s) holds the control character %U", from, c)
		}
	}
	return key, nil
}

// paramOf is the OpenAI param an error names: the body field, or none for a
// header.
func paramOf(from string) string {
	if from == "user" {
		return "user"
	}
	return ""
}

// DefaultServerName is what -server-name defaults to: the host name and the
// listen port, unique among the instances of a deployment.
func DefaultServerName(hostname func() (string, error), port string) string {
	h, err := hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return fmt.Sprintf("%s:%s", h, port)
}
