package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/server"
)

// openPage navigates b to url and waits until the model is ready.
func openPage(t testing.TB, b *browser, url string) {
	t.Helper()
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(url))
	b.waitState(t, "ready", 120*time.Second)
}

// js runs a statement (or an async function body, awaited) in the page.
func js(t testing.TB, b *browser, what, body string) {
	t.Helper()
	b.do(t, 30*time.Second, what, chromedp.Evaluate[chromedp.Void](`(async () => { `+body+` })()`, chromedp.EvalAwaitPromise))
}

// screenshot writes the page as it looks now to the artifact name.
func screenshot(t testing.TB, b *browser, name string) {
	t.Helper()
	shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil || !isPNG(shot) {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s", writeArtifact(t, name, shot))
}

// layout is what the page's geometry looks like at one viewport size.
type layout struct {
	Width, Height int     // the viewport
	ScrollWidth   int     // the document's: more than Width means a horizontal scroll
	ChatWidth     float64 // the message list's
	Outside       []string
	DrawerOpen    bool
	SideLeft      float64
	SideRight     float64
}

// measure reports the page's layout; every button that is shown (not in
// a closed drawer, not hidden) must lie inside the viewport.
func measure(t testing.TB, b *browser) layout {
	raw := eval[string](t, b, `JSON.stringify((() => {
		const side = document.getElementById('side').getBoundingClientRect();
		const drawerOpen = document.body.classList.contains('drawer-open');
		const narrow = innerWidth <= 700;
		const outside = [];
		for (const el of document.querySelectorAll('button, select, input:not([type=file]), textarea')) {
			const r = el.getBoundingClientRect();
			if (r.width === 0 && r.height === 0) continue; // not shown
			if (el.closest('dialog') && !el.closest('dialog').open) continue;
			if (narrow && !drawerOpen && el.closest('#side')) continue; // in the closed drawer
			if (narrow && drawerOpen && !el.closest('#side')) continue; // under the open drawer
			if (r.left < -0.5 || r.top < -0.5 || r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5) {
				outside.push((el.id || el.className || el.tagName) + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom].map(Math.round)));
			}
		}
		return {Width: innerWidth, Height: innerHeight, ScrollWidth: document.documentElement.scrollWidth,
			ChatWidth: document.getElementById('messages').getBoundingClientRect().width,
			Outside: outside, DrawerOpen: drawerOpen, SideLeft: side.left, SideRight: side.right};
	})())`)
	var l layout
	if err := json.Unmarshal([]byte(raw), &l); err != nil {
		t.Fatalf("layout %s: %v", raw, err)
	}
	return l
}

func (l layout) check(t testing.TB, what string) {
	t.Helper()
	if l.ScrollWidth > l.Width {
		t.Errorf("%s: the page is %d px wide in a %d px viewport: it scrolls sideways", what, l.ScrollWidth, l.Width)
	}
	if l.ChatWidth < 300 {
		t.Errorf("%s: the chat column is %.0f px wide, want at least 300", what, l.ChatWidth)
	}
	if len(l.Outside) > 0 {
		t.Errorf("%s: controls outside the %dx%d viewport: %s", what, l.Width, l.Height, strings.Join(l.Outside, "; "))
	}
}

// TestLayoutAndFallbackAdapter opens the page where WebGPU is Chromium's
// software adapter (SwiftShader): the page must run on the CPU, saying so
// in one line and offering WebGPU anyway. It then checks the layout on a
// phone (390x844: no sideways scroll, a chat column of at least 300 px,
// every control inside the viewport, a drawer that opens and closes) and
// on a desktop (1280x900), and keeps screenshots of both.
func TestLayoutAndFallbackAdapter(t *testing.T) {
	b := newBrowser(t, true)
	s := startSite(t, "")
	b.do(t, 10*time.Second, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateTouch))
	openPage(t, b, s.URL+"/")
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "cpu") {
		t.Fatalf("on a software WebGPU adapter the page chose %q, want the CPU", got)
	}
	text := eval[string](t, b, `document.getElementById('notice').hidden ? '' : document.getElementById('notice-text').textContent`)
	if !strings.Contains(text, "software") || !strings.Contains(text, "CPU") || strings.Count(text, ". ") > 1 {
		t.Errorf("the notice is %q, want one line saying WebGPU is software here and the CPU is used", text)
	}
	if hidden := eval[bool](t, b, `document.getElementById('use-gpu').hidden`); hidden {
		t.Errorf("the page does not offer WebGPU anyway")
	}
	if focused := eval[string](t, b, `document.activeElement && document.activeElement.id`); focused != "input" {
		t.Errorf("after loading, focus is on %q, want the message box", focused)
	}
	r := send(t, b, "Hello! Who are you?")
	if focused := eval[string](t, b, `document.activeElement && document.activeElement.id`); focused != "input" {
		t.Errorf("after a reply, focus is on %q, want the message box", focused)
	}
	t.Logf("cpu reply on the phone page: %q", r.Reply.Text)

	measure(t, b).check(t, "phone")
	screenshot(t, b, "ux-phone.png")
	js(t, b, "open the drawer", `document.getElementById('menu').click()`)
	time.Sleep(400 * time.Millisecond) // the drawer slides in
	l := measure(t, b)
	if !l.DrawerOpen || l.SideLeft < -0.5 || l.SideRight > float64(l.Width) {
		t.Errorf("the open drawer spans %.0f..%.0f px of %d", l.SideLeft, l.SideRight, l.Width)
	}
	l.ChatWidth = 300 // the chat is under the drawer now
	l.check(t, "phone, drawer open")
	screenshot(t, b, "ux-phone-drawer.png")
	js(t, b, "close the drawer", `document.getElementById('backdrop').click()`)
	time.Sleep(400 * time.Millisecond)
	if l = measure(t, b); l.DrawerOpen || l.SideRight > 0.5 {
		t.Errorf("the closed drawer still spans %.0f..%.0f px", l.SideLeft, l.SideRight)
	}

	b.do(t, 10*time.Second, "desktop size", chromedp.EmulateViewport(1280, 900))
	time.Sleep(300 * time.Millisecond)
	l = measure(t, b)
	l.check(t, "desktop")
	if l.SideLeft != 0 || l.SideRight < 200 {
		t.Errorf("on a desktop the sidebar spans %.0f..%.0f px, want it shown", l.SideLeft, l.SideRight)
	}
	screenshot(t, b, "ux-desktop.png")

	// WebGPU by name: the page then uses the software adapter.
	js(t, b, "choose WebGPU", `window.wick.state = 'switching'; document.getElementById('use-gpu').click()`)
	b.waitState(t, "ready", 120*time.Second)
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "webgpu") {
		t.Fatalf("after choosing WebGPU the page runs on %q", got)
	}
}

