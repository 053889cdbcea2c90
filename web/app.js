// The chat page: the chats of each character, the message list with
// streamed replies, actions on every message and alternative replies
// ("swipes"), and the engine worker behind it, which loads the model the
// model panel (modelpanel.js) picks. The characters are characters.js's;
// ui.js holds the status line, errors and toasts all of them write to.
//
// The module keeps each conversation's KV cache in a session between turns.
// After every turn the chat's messages and the session's save are written
// in one IndexedDB transaction (store.js commitTurn), so after a crash or a
// kill the two agree. A chat without a session (after a reload, an error, or
// a change the engine did not make: an edited or deleted message, another
// swipe) gets one from its save, KV included, brought to the page's messages
// by wick_set_history, which keeps the KV of the leading messages both
// share; where the save is missing or refused, from the messages alone,
// which the next turn prefills. Never lose a chat: when its KV cannot be
// used, it is replayed from its messages.

import { Store, newID } from './store.js';
import * as chatfile from './chatfile.js';
import { $, kib, secs, hooks, status, showError, note, notice, toast, undoToast, copyText, downloadFile, safeName, openDrawer, closeDrawer, button, readFile } from './ui.js';
import { promptOf, renderedPrompt, avatarNode, avatarURL, importCard, exportCard, renderCharacters, bindCharacters } from './characters.js';
import { initModels, currentModelInfo, describeModel, downloadModel, downloadEnded, bindModelPanel } from './modelpanel.js';

let store = null;

// The chat's test hooks (ui.js hooks holds the rest): its store, the open
// chat, and fault, which makes the worker's next GPU step fail WebGPU's
// validation, so tests can check that the turn after a GPU error runs on
// the GPU.
Object.defineProperties(hooks, {
  openChat: { get: () => (store ? store.open.chat : ''), enumerable: true },
  store: { get: () => store, enumerable: true },
});
hooks.fault = (kind = 'validation') => ask('fault', { fault: kind });

// ---- the worker ----

let worker = null;
let nextID = 1;
const waiting = new Map();

function startWorker() {
  worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = (ev) => {
    const m = ev.data;
    if (m.log !== undefined) { console.log('[wick]', m.log); return; }
    const w = waiting.get(m.id);
    if (!w) return;
    if (m.token) { w.onToken && w.onToken(m.token); return; }
    if (m.progress) { w.onProgress && w.onProgress(m.progress); return; }
    waiting.delete(m.id);
    if (m.error !== undefined) w.reject(Object.assign(new Error(m.error), { kind: m.kind, fatal: m.fatal, details: m.details }));
    else w.resolve(m.result);
  };
  worker.onerror = (ev) => showError(`The engine worker failed: ${ev.message || 'unknown error'}`);
}

function ask(op, args = {}, onToken, onProgress) {
  const id = nextID++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject, onToken, onProgress });
    worker.postMessage({ id, op, ...args });
  });
}

// ---- the loaded model ----

let loaded = null;       // {model, backend, key, ...} once the worker has one
let sessions = new Map(); // chat id -> {ready}: a promise of the worker session that holds the chat's messages
let saved = new Map();    // chat id -> bytes of its save for the loaded model
let editing = '';         // the chat whose last user message is being edited
let busy = false;
let gpuOverride = '';     // ?backend= in the address: for this page load only
let tierOverride = 'all'; // ?tier=fallback: the portable kernels only, every optional WebGPU feature withheld (tests)

