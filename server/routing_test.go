package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestConversationKey(t *testing.T) {
	_, hs := newAPIServer(t, Config{ServerName: "wick-a:8081"})
	long := strings.Repeat("k", maxKeyBytes+1)
	for _, tc := range []struct {
		name, header, user string
		status             int
		key                string // the echoed X-Conversation-Id
		errHas             string
	}{
		{name: "header", header: "conv-1", status: 200, key: "conv-1"},
		{name: "user field", user: "user-7", status: 200, key: "user-7"},
		{name: "header wins over user", header: "conv-2", user: "user-7", status: 200, key: "conv-2"},
		{name: "none", status: 200, key: ""},
		{name: "header too long", header: long, status: 400, errHas: "header X-Conversation-Id"},
		{name: "user too long", user: long, status: 400, errHas: "(user)"},
		{name: "user with control character", user: "a\x01b", status: 400, errHas: "U+0001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := request("cai-tiny", false, 2, msg{"role": "user", "content": "Hello"})
			if tc.user != "" {
				body["user"] = tc.user
			}
			data, _ := json.Marshal(body)
			req, _ := http.NewRequest("POST", hs.URL+"/v1/chat/completions", bytes.NewReader(data))
			req.Header.Set("Content-Type", "application/json")
			if tc.header != "" {
				req.Header.Set(ConversationHeader, tc.header)
			}
			resp, err := hs.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			out.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, out.Bytes())
			}
			if got := resp.Header.Get(ServerHeader); got != "wick-a:8081" {
				t.Errorf("%s %q, want wick-a:8081", ServerHeader, got)
			}
			if tc.status == 200 {
				if got := resp.Header.Get(ConversationHeader); got != tc.key {
					t.Errorf("echoed %s %q, want %q", ConversationHeader, got, tc.key)
				}
			} else if !strings.Contains(out.String(), tc.errHas) {
				t.Errorf("error %s does not name %q", out.Bytes(), tc.errHas)
			}
		})
	}
}

// Every API response names the instance, errors and the health check's
// /v1/models included; without a name there is no header.
func TestServerHeader(t *testing.T) {
	for _, name := range []string{"wick-b:9000", ""} {
		_, hs := newAPIServer(t, Config{ServerName: name})
		for _, path := range []string{"/v1/models", "/v1/nothing"} {
			resp, err := hs.Client().Get(hs.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got, ok := resp.Header[ServerHeader]; name == "" && ok || name != "" && (len(got) != 1 || got[0] != name) {
				t.Errorf("name %q, GET %s: %s %q", name, path, ServerHeader, got)
			}
		}
	}
}

func TestDefaultServerName(t *testing.T) {
	for _, tc := range []struct {
		host string
		err  error
		want string
	}{
		{"box1", nil, "box1:8080"},
		{"", nil, "localhost:8080"},
		{"x", errors.New("no host name"), "localhost:8080"},
	} {
		got := DefaultServerName(func() (string, error) { return tc.host, tc.err }, "8080")
		if got != tc.want {
			t.Errorf("host %q err %v: %q, want %q", tc.host, tc.err, got, tc.want)
		}
	}
}