// pageMessage is a message as the page keeps it (web/store.js).
type pageMessage struct {
	Role   string  `json:"role"`
	Text   string  `json:"text"`
	IDs    []int32 `json:"ids"`
	IDsOf  string  `json:"idsOf"`
	Swipes []struct {
		Text string `json:"text"`
	} `json:"swipes"`
	Swipe int `json:"swipe"`
}

// pageChat is the open chat as the page keeps it.
type pageChat struct {
	ID       string        `json:"id"`
	Title    string        `json:"title"`
	Messages []pageMessage `json:"messages"`
	Key      string        `json:"key"` // the loaded model's, for ids
}

func openChatState(t testing.TB, b *browser) pageChat {
	t.Helper()
	raw := eval[string](t, b, `JSON.stringify({...window.wick.store.chat(window.wick.openChat), key: window.wick.loaded.key})`)
	var c pageChat
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatalf("chat %s: %v", raw, err)
	}
	return c
}

// conversation is the page's chat as engine messages: the card's system
// prompt, then the messages, a reply with the tokens it was generated as.
func (c pageChat) conversation(system string) []chat.Message {
	msgs := []chat.Message{{Role: chat.System, Content: system}}
	for _, m := range c.Messages {
		cm := chat.Message{Role: chat.User, Content: m.Text}
		if m.Role == "assistant" {
			cm.Role = chat.Assistant
			if m.IDs != nil && m.IDsOf == c.Key {
				cm.Tokens = m.IDs
			}
		}
		msgs = append(msgs, cm)
	}
	return msgs
}