// gpuProblem says why WebGPU cannot be used here ('' when it can), and
// whether the adapter is a software one.
async function gpuProblem() {
  if (!window.isSecureContext) {
    return { problem: 'insecure' };
  }
  if (!navigator.gpu) return { problem: 'This browser does not offer WebGPU, so the model cannot run on the GPU here.' };
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { problem: `WebGPU could not find a GPU: ${e.message}.` };
  }
  if (!adapter) return { problem: 'WebGPU is present but found no usable GPU (it may be disabled or blocklisted).' };
  const info = adapter.info || {};
  return { problem: '', fallback: !!(info.isFallbackAdapter || adapter.isFallbackAdapter), adapterName: [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') };
}

// chooseBackend picks where the model runs: what the user chose, else
// WebGPU on a hardware adapter, else the CPU, saying why in one line.
async function chooseBackend() {
  const want = gpuOverride || store.settings.backend;
  if (want === 'cpu') { notice(''); return 'cpu'; }
  const { problem, fallback } = await gpuProblem();
  if (problem === 'insecure') {
    notice(`This page came over plain http from another machine, so the browser treats it as not secure and turns WebGPU off. ` +
      `It runs on the CPU instead (slower). For the GPU, open it over https (wick serve -tls-self-signed) or at http://localhost on the machine itself.`);
    return 'cpu';
  }
  if (problem) {
    hooks.state = 'no-webgpu';
    notice(`${problem} You can run the model on the CPU instead: it works, but more slowly.`, { offerCPU: true });
    return null;
  }
  if (fallback && want !== 'webgpu') {
    notice('WebGPU here runs in software, without a GPU, which is slower than wick\'s own CPU backend: running on the CPU.', { offerGPU: true });
    return 'cpu';
  }
  notice('');
  return 'webgpu';
}

async function openModel(name) {
  store.open.model = name;
  store.save();
  loaded = null;
  sessions = new Map();
  saved = new Map();
  hooks.loaded = null;
  setBusy(false);
  showError('');
  note('');
  describeModel(currentModelInfo());
  const backend = await chooseBackend();
  if (!backend) { status('WebGPU is not available.'); return; }
  await downloadAndLoad(name, backend);
}

async function downloadAndLoad(name, backend) {
  try {
    hooks.state = 'downloading';
    await downloadModel(name);
    hooks.state = 'loading';
    status(`Starting ${name}…`);
    if (!worker) startWorker();
    const li = await ask('load', { model: name, backend, tier: tierOverride });
    loaded = { model: name, ...li };
    hooks.loaded = loaded;
    if (li.gpuNote) notice(li.gpuDetails ? li.gpuNote : `${li.gpuNote} Running on the CPU.`, { details: li.gpuDetails });
    const where = li.backend.startsWith('webgpu') ? 'the GPU (WebGPU)' : 'the CPU';
    status(`Ready: ${li.name} runs on ${where}.`, `backend ${li.backend}${li.adapter ? `, adapter ${li.adapter}` : ''}; context ${li.context} tokens; started in ${secs(li.loadMs)}`);
    downloadEnded(true);
    await refreshSaved();
    setBusy(false);
    render();
    $('input').focus();
    // Ready once the page takes input: the saved chats listed, the box
    // focused (tests wait for it, then type).
    hooks.state = 'ready';
  } catch (e) {
    hooks.state = 'error';
    downloadEnded(false);
    showError(e.kind === 'corrupt' ? `Download refused: ${e.message}` : e.message);
    status(`${name} is not loaded.`);
  }
}

// ---- chats ----

// refreshSaved asks the worker which chats have a save for the loaded model.
async function refreshSaved() {
  try {
    const list = await ask('saved');
    saved = new Map(list.map((s) => [s.chat, s.bytes]));
  } catch { saved = new Map(); }
  hooks.saved = Object.fromEntries(saved);
  renderChats();
}

function forgetChat(id) {
  dropSession(id);
  if (worker) ask('forget', { chat: id }).catch(() => {});
  saved.delete(id);
}

function deleteChat(c) {
  c.deleting = true;
  if (store.open.chat === c.id) store.open.chat = '';
  toast(`Deleted the chat "${c.title}".`, () => {
    delete c.deleting;
    store.open.chat = c.id;
    store.save();
    render();
  }, () => {
    forgetChat(c.id);
    store.deleteChat(c.id);
  });
  render();
}

function renameChat(c, li) {
  const input = document.createElement('input');
  input.className = 'rename';
  input.value = c.title;
  input.maxLength = 120;
  const done = (keep) => {
    if (keep && input.value.trim()) {
      c.title = input.value.trim();
      c.renamed = true;
      store.putChat(c);
    }
    renderChats();
    renderTop();
  };
  input.onkeydown = (ev) => {
    if (ev.key === 'Enter') { ev.preventDefault(); done(true); }
    if (ev.key === 'Escape') done(false);
  };
  input.onblur = () => done(true);
  input.onclick = (ev) => ev.stopPropagation();
  li.replaceChildren(input);
  input.focus();
  input.select();
}

async function exportChat(id) {
  const c = store.chat(id);
  const ch = c && store.character(c.character);
  if (!c) throw new Error(`no chat ${id}`);
  return chatfile.write(c, { userName: store.settings.userName || 'User', characterName: ch ? ch.name : '' });
}

// importChat adds a chat from SillyTavern's JSONL text, to the character
// it names (or the open one), and opens it.
async function importChat(text) {
  const r = chatfile.read(text);
  const ch = store.visibleCharacters().find((c) => c.name === r.characterName) || store.character(store.open.character);
  if (!ch) throw new Error('Import a chat: there is no character to give it to; make one first.');
  const chat = { id: newID('chat'), character: ch.id, title: r.title || `Imported chat with ${ch.name}`, renamed: !!r.title, created: Date.now(), updated: Date.now(), messages: r.messages, stMeta: r.stMeta };
  await store.addChat(chat);
  store.open.character = ch.id;
  store.open.chat = chat.id;
  store.save();
  await render();
  if (r.skipped) note(`Imported ${r.messages.length} messages; ${r.skipped} system or narrator messages were left out.`);
  return chat.id;
}

function renderChats() {
  const ch = store.character(store.open.character);
  const ul = $('chats');
  if (!ch) { ul.replaceChildren(); return; }
  ul.replaceChildren(...store.chatsOf(ch.id).map((c) => {
    const li = document.createElement('li');
    li.className = 'chat' + (c.id === store.open.chat ? ' selected' : '');
    li.dataset.id = c.id;
    const title = document.createElement('span');
    title.className = 'label';
    title.textContent = c.title;
    li.append(title);
    if (saved.has(c.id)) {
      // Saved with its KV for this model: reopening it recomputes nothing.
      const badge = document.createElement('span');
      badge.className = 'saved dim';
      badge.textContent = '✓';
      badge.title = `Saved with its state (${kib(saved.get(c.id))}): it goes on without recomputing the conversation`;
      li.append(badge);
    }
    const rename = button('✎', 'Rename this chat', (ev) => { ev.stopPropagation(); renameChat(c, li); });
    rename.className = 'rename-btn';
    const exp = button('⤓', 'Export this chat (SillyTavern .jsonl)', async (ev) => {
      ev.stopPropagation();
      downloadFile(`${safeName(c.title)}.jsonl`, await exportChat(c.id), 'application/jsonl');
    });
    exp.className = 'export-btn';
    const del = button('×', 'Delete this chat', (ev) => { ev.stopPropagation(); deleteChat(c); });
    del.className = 'delete-btn';
    li.append(rename, exp, del);
    li.onclick = () => { store.open.chat = c.id; store.save(); closeDrawer(); render(); };
    return li;
  }));
}

function currentChat() {
  let chat = store.chat(store.open.chat);
  if (chat && !chat.deleting && chat.character === store.open.character) return chat;
  const ch = store.character(store.open.character);
  if (!ch || ch.deleting) return null;
  chat = store.chatsOf(ch.id)[0];
  if (!chat) {
    const p = renderedPrompt(ch.id);
    chat = store.newChat(ch, p ? p.greetings : (ch.greeting ? [ch.greeting] : []));
  }
  store.open.chat = chat.id;
  store.save();
  return chat;
}

// ---- messages ----

// formatted fills el with text, *actions* in italics (the asterisks kept,
// faint, so that the text reads and copies as written).
function formatted(el, text) {
  el.replaceChildren();
  const re = /\*([^*\n]+)\*/g;
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) el.append(text.slice(at, m.index));
    const em = document.createElement('em');
    const a = document.createElement('span');
    a.className = 'mark';
    a.textContent = '*';
    em.append(a, m[1], a.cloneNode(true));
    el.append(em);
    at = m.index + m[0].length;
  }
  if (at < text.length) el.append(text.slice(at));
}

