// The page's shared parts: the element lookup, number formats, the test
// hooks (window.wick), and the status line, errors, notices and undo
// toasts that both the chat (app.js) and the model panel (modelpanel.js)
// write to.

export const $ = (id) => document.getElementById(id);
export const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
export const kib = (n) => `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
export const secs = (ms) => `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;

// Test and benchmark hooks, window.wick: what the last turn streamed and
// measured, and the page's own operations (the buttons call the same
// functions). app.js adds the chat's (its store, the open chat, fault).
export const hooks = window.wick = {
  swept: null, // the incomplete models deleted at the start (null: no sweep yet)
  streamed: [], lastReply: null, lastStats: null, lastRestore: null, lastSave: null, loaded: null, state: 'starting', note: '', saved: {},
};

// ---- the drawer ----

// On a narrow screen the side bar (characters, chats, the model panel) is
// a drawer over the chat, and the status line and errors are in the chat,
// under it: what the side bar starts and ends with a result or an error
// closes the drawer, so that the result is seen.
export function openDrawer() { document.body.classList.add('drawer-open'); $('menu').setAttribute('aria-expanded', 'true'); $('backdrop').hidden = false; }
export function closeDrawer() { document.body.classList.remove('drawer-open'); $('menu').setAttribute('aria-expanded', 'false'); $('backdrop').hidden = true; }

// ---- status, errors, notices ----

// status shows one plain line; details go into its tooltip.
export function status(text, details = '') { $('status').textContent = text; $('status').title = details; }

// splitError turns an error message into one plain line and the rest:
// WebGPU's diagnostics run to dozens of lines, which belong in a collapsed
// details element, not across the chat.
function splitError(text, details = '') {
  text = String(text || '');
  const nl = text.indexOf('\n');
  let head = nl < 0 ? text : text.slice(0, nl);
  let rest = nl < 0 ? '' : text.slice(nl + 1);
  if (head.length > 240) { rest = head.slice(240) + (rest ? '\n' + rest : ''); head = head.slice(0, 240) + '…'; }
  if (/WebGPU|WGSL|CommandBuffer|ComputePipeline/.test(head) && !/^This /.test(head)) {
    rest = head + (rest ? '\n' + rest : '');
    head = 'The GPU could not run this step; the next message will try the GPU again.';
  }
  return { head, details: [rest, details].filter(Boolean).join('\n') };
}

// withDetails fills el with one line of text and, where there are details,
// a collapsed element holding them.
export function withDetails(el, text, details) {
  const { head, details: more } = splitError(text, details);
  el.replaceChildren(document.createTextNode(head));
  if (more) {
    const d = document.createElement('details');
    const sum = document.createElement('summary');
    sum.textContent = 'Details';
    const pre = document.createElement('pre');
    pre.textContent = more;
    d.append(sum, pre);
    el.append(d);
  }
}

export function showError(text, details) { const e = $('error'); withDetails(e, text, details); e.hidden = !text; }
// note tells what happened to a chat's saved session (restored, refused).
export function note(text) { $('note').textContent = text; $('note').hidden = !text; hooks.note = text; }
export function notice(text, { offerCPU = false, offerGPU = false, details = '' } = {}) {
  $('notice').hidden = !text;
  withDetails($('notice-text'), text || '', details);
  $('use-cpu').hidden = !offerCPU;
  $('use-gpu').hidden = !offerGPU;
}

// toast offers to undo what was just done; commit runs when the offer
// lapses (after a while, or when another toast replaces it).
let pendingToast = null;
export function toast(text, undo, commit = () => {}) {
  if (pendingToast) pendingToast.commit();
  const t = { undo, commit: () => { clearTimeout(t.timer); if (pendingToast === t) { pendingToast = null; $('toast').hidden = true; } commit(); } };
  t.timer = setTimeout(t.commit, 8000);
  pendingToast = t;
  $('toast-text').textContent = text;
  $('toast').hidden = false;
}

export function undoToast() {
  const t = pendingToast;
  if (!t) return;
  clearTimeout(t.timer);
  pendingToast = null;
  $('toast').hidden = true;
  t.undo();
}

// copyText puts text on the clipboard: the Clipboard API where the page
// is a secure context, else a selected textarea and execCommand.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall back */ }
  }
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.style.position = 'fixed';
  ta.style.opacity = '0';
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  return ok;
}

export function downloadFile(name, bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export const safeName = (s) => (s || 'chat').replace(/[^\p{L}\p{N} ._-]+/gu, '').trim().slice(0, 60) || 'chat';

// button makes a button of type button (not a form's submit).
export function button(text, title, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (title) b.title = title;
  b.onclick = onclick;
  return b;
}

// readFile reads the file picked in input (and clears it for the next
// pick): a card or a chat, at most 32 MiB.
export async function readFile(input) {
  const f = input.files[0];
  input.value = '';
  if (!f) return null;
  if (f.size > 32 << 20) throw new Error(`${f.name} is ${mb(f.size)}: more than the 33 MB a card or chat may be`);
  return { name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) };
}