// nativeReplyTo is the native engine's greedy reply to text after msgs,
// with post-history instructions post (a card's) before it.
func nativeReplyTo(t testing.TB, msgs []chat.Message, post, text string) nativeReply {
	t.Helper()
	m, err := engine.Load(modelDir, engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatalf("native engine: %v", err)
	}
	defer m.Close()
	s, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetHistory(msgs); err != nil {
		t.Fatalf("native history: %v", err)
	}
	s.SetPostHistory(post)
	r, err := s.Send(context.Background(), text, engine.GenParams{MaxTokens: maxTokens}, nil)
	if err != nil {
		t.Fatalf("native send: %v", err)
	}
	return nativeReply{Tokens: r.Tokens, Prompt: r.PromptTokens, Cached: r.CachedTokens}
}

// msgButton clicks the button of class cls under message i.
func msgButton(t testing.TB, b *browser, i int, cls string) {
	t.Helper()
	js(t, b, "click "+cls, fmt.Sprintf(`const m = document.querySelector('#messages .msg[data-index="%d"]');
		if (!m) throw new Error('no message %d');
		const btn = m.querySelector('.%s');
		if (!btn) throw new Error('message %d has no %s button');
		btn.click();`, i, i, cls, i, cls))
}

func shownTexts(t testing.TB, b *browser) []string {
	return eval[[]string](t, b, `[...document.querySelectorAll('#messages .msg .text')].map((e) => e.textContent)`)
}

// TestMessageActions works the actions of messages and chats on the CPU:
// regenerate keeps the old reply as a swipe and gives another text at
// temperature 1; swipes switch; an older message is edited and another
// deleted (with undo); the next reply is then the native engine's for the
// changed conversation. The chat is renamed, exported as SillyTavern JSONL,
// imported again, and both survive a reload.
func TestMessageActions(t *testing.T) {
	b := newBrowser(t, false)
	s := startSite(t, "")
	openPage(t, b, s.URL+"/?backend=cpu")
	send(t, b, "Hello.")
	r2 := send(t, b, "What do you bake?")

	// Regenerate at temperature 1: a second swipe, with another text.
	js(t, b, "temperature 1", `document.getElementById('temperature').value = 1`)
	r3 := click(t, b, "regen")
	if r3.Reply.Text == r2.Reply.Text {
		t.Fatalf("regenerate at temperature 1 gave the same text %q", r3.Reply.Text)
	}
	c := openChatState(t, b)
	last := len(c.Messages) - 1
	if n := len(c.Messages[last].Swipes); n != 2 || c.Messages[last].Swipe != 1 {
		t.Fatalf("after regenerate the last message has %d swipes, showing %d; want 2, the second", n, c.Messages[last].Swipe)
	}
	msgButton(t, b, last, "swipe-prev")
	if got := shownTexts(t, b)[last]; got != r2.Reply.Text {
		t.Fatalf("the previous swipe shows %q, want the first reply %q", got, r2.Reply.Text)
	}
	if got := eval[string](t, b, `document.querySelector('#messages .msg:last-child .swipe-count').textContent`); got != "1/2" {
		t.Errorf("swipe count %q, want 1/2", got)
	}

	// Edit the first user message, delete the first reply (undo once).
	msgButton(t, b, 1, "edit-msg")
	js(t, b, "edit", `document.querySelector('#messages textarea.editor').value = 'Good evening.'; document.querySelector('#messages .save-edit').click()`)
	if got := shownTexts(t, b)[1]; got != "Good evening." {
		t.Fatalf("the edited message shows %q", got)
	}
	before := len(shownTexts(t, b))
	msgButton(t, b, 2, "delete-msg")
	if n := len(shownTexts(t, b)); n != before-1 {
		t.Fatalf("after delete %d messages, want %d", n, before-1)
	}
	js(t, b, "undo", `document.getElementById('toast-undo').click()`)
	if n := len(shownTexts(t, b)); n != before {
		t.Fatalf("after undo %d messages, want %d", n, before)
	}
	msgButton(t, b, 2, "delete-msg")

	// The next reply continues the changed conversation exactly.
	c = openChatState(t, b)
	want := nativeReplyTo(t, c.conversation(card.SystemPrompt()), "", "Tell me more.")
	r := send(t, b, "Tell me more.")
	checkTurn(t, "the turn after edits", r, want, false)

	// Rename, export, import.
	js(t, b, "rename", `document.querySelector('#chats li.selected .rename-btn').click();
		const in_ = document.querySelector('#chats input.rename');
		in_.value = 'Bakery talk';
		in_.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));`)
	if got := eval[string](t, b, `document.querySelector('#chats li.selected .label').textContent`); got != "Bakery talk" {
		t.Fatalf("the renamed chat shows %q", got)
	}
	c = openChatState(t, b)
	text := eval[string](t, b, `window.wick.exportChat(window.wick.openChat)`)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 1+len(c.Messages) {
		t.Fatalf("the export has %d lines for %d messages:\n%s", len(lines), len(c.Messages), text)
	}
	var header struct {
		Character string `json:"character_name"`
		User      string `json:"user_name"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &header); err != nil || header.Character != "Maren" || header.User == "" {
		t.Fatalf("export header %s: %v", lines[0], err)
	}
	var swiped struct {
		Swipes  []string `json:"swipes"`
		SwipeID int      `json:"swipe_id"`
		IsUser  bool     `json:"is_user"`
		Mes     string   `json:"mes"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-3]), &swiped); err != nil || len(swiped.Swipes) != 2 || swiped.SwipeID != 0 || swiped.Mes != r2.Reply.Text {
		t.Fatalf("the swiped message exported as %s (%v)", lines[len(lines)-3], err)
	}
	quoted, _ := json.Marshal(text)
	id := eval[string](t, b, `window.wick.importChat(`+string(quoted)+`)`)
	imported := openChatState(t, b)
	if imported.ID != id || imported.ID == c.ID || imported.Title != "Bakery talk" || len(imported.Messages) != len(c.Messages) {
		t.Fatalf("imported chat %+v, want a new chat like %+v", imported, c)
	}
	for i, m := range imported.Messages {
		if m.Role != c.Messages[i].Role || m.Text != c.Messages[i].Text || len(m.Swipes) != len(c.Messages[i].Swipes) {
			t.Fatalf("imported message %d is %+v, exported %+v", i, m, c.Messages[i])
		}
	}

	// Both chats come back after a reload, the imported one open.
	reload(t, b)
	if got := openChatState(t, b); got.ID != id || len(got.Messages) != len(c.Messages) {
		t.Fatalf("after a reload the open chat is %s with %d messages", got.ID, len(got.Messages))
	}
	if n := eval[int](t, b, `document.querySelectorAll('#chats li').length`); n != 2 {
		t.Fatalf("after a reload the character has %d chats, want 2", n)
	}
}