// selectSwipe shows alternative i of message m.
function selectSwipe(m, i) {
  const s = m.swipes[i];
  m.swipe = i;
  m.text = s.text;
  for (const k of ['ids', 'idsOf', 'finish']) { if (s[k] !== undefined) m[k] = s[k]; else delete m[k]; }
}

// changed records that the page changed chat's conversation itself: its
// session is rebuilt before the next turn.
function changed(chat) {
  dropSession(chat.id);
  store.touch(chat);
  render();
}

function messageNode(m, i, chat, ch) {
  const div = document.createElement('div');
  div.className = `msg ${m.role}`;
  div.dataset.index = i;
  const who = document.createElement('span');
  who.className = 'who';
  if (m.role === 'assistant') who.append(avatarNode(ch));
  who.append(m.role === 'user' ? (store.settings.userName || 'You') : (ch ? ch.name : ''));
  const text = document.createElement('div');
  text.className = 'text';
  formatted(text, m.text);
  div.append(who, text);
  if (m.finish && m.finish !== 'stop') {
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = m.finish === 'cancelled' ? 'stopped' : 'cut off at the length limit';
    div.append(meta);
  }
  if (chat && i >= 0) div.append(actionsOf(m, i, chat, div));
  return div;
}

// actionsOf is the row of actions under message i.
function actionsOf(m, i, chat, div) {
  const row = document.createElement('div');
  row.className = 'actions';
  const last = i === chat.messages.length - 1;
  if (m.swipes && m.swipes.length > 1) {
    const sw = document.createElement('span');
    sw.className = 'swipes';
    const prev = button('‹', 'Previous reply', () => { selectSwipe(m, (m.swipe + m.swipes.length - 1) % m.swipes.length); changed(chat); });
    const next = button('›', 'Next reply', () => { selectSwipe(m, (m.swipe + 1) % m.swipes.length); changed(chat); });
    prev.className = 'swipe-prev';
    next.className = 'swipe-next';
    const count = document.createElement('span');
    count.className = 'swipe-count';
    count.textContent = `${m.swipe + 1}/${m.swipes.length}`;
    sw.append(prev, count, next);
    row.append(sw);
  }
  const act = (cls, text, title, f) => { const b = button(text, title, f); b.className = cls; b.disabled = busy && cls !== 'copy'; row.append(b); };
  act('copy', 'Copy', 'Copy this message', async (ev) => {
    const ok = await copyText(m.text);
    ev.target.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { ev.target.textContent = 'Copy'; }, 1500);
  });
  act('edit-msg', 'Edit', 'Change this message', () => editMessage(m, i, chat, div));
  if (m.role === 'assistant' && last) {
    act('continue', 'Continue', 'Let the character go on with this reply', () => { if (!busy && loaded) { readSettings(); runTurn(chat, 'continue', null); } });
  }
  if (m.role === 'assistant' && !m.greeting && i > 0 && chat.messages[i - 1].role === 'user') {
    act('regen-here', last ? 'Regenerate' : 'Regenerate from here', last ? 'Write another reply (the old one is kept)' : 'Drop what follows and write another reply here', () => regenerateAt(chat, i));
  }
  act('delete-msg', 'Delete', 'Delete this message', () => deleteMessage(chat, i));
  return row;
}

