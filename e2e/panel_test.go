package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wick-run/wick/internal/badimport"
	"github.com/wick-run/wick/web"
)

// controlsLayout is the geometry of the controls in a part of the page
// (measureControls).
type controlsLayout struct {
	Width, Height int // the viewport
	SideLeft      float64
	SideRight     float64
	Outside       []string // controls not wholly inside the drawer and the viewport
	Small         []string // controls too small to tap
	Overlaps      []string // pairs of controls drawn over each other
	Overflows     []string // elements whose content is cut or scrolls sideways
}

// measureControls reports the layout of the controls in the part of the
// page that root selects. check (for a part of the open drawer, such as
// #model-box, the model panel) wants every control shown in it inside the
// drawer and the viewport, at least 24 px high and wide (a finger's
// target, WCAG 2.2's minimum), over no other, and every element holding
// its text without scrolling sideways.
func measureControls(t testing.TB, b *browser, root string) controlsLayout {
	t.Helper()
	raw := eval[string](t, b, `JSON.stringify(((root) => {
		const side = document.getElementById('side').getBoundingClientRect();
		const box = document.querySelector(root);
		const name = (el) => el.id || el.className || el.tagName;
		const shown = [...box.querySelectorAll('button, select, input:not([type=file]), progress')]
			.filter((el) => { const r = el.getBoundingClientRect(); return r.width > 0 || r.height > 0; });
		const out = { Width: innerWidth, Height: innerHeight, SideLeft: side.left, SideRight: side.right, Outside: [], Small: [], Overlaps: [], Overflows: [] };
		const rects = shown.map((el) => el.getBoundingClientRect());
		shown.forEach((el, i) => {
			const r = rects[i];
			if (r.left < Math.max(side.left, 0) - 0.5 || r.right > Math.min(side.right, innerWidth) + 0.5 || r.top < -0.5 || r.bottom > innerHeight + 0.5) {
				out.Outside.push(name(el) + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom].map(Math.round)));
			}
			if (el.tagName !== 'PROGRESS' && (r.width < 24 || r.height < 24)) out.Small.push(name(el) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
			for (let j = 0; j < i; j++) {
				const q = rects[j];
				if (r.left < q.right - 0.5 && q.left < r.right - 0.5 && r.top < q.bottom - 0.5 && q.top < r.bottom - 0.5) out.Overlaps.push(name(shown[j]) + ' and ' + name(el));
			}
		});
		for (const el of [box, ...box.querySelectorAll('*')]) {
			if (el.getBoundingClientRect().width === 0 || el.tagName === 'SELECT' || el.tagName === 'PROGRESS' || el.tagName === 'INPUT') continue;
			if (el.scrollWidth > el.clientWidth + 1) out.Overflows.push(name(el) + ' ' + el.scrollWidth + ' > ' + el.clientWidth);
		}
		return out;
	})(`+strconv.Quote(root)+`))`)
	var l controlsLayout
	if err := json.Unmarshal([]byte(raw), &l); err != nil {
		t.Fatalf("panel layout %s: %v", raw, err)
	}
	return l
}

func (l controlsLayout) check(t testing.TB, what string) {
	t.Helper()
	if l.SideLeft < -0.5 || l.SideRight > float64(l.Width)+0.5 {
		t.Errorf("%s: the open drawer spans %.0f..%.0f px of %d", what, l.SideLeft, l.SideRight, l.Width)
	}
	for _, bad := range []struct {
		what string
		list []string
	}{
		{"controls outside the drawer or the viewport", l.Outside},
		{"controls smaller than 24x24 px", l.Small},
		{"controls over each other", l.Overlaps},
		{"elements that cut or scroll their content sideways", l.Overflows},
	} {
		if len(bad.list) > 0 {
			t.Errorf("%s, %dx%d: %s: %s", what, l.Width, l.Height, bad.what, strings.Join(bad.list, "; "))
		}
	}
}

// TestModelPanelOnPhone checks the model panel on a small phone (360x740,
// the narrowest common Android screen) as the page shows it without a
// model server: its controls at rest and while an import runs (the
// progress bar and its line, Cancel import, a long model name), that the
// drawer's other controls and a message's actions are big enough to tap,
// and that an import's refusal is seen: the page closes the drawer, which
// would otherwise cover the error.
func TestModelPanelOnPhone(t *testing.T) {
	needConverter(t)
	hs := httptest.NewServer(http.FileServer(http.FS(web.Assets)))
	t.Cleanup(hs.Close)
	b := newBrowser(t, false)
	b.do(t, 10*time.Second, "small phone size", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile, chromedp.EmulateTouch))
	b.do(t, 30*time.Second, "open the page", chromedp.Navigate(hs.URL+"/?backend=cpu"),
		chromedp.Poll[chromedp.Void](`document.getElementById('status').textContent.includes('import one')`, chromedp.WithPollingTimeout(30*time.Second)))
	measure(t, b).check(t, "small phone")
	// The greeting's actions (Copy, Edit, ...) are tapped too.
	if small := measureControls(t, b, "#messages").Small; len(small) > 0 {
		t.Errorf("in the chat, controls smaller than 24x24 px: %s", strings.Join(small, "; "))
	}
	js(t, b, "open the drawer", `document.getElementById('menu').click()`)
	time.Sleep(400 * time.Millisecond) // the drawer slides in
	measureControls(t, b, "#model-box").check(t, "the model panel")
	// The rest of the drawer (characters, chats) may run below the fold;
	// its controls must still be big enough to tap.
	if small := measureControls(t, b, "#side").Small; len(small) > 0 {
		t.Errorf("in the drawer, controls smaller than 24x24 px: %s", strings.Join(small, "; "))
	}

	// The panel as an import shows it, with a long name in the list.
	js(t, b, "show the panel as an import runs", `
		const sel = document.getElementById('model-select');
		sel.add(new Option('Llama-3.2-1B-Instruct-converted-from-safetensors (in this browser)', 'long'));
		sel.value = 'long';
		document.getElementById('progress').hidden = false;
		document.getElementById('progress-text').textContent = 'Converting: 147 of 291 tensors, 1234.5 MB of 2471.9 MB';
		document.getElementById('import-model-cancel').hidden = false;`)
	measureControls(t, b, "#model-box").check(t, "the model panel during an import")
	screenshot(t, b, "ux-small-phone-model-panel.png")
	js(t, b, "end the shown import", `
		document.getElementById('model-select').remove(document.getElementById('model-select').selectedIndex);
		document.getElementById('progress').hidden = true;
		document.getElementById('progress-text').textContent = '';
		document.getElementById('import-model-cancel').hidden = true;`)

	// A refused import, picked in the open drawer.
	bad := badimport.Checkpoints(t, hfDir)[0]
	r := importInto(t, b, bad.Path, strings.HasSuffix(bad.Path, ".gguf"))
	if r.Error == "" {
		t.Fatalf("the import of %s was not refused", bad.Name)
	}
	time.Sleep(400 * time.Millisecond) // the drawer slides out
	seen := eval[string](t, b, `(() => {
		const e = document.getElementById('error'), r = e.getBoundingClientRect();
		if (e.hidden || r.height === 0) return 'hidden';
		if (document.body.classList.contains('drawer-open')) return 'under the open drawer';
		if (r.bottom < 0 || r.top > innerHeight) return 'outside the viewport';
		return '';
	})()`)
	if seen != "" {
		t.Errorf("after a refused import on a phone, its error (%q) is %s", r.Error, seen)
	}
	screenshot(t, b, "ux-small-phone-import-refused.png")
}