// cardData is a shared card's data object as generic JSON, for comparing
// cards whatever their key order.
func cardData(t testing.TB, c *chat.SharedCard) any {
	t.Helper()
	data, err := c.MarshalSpec(chat.SpecV2)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	d := v["data"].(map[string]any)
	delete(d, "group_only_greetings") // V3 export adds it where missing
	return d
}

// TestCharacterCards imports shared cards (V2 and V3, JSON and PNG; one
// with a character_book; one through the file picker), checks the
// character and its greetings, exports each as V2 JSON and V3 PNG and reads
// the files back in Go (every field, the book and unknown fields kept), and
// chats with one: the reply is the native engine's for the card's
// conversation, so the page's system prompt is engine/chat's.
func TestCharacterCards(t *testing.T) {
	b := newBrowser(t, false)
	s := startSite(t, "")
	openPage(t, b, s.URL+"/?backend=cpu")
	const dir = "../engine/chat/testdata/cards/"

	// The file picker, as a person would.
	b.do(t, 30*time.Second, "pick a card file", chromedp.SetUploadFiles(`#import-file`, []string{mustAbs(t, dir+"v2-book.json")}))
	b.do(t, 30*time.Second, "wait for the character", chromedp.Poll[chromedp.Void](`document.querySelector('#characters li.selected .label')?.textContent === 'Captain Ives'`,
		chromedp.WithPollingTimeout(30*time.Second)))
	greeting := eval[[]string](t, b, `(() => { const m = window.wick.store.chat(window.wick.openChat).messages[0]; return [m.text, String(m.swipes.length)]; })()`)
	if greeting[0] != "*slaps the rail* Steady, old girl. Welcome aboard, User." || greeting[1] != "3" {
		t.Fatalf("the card's chat opens with %q (%s swipes), want the greeting with {{user}} substituted and 3 swipes", greeting[0], greeting[1])
	}
	if em := eval[string](t, b, `document.querySelector('#messages .msg .text em')?.textContent || ''`); em != "*slaps the rail*" {
		t.Errorf("the action in the greeting is shown as %q, want it in italics", em)
	}

	for _, file := range []string{"v2-book.json", "v2.png", "v3.json", "v3.png"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(dir + file)
			if err != nil {
				t.Fatal(err)
			}
			orig, err := chat.ParseCard(data)
			if err != nil {
				t.Fatal(err)
			}
			id := eval[string](t, b, `window.wick.importCard(Uint8Array.from(atob(`+jsString(base64.StdEncoding.EncodeToString(data))+`), (c) => c.charCodeAt(0)))`)
			if got := eval[string](t, b, `document.querySelector('#characters li.selected .label').textContent`); got != orig.Name {
				t.Fatalf("the imported character is called %q, want %q", got, orig.Name)
			}
			for _, format := range []string{"json", "png"} {
				b64 := eval[string](t, b, fmt.Sprintf(`window.wick.exportCard(%s, %q).then((b) => { let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); })`, jsString(id), format))
				out, err := base64.StdEncoding.DecodeString(b64)
				if err != nil {
					t.Fatal(err)
				}
				back, err := chat.ParseCard(out)
				if err != nil {
					t.Fatalf("the %s export does not read back: %v", format, err)
				}
				if want := map[string]string{"json": chat.SpecV2, "png": chat.SpecV3}[format]; back.Spec != want {
					t.Errorf("the %s export is spec %q, want %q", format, back.Spec, want)
				}
				if got, want := cardData(t, back), cardData(t, orig); !reflect.DeepEqual(got, want) {
					g, _ := json.Marshal(got)
					w, _ := json.Marshal(want)
					t.Fatalf("the %s export changed the card:\n got %s\nwant %s", format, g, w)
				}
				if format == "png" && strings.HasSuffix(file, ".png") && !bytes.Contains(out, []byte("IDAT")) {
					t.Errorf("the PNG export lost the card's picture")
				}
			}
		})
	}

	// Chat with Captain Ives as Tom: the prompt is engine/chat's.
	data, _ := os.ReadFile(dir + "v2-book.json")
	sc, _ := chat.ParseCard(data)
	js(t, b, "be Tom", `const n = document.getElementById('user-name'); n.value = 'Tom'; n.dispatchEvent(new Event('change'));
		const ch = window.wick.store.characters.find((c) => c.name === 'Captain Ives');
		document.querySelector('#characters li[data-id="' + ch.id + '"]').click();`)
	js(t, b, "a new chat", `await new Promise((r) => setTimeout(r, 300)); document.getElementById('new-chat').click(); await new Promise((r) => setTimeout(r, 300));`)
	c := openChatState(t, b)
	ives := sc.Card("Tom", "")
	if len(c.Messages) != 1 || c.Messages[0].Text != ives.Messages()[1].Content {
		t.Fatalf("the new chat as Tom opens with %+v, want %q", c.Messages, ives.Messages()[1].Content)
	}
	// The card's post_history_instructions stand before the reply.
	want := nativeReplyTo(t, c.conversation(ives.SystemPrompt()), ives.PostHistoryText(), "Is she safe?")
	if plain := nativeReplyTo(t, c.conversation(ives.SystemPrompt()), "", "Is she safe?"); plain.Prompt == want.Prompt {
		t.Fatalf("the card's instructions (%q) add nothing to the native prompt", ives.PostHistoryText())
	}
	r := send(t, b, "Is she safe?")
	checkTurn(t, "a turn with a shared card", r, want, true)
}