function editMessage(m, i, chat, div) {
  if (busy) return;
  const ta = document.createElement('textarea');
  ta.className = 'editor';
  ta.value = m.text;
  const save = button('Save', '', () => {
    const text = ta.value;
    if (text !== m.text) {
      m.text = text;
      // The model's own tokens no longer spell this text.
      delete m.ids;
      delete m.idsOf;
      if (m.swipes) m.swipes[m.swipe] = { text };
      changed(chat);
    } else {
      render();
    }
  });
  save.className = 'save-edit';
  const cancel = button('Cancel', '', () => render());
  const row = document.createElement('div');
  row.className = 'row tight';
  row.append(save, cancel);
  div.querySelector('.text').replaceWith(ta);
  div.querySelector('.actions').replaceWith(row);
  ta.focus();
}

function deleteMessage(chat, i) {
  if (busy) return;
  const before = chat.messages.slice();
  chat.messages.splice(i, 1);
  changed(chat);
  toast('Message deleted.', () => { chat.messages = before; changed(chat); });
}

// regenerateAt writes another reply in place of message i (an assistant
// reply to a user message); what follows it is dropped, with an undo.
async function regenerateAt(chat, i) {
  if (busy || !loaded) return;
  if (i < chat.messages.length - 1) {
    const before = chat.messages.slice();
    chat.messages.splice(i + 1);
    changed(chat);
    toast('Later messages dropped.', () => { chat.messages = before; changed(chat); });
  }
  readSettings();
  await runTurn(chat, 'regenerate', null);
}

function renderTop() {
  const ch = store.character(store.open.character);
  const chat = store.chat(store.open.chat);
  $('top-name').textContent = ch ? ch.name : '';
  $('top-chat').textContent = chat && chat.title !== 'New chat' ? chat.title : '';
  const img = $('top-avatar');
  const blob = ch && store.avatars.get(ch.id);
  img.hidden = !blob;
  if (blob) img.src = avatarURL(ch.id, blob);
}

