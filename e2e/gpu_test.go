package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// sendAsIs types msg into the page and sends it with the page's settings
// as they are (a user who never opened the settings), then waits for the
// turn to end: a reply, or the error it shows.
func sendAsIs(t testing.TB, b *browser, msg string) {
	t.Helper()
	js, _ := json.Marshal(msg)
	b.do(t, 10*time.Second, "send a message", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		window.wick.lastReply = null;
		document.getElementById('input').value = %s;
		document.getElementById('composer').requestSubmit();
	})()`, js)))
}

// TestSampledReplyOnWebGPU chats at the page's default settings (sampling:
// temperature 0.8, top-p 0.95) with WebGPU chosen by name, as a new user
// would, on the browser tier of kernels (packed dot products, subgroups of
// 4 on SwiftShader); then forces a real WebGPU validation error into a turn and checks
// that the turn fails in one plain sentence, that the user's message stays
// in the chat, and that sending it again replies on the GPU.
func TestSampledReplyOnWebGPU(t *testing.T) {
	s := startSite(t, "")
	b := newBrowser(t, true)
	openPage(t, b, s.URL+"/?backend=webgpu")
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "webgpu") {
		t.Fatalf("the page loaded the model on %q, want webgpu", got)
	} else if !strings.Contains(got, "dot4+subgroups kernels") {
		// Chromium's SwiftShader offers subgroups (of 4 invocations, the
		// smallest WebGPU allows), subgroup_id and the packed dot product:
		// the page runs the browser tier of kernels there, so this test
		// checks that tier under Chrome's compiler at subgroup size 4.
		t.Fatalf("the page runs %q, want the dot4+subgroups kernels", got)
	}
	if temp := eval[float64](t, b, `Number(document.getElementById('temperature').value)`); temp != 0.8 {
		t.Fatalf("the page's default temperature is %v, want 0.8 (this test is about the defaults)", temp)
	}
	// Short replies: SwiftShader is slow.
	js(t, b, "shorten replies", `document.getElementById('max-tokens').value = 8; document.getElementById('max-tokens').dispatchEvent(new Event('change'));`)

	sendAsIs(t, b, "Good evening! Is the bread ready?")
	r := waitReply(t, b)
	if len(r.Reply.Tokens) == 0 || r.Reply.Finish == "" {
		t.Fatalf("a sampled reply on WebGPU: %+v", r.Reply)
	}
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "webgpu") {
		t.Fatalf("after a sampled reply the page runs on %q, want webgpu", got)
	}

	// A real WebGPU validation error in the next step.
	js(t, b, "inject a GPU fault", `await window.wick.fault('validation')`)
	before := userMessages(t, b)
	sendAsIs(t, b, "Then I will take two loaves.")
	b.do(t, 150*time.Second, "wait for the failed turn",
		chromedp.Poll[chromedp.Void](`!document.getElementById('error').hidden && document.getElementById('error').textContent !== '' && !document.getElementById('send').disabled`,
			chromedp.WithPollingTimeout(150*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	head := eval[string](t, b, `document.getElementById('error').firstChild.textContent`)
	if strings.Contains(head, "\n") || len(head) > 250 {
		t.Errorf("the error is not one plain line: %q", head)
	}
	if n := eval[int](t, b, `document.querySelectorAll('#error details').length`); n != 1 {
		t.Errorf("the WebGPU diagnostics are not collapsed under Details (%d details elements)", n)
	}
	if got := eval[string](t, b, `document.getElementById('input').value`); got != "" {
		t.Errorf("the message went back into the input box: %q", got)
	}
	if got := eval[string](t, b, `[...document.querySelectorAll('#messages .msg.user.failed .text')].map((e) => e.textContent).join('|')`); got != "Then I will take two loaves." {
		t.Errorf("the unsent message is not shown in the chat: %q", got)
	}
	if n := userMessages(t, b); n != before+1 {
		t.Errorf("%d user messages shown, want %d (the unsent one too)", n, before+1)
	}

	// Send again: the turn runs on the GPU, and the message is now part of
	// the conversation, once.
	b.do(t, 10*time.Second, "send again", chromedp.Evaluate[chromedp.Void](`window.wick.lastReply = null; document.querySelector('#messages .msg.user.failed .retry').click()`))
	r = waitReply(t, b)
	if len(r.Reply.Tokens) == 0 {
		t.Fatalf("the turn after a GPU error: %+v", r.Reply)
	}
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "webgpu") {
		t.Fatalf("after a GPU error the page runs on %q, want webgpu", got)
	}
	if n := eval[int](t, b, `document.querySelectorAll('#messages .msg.user.failed').length`); n != 0 {
		t.Errorf("%d messages still marked unsent after a successful turn", n)
	}
	if n := userMessages(t, b); n != before+1 {
		t.Errorf("%d user messages after sending again, want %d", n, before+1)
	}
	screenshot(t, b, "sampled-webgpu-after-error.png")
}