func mustAbs(t testing.TB, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestPlainHTTPOrigin opens the page at a name that maps to 127.0.0.1, over
// plain http: not a secure context, so no WebGPU, Cache API, OPFS or
// crypto.subtle. The page must say why and chat on the CPU, keep the model
// and the chat in IndexedDB (checked by the module's sha256), copy without
// the Clipboard API, and restore the chat after a reload.
func TestPlainHTTPOrigin(t *testing.T) {
	b := launchBrowser(t, true, t.TempDir(), chromedp.Flag("host-resolver-rules", "MAP wick.test 127.0.0.1"))
	s := startSiteConfig(t, "", server.Config{Models: []string{modelDir}, AllowHosts: []string{"wick.test"}}, nil)
	url := strings.Replace(s.URL, "127.0.0.1", "wick.test", 1) + "/"
	openPage(t, b, url)
	if secure := eval[bool](t, b, `window.isSecureContext`); secure {
		t.Fatalf("%s is a secure context; the test needs one that is not", url)
	}
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "cpu") {
		t.Fatalf("backend %q, want cpu", got)
	}
	text := eval[string](t, b, `document.getElementById('notice-text').textContent`)
	if !strings.Contains(text, "plain http") || !strings.Contains(text, "https") || strings.Contains(text, "does not offer WebGPU") {
		t.Errorf("the notice is %q: want it to say the page is not secure over plain http, and what to do", text)
	}
	files := eval[[]string](t, b, `import('/models.js').then((m) => m.storedFiles('cai-tiny'))`)
	if !slices.Contains(files, ".complete") {
		t.Fatalf("the model's files are not all stored: %v", files)
	}
	steps := []step{{"send", "Hello there."}, {"send", "What do you bake?"}}
	want := nativeChat(t, steps...)
	r := send(t, b, steps[0].text)
	checkTurn(t, "plain http turn 1", r, want[0], true)
	// A real click (copying needs a user's gesture) on the reply's Copy.
	b.do(t, 10*time.Second, "copy", chromedp.Click(`#messages .msg[data-index="2"] .copy`))
	if got := eval[string](t, b, `document.querySelector('#messages .msg[data-index="2"] .copy').textContent`); got != "Copied" {
		t.Errorf("copying without the Clipboard API: the button says %q", got)
	}
	rs := reload(t, b)
	if rs.Source != "saved" || rs.KVTokens != want[1].Cached {
		t.Fatalf("after a reload over plain http: %+v, want the save with %d tokens of KV", rs, want[1].Cached)
	}
	r = send(t, b, steps[1].text)
	checkTurn(t, "plain http turn 2 after a reload", r, want[1], true)
}