// renderMessages shows msgs (by default the open chat's).
function renderMessages(msgs) {
  const chat = currentChat();
  const ch = store.character(store.open.character);
  const own = !msgs;
  if (!msgs) msgs = chat ? chat.messages : [];
  const nodes = msgs.map((m, i) => messageNode(m, own ? i : -1, own ? chat : null, ch));
  if (chat && editing === chat.id && own) {
    const i = lastUser(chat);
    if (i >= 0) nodes[i].classList.add('editing');
  }
  if (chat && chat.failed && own) nodes.push(failedNode(chat, ch));
  $('messages').replaceChildren(...nodes);
  $('messages').scrollTop = $('messages').scrollHeight;
}

// failedNode shows a message whose turn failed: it stays in the chat, not
// in the input box, with the reason and a way to send it again. It is not
// part of the conversation the model sees until it is sent.
function failedNode(chat, ch) {
  const node = messageNode({ role: 'user', text: chat.failed.text }, -1, null, ch);
  node.classList.add('failed');
  const note = document.createElement('div');
  note.className = 'failed-note';
  note.textContent = 'Not sent. ';
  const retry = button('Send again', '', () => {
    const f = chat.failed;
    chat.failed = null;
    if (!busy && loaded) runTurn(chat, f.kind, f.text);
  });
  retry.className = 'retry';
  note.append(retry);
  node.append(note);
  return node;
}

async function render() {
  const ch = store.character(store.open.character);
  if (ch) {
    try { await promptOf(ch); } catch (e) { showError(`The character ${ch.name} cannot be shown to the model: ${e.message}`); }
  }
  const chat = currentChat(); // opens (or starts) a chat with the character first
  if (editing && (!chat || chat.id !== editing)) setEditing('');
  renderCharacters();
  renderChats();
  renderTop();
  renderMessages();
  setBusy(busy);
  // The open chat gets its session now, so that a refused save is
  // reported when the chat is shown, not when the user next writes.
  if (chat && loaded && !busy && !sessions.has(chat.id)) ensureSession(chat).catch((e) => showError(e.message));
}

// ---- sessions ----

// engineMessages is chat's conversation as the engine takes it: the card's
// system prompt, then the messages (the greeting as the character's first
// one, as engine/chat's Card.Messages has it). A reply carries its token
// ids when they are the loaded model's, so the engine keeps them exactly.
async function engineMessages(chat) {
  const ch = store.character(chat.character);
  const system = ch ? (await promptOf(ch)).system : '';
  return [{ role: 'system', content: system }, ...chat.messages.map((m) => {
    const e = { role: m.role, content: m.text };
    if (m.role === 'assistant' && Array.isArray(m.ids) && m.idsOf === loaded.key) e.tokens = m.ids;
    return e;
  })];
}

// ensureSession returns the worker session that holds chat's messages,
// opening it (from the chat's save where one is usable) the first time.
async function ensureSession(chat) {
  let s = sessions.get(chat.id);
  if (!s) {
    s = { ready: openSession(chat) };
    sessions.set(chat.id, s);
  }
  try {
    return await s.ready;
  } catch (e) {
    if (sessions.get(chat.id) === s) sessions.delete(chat.id);
    throw e;
  }
}

async function openSession(chat) {
  const ch = store.character(chat.character);
  const postHistory = ch ? (await promptOf(ch)).postHistory : '';
  const r = await ask('open', { chat: chat.id, messages: await engineMessages(chat), postHistory });
  hooks.lastRestore = r;
  if (store.open.chat !== chat.id) return r.session;
  if (r.refused) {
    note(`This chat's saved state was refused (${r.refused}). Nothing is lost: the next reply recomputes the conversation from its messages.`);
  } else if (r.replayed) {
    note(`This chat was saved with another model (${r.reason}). Its messages are kept; the next reply recomputes them for this model.`);
  } else {
    note('');
  }
  // A save that matched the messages brings their state back whole; one
  // that did not was brought to the messages, and only its shared start
  // is kept: no claim is made for tokens the chat does not hold.
  if (r.kv_tokens > 0 && !r.synced) {
    status('Chat restored: it goes on where it was, without recomputing.', `${r.kv_tokens} tokens with their KV from a save of ${kib(r.bytes)}, in ${r.ms.toFixed(0)} ms`);
  }
  return r.session;
}

function dropSession(chatID) {
  const s = sessions.get(chatID);
  sessions.delete(chatID);
  if (s && loaded) s.ready.then((sid) => ask('close', { session: sid })).catch(() => {});
}

// ---- turns ----

function lastUser(chat) {
  let i = chat.messages.length - 1;
  while (i >= 0 && chat.messages[i].role !== 'user') i--;
  return i;
}

function setEditing(chatID) {
  editing = chatID;
  $('edit').textContent = editing ? 'Cancel edit' : 'Edit last';
  $('send').textContent = editing ? 'Send edit' : 'Send';
}

function setBusy(b) {
  busy = b;
  const ready = !!loaded && !b;
  const chat = loaded && store ? currentChat() : null;
  const last = chat && chat.messages[chat.messages.length - 1];
  $('input').disabled = !loaded;
  $('send').disabled = !ready;
  $('send').hidden = b;
  $('stop').hidden = !b;
  $('regen').disabled = !ready || !last || last.role !== 'assistant' || !!last.greeting || !!editing || chat.messages.length < 2;
  $('edit').disabled = !ready || !chat || lastUser(chat) < 0;
  for (const el of document.querySelectorAll('#messages .actions button:not(.copy)')) el.disabled = b;
}

// runTurn runs one turn of chat: kind 'send' (a new user message text),
// 'regenerate' (another reply to the last user message, kept as a swipe of
// the last reply), 'edit' (text replaces the last user message, and gets
// a new reply) or 'continue' (the last reply goes on, in place: the same
// message and swipe). The chat's messages change only when the turn
// succeeds.
async function runTurn(chat, kind, text) {
  const st = store.settings;
  const greedy = !(st.temperature > 0);
  // Every reply samples with a fresh seed, so a regenerated one differs.
  const reply = { role: 'assistant', text: '', temperature: st.temperature, topP: st.topP, seed: greedy ? 0 : 1 + Math.floor(Math.random() * 0x7ffffffe) };
  const extend = kind === 'continue';
  const from = kind === 'send' ? chat.messages.length : kind === 'regenerate' || extend ? chat.messages.length - 1 : lastUser(chat);
  const added = kind === 'regenerate' || extend ? [] : [{ role: 'user', text }];
  if (extend) reply.text = chat.messages[from].text;
  setBusy(true);
  showError('');
  const ch = store.character(chat.character);
  let ticker = null;
  try {
    chat.failed = null;
    const t0 = performance.now();
    const sid = await ensureSession(chat);
    renderMessages([...chat.messages.slice(0, from), ...added]);
    const node = messageNode(reply, -1, null, ch);
    node.classList.add('streaming');
    const wait = document.createElement('span');
    wait.className = 'waiting';
    node.querySelector('.text').before(wait);
    $('messages').append(node);
    $('messages').scrollTop = $('messages').scrollHeight;
    const textNode = node.querySelector('.text');
    hooks.streamed = [];
    let n = 0, first = 0, read = null;
    // Until the first token comes, say that the conversation is being
    // read: how far (the engine reports each chunk of the prompt it has
    // read), else for how long. A long one takes a while on a slow device.
    const tick = () => {
      const s = (performance.now() - t0) / 1000;
      if (first) return;
      if (read && read.prefill_total > 0) {
        const pct = Math.floor((100 * read.prefill_done) / read.prefill_total);
        wait.textContent = `reading the conversation… ${pct}%`;
        status(`Reading the conversation… ${pct}%`, `${read.prefill_done} of ${read.prefill_total} tokens of the prompt read, ${s.toFixed(0)} s`);
      } else {
        wait.textContent = s >= 1 ? `reading the conversation… ${s.toFixed(0)} s` : '';
        status(s >= 1 ? `Reading the conversation… ${s.toFixed(0)} s` : 'Thinking…');
      }
    };
    tick();
    ticker = setInterval(tick, 500);
    const input = { max_tokens: st.maxTokens, temperature: reply.temperature, top_p: reply.topP, seed: reply.seed };
    if (kind !== 'regenerate' && !extend) input.text = text;
    hooks.progress = [];
    const onProgress = (p) => { read = p; hooks.progress.push([p.prefill_done, p.prefill_total]); tick(); };
    const r = await ask('turn', { session: sid, chat: chat.id, kind, turn: input, handSave: true }, (tok) => {
      if (!first) { first = performance.now(); wait.remove(); }
      hooks.streamed.push(tok.token);
      textNode.textContent += tok.text;
      n++;
      if (n % 4 === 0) status(`Writing… ${n} tokens, ${(n / ((performance.now() - first) / 1000 || 1)).toFixed(1)} tokens/s`);
      $('messages').scrollTop = $('messages').scrollHeight;
    }, onProgress);
    if (extend) Object.assign(reply, { text: r.content, ids: r.reply_tokens, idsOf: loaded.key, finish: r.finish });
    else Object.assign(reply, { text: r.text, ids: r.tokens, idsOf: loaded.key, finish: r.finish });
    const swipe = { text: reply.text, ids: reply.ids, idsOf: reply.idsOf, finish: reply.finish };
    if (extend) {
      // The reply grows in place: the same message, the swipe shown.
      const m = chat.messages[from];
      Object.assign(m, { text: swipe.text, ids: swipe.ids, idsOf: swipe.idsOf, finish: swipe.finish });
      if (m.swipes && m.swipes.length) m.swipes[m.swipe || 0] = { ...m.swipes[m.swipe || 0], ...swipe };
    } else if (kind === 'regenerate') {
      // The new reply is another swipe of the last message.
      const m = chat.messages[from];
      if (!m.swipes || !m.swipes.length) m.swipes = [{ text: m.text, ids: m.ids, idsOf: m.idsOf, finish: m.finish }];
      m.swipes.push(swipe);
      selectSwipe(m, m.swipes.length - 1);
    } else {
      chat.messages.splice(from, Infinity, ...added, { ...reply, swipes: [swipe], swipe: 0 });
    }
    if (kind === 'edit') setEditing('');
    // The chat and its save go to storage together.
    let commitError = '';
    try {
      const bytes = r.save && r.save.data;
      if (bytes) delete r.save.data;
      const t1 = performance.now();
      await store.commitTurn(chat, bytes ? { key: { model: loaded.model, hash: loaded.key.slice(loaded.key.lastIndexOf('@') + 1) }, chat: chat.id, bytes } : null);
      if (bytes) r.save.writeMs = performance.now() - t1;
    } catch (e) {
      commitError = e.message;
    }
    hooks.lastReply = r;
    hooks.lastStats = r.stats;
    hooks.lastSave = r.save || null;
    if (r.save && !r.save.error && !commitError) saved.set(chat.id, r.save.bytes);
    hooks.saved = Object.fromEntries(saved);
    const s = r.stats;
    status(`${r.tokens.length} tokens in ${secs(s.ms)} (${s.decodeTokensPerSec.toFixed(1)} tokens/s)` +
      (r.finish === 'length' ? ', stopped at the length limit' : r.finish === 'cancelled' ? ', stopped' : '') + '.',
    `first token after ${secs(s.firstMs)}; the prompt had ${r.prompt_tokens} new tokens, ${r.cached_tokens} reused from the cache` +
      (r.save && !r.save.error ? `; saved with its state (${kib(r.save.bytes)})` : ''));
    const saveError = commitError || (r.save && r.save.error);
    if (saveError) showError(`The chat could not be saved: ${saveError}. It is kept on this page; after a reload it is recomputed from its messages.`);
  } catch (e) {
    // The turn is not taken: the conversation is left as it was, and its
    // session, which may have moved on, is rebuilt (from its save) for the
    // next one. The user's message stays in view, marked as not sent.
    dropSession(chat.id);
    if (kind !== 'regenerate' && !extend) chat.failed = { kind, text };
    hooks.lastError = { message: e.message, kind: e.kind || '' };
    if (e.kind === 'moved-to-cpu') {
      // Every session lived in the GPU instance the worker replaced.
      for (const id of [...sessions.keys()]) sessions.delete(id);
      loaded.backend = 'cpu';
      hooks.loaded = loaded;
      showError('');
      notice(e.message, { details: e.details });
    } else if (/does not fit the context/.test(e.message)) {
      showError(`This message does not fit the model's context (${e.message}). The chat is left as it was; start a new chat with this character to go on.`);
    } else {
      showError(e.message);
    }
    if (e.fatal) { loaded = null; status('The engine stopped; starting the model again…'); openModel(store.open.model); }
    else status('');
  } finally {
    clearInterval(ticker);
    renderChats();
    renderTop();
    renderMessages();
    setBusy(false);
    $('input').focus();
  }
}