// TestKillAfterReply kills the browser right after a reply and starts it
// again on the same profile: the chat must come back consistent, its save
// and its messages the same turn, and go on as the uninterrupted chat does
// without recomputing what it restored.
func TestKillAfterReply(t *testing.T) {
	profile := t.TempDir()
	s := startSite(t, "")
	steps := []step{{"send", "Hi there."}, {"send", "What do you bake?"}}
	want := nativeChat(t, steps...)

	b := launchBrowser(t, false, profile)
	openPage(t, b, s.URL+"/?backend=cpu")
	send(t, b, steps[0].text)
	proc := chromedp.FromContext(b.ctx).Browser.Process()
	if proc == nil {
		t.Fatal("no browser process to kill")
	}
	if err := proc.Kill(); err != nil {
		t.Fatalf("kill the browser: %v", err)
	}
	proc.Wait()

	b = launchBrowser(t, false, profile)
	openPage(t, b, s.URL+"/?backend=cpu")
	b.do(t, 60*time.Second, "wait for the chat's session",
		chromedp.Poll[chromedp.Void](`window.wick.lastRestore !== null`, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	raw := eval[string](t, b, `JSON.stringify(window.wick.lastRestore)`)
	var rs struct {
		restoreInfo
		Synced bool `json:"synced"`
	}
	if err := json.Unmarshal([]byte(raw), &rs); err != nil {
		t.Fatal(err)
	}
	c := openChatState(t, b)
	t.Logf("after the kill: %d messages; restore %s", len(c.Messages), raw)
	if len(c.Messages) != 3 {
		t.Fatalf("after the kill the chat has %d messages, want the greeting and the whole first turn (3)", len(c.Messages))
	}
	if rs.Source != "saved" || rs.Synced || rs.KVTokens != want[1].Cached {
		t.Fatalf("after the kill the save and the messages disagree: %s; want the save of the first turn, %d tokens, matching the messages", raw, want[1].Cached)
	}
	r := send(t, b, steps[1].text)
	checkTurn(t, "the turn after the kill", r, want[1], true)
}

// TestHTTPSSelfSigned serves the page over https with wick serve's
// self-signed certificate (-tls-self-signed) on every interface, and opens
// it at a non-loopback address in a Chromium that trusts the certificate's
// key (--ignore-certificate-errors-spki-list): a secure context away from
// localhost, where the page chats on WebGPU (chosen by name) with the
// native engine's replies.
func TestHTTPSSelfSigned(t *testing.T) {
	tlsCfg, names, spki, err := server.SelfSigned("0.0.0.0:0", net.InterfaceAddrs)
	if err != nil {
		t.Fatal(err)
	}
	s := startSiteConfig(t, "", server.Config{Models: []string{modelDir}, Addr: "0.0.0.0:0", CertNames: names}, tlsCfg)
	b := launchBrowser(t, true, t.TempDir(), chromedp.Flag("ignore-certificate-errors-spki-list", spki))
	steps := []step{{"send", "Hello! Who are you?"}}
	want := nativeChat(t, steps...)
	openPage(t, b, s.URL+"/?backend=webgpu")
	if secure := eval[bool](t, b, `window.isSecureContext`); !secure {
		t.Fatalf("%s is not a secure context", s.URL)
	}
	if got := eval[string](t, b, `window.wick.loaded.backend`); !strings.HasPrefix(got, "webgpu") {
		t.Fatalf("over https the page runs on %q, want webgpu", got)
	}
	r := send(t, b, steps[0].text)
	checkTurn(t, "https turn 1", r, want[0], true)
	t.Logf("https at %s (certificate for %v): chatted on WebGPU", s.URL, names)
}

// TestContinueAndProgress works Continue and the prefill's progress on the
// CPU: the page shows how far it has read the conversation ("Reading the
// conversation… N%", the engine's reports growing to the prompt's
// length); a reply cut at 4 tokens is continued for 6 more in place (the
// same message, its text grown), which gives the native engine's reply of
// 10; a reload restores the continued reply, and the next turn is the
// native engine's after it.
func TestContinueAndProgress(t *testing.T) {
	steps := []step{{"send", "Hello, what is your bakery like?"}, {"send", "Tell me more."}}
	want := nativeChat(t, steps...)
	if len(want[0].Tokens) != maxTokens {
		t.Fatalf("the native reply has %d tokens, the test needs %d", len(want[0].Tokens), maxTokens)
	}
	b := newBrowser(t, false)
	s := startSite(t, "")
	openPage(t, b, s.URL+"/?backend=cpu")
	js(t, b, "watch the status", `window.statusSeen = [];
		const st = document.getElementById('status');
		new MutationObserver(() => window.statusSeen.push(st.textContent)).observe(st, {childList: true, characterData: true, subtree: true});`)
	first := sendN(t, b, steps[0].text, 4)
	if !slices.Equal(first.Reply.Tokens, want[0].Tokens[:4]) || first.Reply.Finish != "length" {
		t.Fatalf("the cut reply is %v (%s), want %v", first.Reply.Tokens, first.Reply.Finish, want[0].Tokens[:4])
	}

	// Progress: reports that grow to the prompt's length, shown in words.
	progress := eval[[][2]int](t, b, `window.wick.progress`)
	seen := eval[[]string](t, b, `window.statusSeen.filter((s) => s.startsWith('Reading the conversation'))`)
	t.Logf("progress %v; shown %q", progress, seen)
	if len(progress) < 2 {
		t.Fatalf("%d progress reports for a prompt of %d tokens", len(progress), first.Reply.Prompt)
	}
	for i, p := range progress {
		if p[1] != first.Reply.Prompt || p[0] <= 0 || i > 0 && p[0] <= progress[i-1][0] {
			t.Fatalf("progress reports %v for a prompt of %d tokens", progress, first.Reply.Prompt)
		}
	}
	if last := progress[len(progress)-1]; last[0] != last[1] {
		t.Errorf("progress ended at %v", last)
	}
	if len(seen) == 0 || !strings.HasSuffix(seen[len(seen)-1], "100%") {
		t.Errorf("the status showed %q, want the reading's progress up to 100%%", seen)
	}

	// Continue the cut reply.
	last := len(openChatState(t, b).Messages) - 1
	js(t, b, "six more tokens", `window.wick.lastReply = null; document.getElementById('max-tokens').value = 6`)
	msgButton(t, b, last, "continue")
	r := waitReply(t, b)
	if !slices.Equal(r.Reply.Tokens, want[0].Tokens[4:]) || !slices.Equal(r.Streamed, want[0].Tokens[4:]) {
		t.Fatalf("continue gave %v (streamed %v), want %v", r.Reply.Tokens, r.Streamed, want[0].Tokens[4:])
	}
	if r.Reply.Prompt != 1 {
		t.Errorf("continue read %d tokens of the prompt again, want only the reply's last (1)", r.Reply.Prompt)
	}
	c := openChatState(t, b)
	m := c.Messages[len(c.Messages)-1]
	// (The cut reply may end inside a character, which the continuation
	// completes: its text is not always a prefix of the whole.)
	if len(c.Messages) != last+1 || !slices.Equal(m.IDs, want[0].Tokens) || len(m.Text) <= len(first.Reply.Text) {
		t.Fatalf("after continue: %d messages, the last %+v; want %d, the reply of %d grown from %q", len(c.Messages), m, last+1, maxTokens, first.Reply.Text)
	}
	if r.LastText != m.Text || len(m.Swipes) != 1 || m.Swipes[0].Text != m.Text || m.Swipe != 0 {
		t.Errorf("the page shows %q for the message %q (swipes %d)", r.LastText, m.Text, len(m.Swipes))
	}

	// A reload restores it, KV included; the next turn goes on from the
	// whole reply without reading it again.
	rs := reload(t, b)
	if got := shownTexts(t, b); got[len(got)-1] != m.Text {
		t.Fatalf("after a reload the reply shows %q, want %q", got[len(got)-1], m.Text)
	}
	if rs.Source != "saved" || rs.Replayed || rs.Refused != "" || rs.KVTokens != want[1].Cached {
		t.Fatalf("after a reload: %+v; want the save with %d tokens of KV", rs, want[1].Cached)
	}
	next := send(t, b, steps[1].text)
	checkTurn(t, "the turn after continue and a reload", next, want[1], true)
}

// TestPostHistoryOnSavedChat gives a character post-history instructions
// after a chat with it was saved (a save as every earlier version wrote
// it: no instructions in the prompt). The chat comes back from its save
// with all its KV, since the instructions do not change the history's
// tokens, and the next reply is the native engine's with the instructions
// before it, counts included. After a reload the instructions are kept;
// the turn then reads the conversation again: the last reply must be read
// without the instructions before it, and a restored local layer's ring
// holds too few positions to cut back to them (the native session, never
// reloaded, restores them from its prefix cache).
func TestPostHistoryOnSavedChat(t *testing.T) {
	const post = "Keep {{char}}'s replies short, {{user}}."
	steps := []string{"Hello.", "What do you bake?", "Anything sweet?"}
	m, err := engine.Load(modelDir, engine.Options{Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ns, err := m.NewSession("")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := ns.SetHistory(card.Messages()); err != nil {
		t.Fatal(err)
	}
	var want []nativeReply
	for i, text := range steps {
		if i == 1 {
			withPost := card
			withPost.PostHistory = post
			ns.SetPostHistory(withPost.PostHistoryText())
		}
		r, err := ns.Send(context.Background(), text, engine.GenParams{MaxTokens: maxTokens}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, nativeReply{Tokens: r.Tokens, Prompt: r.PromptTokens, Cached: r.CachedTokens})
	}

	b := newBrowser(t, false)
	s := startSite(t, "")
	openPage(t, b, s.URL+"/?backend=cpu")
	checkTurn(t, "turn 1, without instructions", send(t, b, steps[0]), want[0], true)
	js(t, b, "give the character instructions", `window.wick.lastRestore = null;
		document.querySelector('#characters li.selected button[title="Edit this character"]').click();
		document.getElementById('card-post').value = `+jsString(post)+`;
		document.getElementById('card-dialog').close('save');`)
	b.do(t, 60*time.Second, "wait for the chat's session",
		chromedp.Poll[chromedp.Void](`window.wick.lastRestore !== null`, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	raw := eval[string](t, b, `JSON.stringify(window.wick.lastRestore)`)
	var rs struct {
		restoreInfo
		Synced bool `json:"synced"`
	}
	if err := json.Unmarshal([]byte(raw), &rs); err != nil {
		t.Fatal(err)
	}
	if rs.Source != "saved" || rs.Synced || rs.Replayed || rs.KVTokens != want[1].Cached {
		t.Fatalf("the saved chat reopened as %s; want its save, all %d tokens of KV", raw, want[1].Cached)
	}
	checkTurn(t, "turn 2, with instructions", send(t, b, steps[1]), want[1], true)
	reload(t, b)
	r := send(t, b, steps[2])
	checkTurn(t, "turn 3, after a reload", r, want[2], false)
	if r.Reply.Prompt+r.Reply.Cached != want[2].Prompt+want[2].Cached {
		t.Errorf("turn 3 after a reload covers %d+%d tokens, the native engine's %d+%d", r.Reply.Prompt, r.Reply.Cached, want[2].Prompt, want[2].Cached)
	}
}