// ---- wiring ----

function readSettings() {
  const s = store.settings;
  const num = (id, lo, hi, dflt) => { const v = Number($(id).value); return $(id).value !== '' && Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt; };
  s.temperature = num('temperature', 0, 2, 0.8);
  s.topP = num('top-p', 0.01, 1, 0.95);
  s.maxTokens = Math.round(num('max-tokens', 1, 4096, 256));
  store.save();
}



function wire() {
  const s = store.settings;
  $('temperature').value = s.temperature;
  $('top-p').value = s.topP;
  $('max-tokens').value = s.maxTokens;
  $('backend').value = gpuOverride || s.backend;
  $('user-name').value = s.userName || '';
  $('user-persona').value = s.userPersona || '';
  for (const id of ['temperature', 'top-p', 'max-tokens']) $(id).onchange = readSettings;
  const userChanged = () => {
    s.userName = $('user-name').value.trim();
    s.userPersona = $('user-persona').value;
    store.save();
    // Who the user is is part of every system prompt.
    for (const id of [...sessions.keys()]) dropSession(id);
    render();
  };
  $('user-name').onchange = userChanged;
  $('user-persona').onchange = userChanged;
  const setBackend = (b) => { s.backend = b; gpuOverride = ''; $('backend').value = b; store.save(); openModel(store.open.model); };
  $('backend').onchange = () => setBackend($('backend').value);
  $('use-cpu').onclick = () => setBackend('cpu');
  $('use-gpu').onclick = () => setBackend('webgpu');
  bindCharacters(store, { render, dropSession, forgetChat });
  bindModelPanel({
    get store() { return store; },
    open: openModel,
    // The loaded model's files are gone: the chat waits for Download.
    unloaded() {
      loaded = null;
      hooks.loaded = null;
      setBusy(false);
    },
  });
  $('import-chat').onclick = () => $('import-chat-file').click();
  $('import-chat-file').onchange = async () => {
    try {
      const f = await readFile($('import-chat-file'));
      if (f) { await importChat(new TextDecoder().decode(f.bytes)); closeDrawer(); }
    } catch (e) { showError(`Import a chat: ${e.message}`); closeDrawer(); }
  };
  $('new-chat').onclick = () => {
    const ch = store.character(store.open.character);
    if (!ch) return;
    const p = renderedPrompt(ch.id);
    store.open.chat = store.newChat(ch, p ? p.greetings : []).id;
    store.save();
    closeDrawer();
    render();
  };
  $('menu').onclick = () => (document.body.classList.contains('drawer-open') ? closeDrawer() : openDrawer());
  $('close-side').onclick = closeDrawer;
  $('backdrop').onclick = closeDrawer;
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeDrawer(); });
  $('toast-undo').onclick = undoToast;
  $('composer').onsubmit = (ev) => {
    ev.preventDefault();
    readSettings();
    const text = $('input').value.trim();
    const chat = currentChat();
    if (!text || !chat || busy || !loaded) return;
    $('input').value = '';
    runTurn(chat, editing === chat.id ? 'edit' : 'send', text);
  };
  $('input').onkeydown = (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $('composer').requestSubmit(); }
    if (ev.key === 'Escape' && editing) { setEditing(''); $('input').value = ''; renderMessages(); setBusy(busy); }
  };
  $('stop').onclick = () => worker && worker.postMessage({ op: 'cancel' });
  $('regen').onclick = () => {
    const chat = currentChat();
    const last = chat.messages[chat.messages.length - 1];
    if (busy || !last || last.role !== 'assistant' || last.greeting) return;
    readSettings();
    runTurn(chat, 'regenerate', null);
  };
  $('edit').onclick = () => {
    const chat = currentChat();
    if (editing) {
      setEditing('');
      $('input').value = '';
    } else {
      const i = lastUser(chat);
      if (i < 0) return;
      // The last user message goes into the box; sending replaces it (and
      // its reply) through the engine's edit, which keeps the KV before it.
      setEditing(chat.id);
      $('input').value = chat.messages[i].text;
    }
    renderMessages();
    setBusy(busy);
    $('input').focus();
  };
}

Object.assign(hooks, { importCard, exportCard, importChat, exportChat, copyText });

async function main() {
  gpuOverride = ['webgpu', 'cpu'].includes(new URLSearchParams(location.search).get('backend')) ? new URLSearchParams(location.search).get('backend') : '';
  tierOverride = new URLSearchParams(location.search).get('tier') === 'fallback' ? 'fallback' : 'all';
  try {
    store = await Store.load();
  } catch (e) {
    showError(`The chats cannot be read from this browser's storage: ${e.message}`);
    hooks.state = 'error';
    return;
  }
  store.onError = (e) => showError(e.message);
  wire();
  await render();
  await initModels();
}

main();
