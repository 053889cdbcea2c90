// The chat page: model picker and download, characters and their chats,
// the message list with streamed replies, and the engine worker behind it.
//
// The module keeps each conversation's KV cache in a session between turns,
// and the worker saves the session after every turn (saves.js). A chat
// without a session (after a reload, or after an error) gets one from its
// save, KV included, so it goes on without recomputing anything; where the
// save is missing or refused, from the page's own copy of its messages
// (wick_set_history), which the next turn prefills. Regenerate and edit are
// the engine's own (wick_regenerate, wick_edit_last): they keep the KV of
// everything before the replaced message.

import { Store } from './store.js';
import { listModels, download, stored, remove } from './models.js';
import { systemPrompt } from './manifest.js';

const $ = (id) => document.getElementById(id);
const store = new Store();
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

// Test and benchmark hooks: what the last turn streamed and measured.
const hooks = window.wick = {
  streamed: [], lastReply: null, lastStats: null, lastRestore: null, lastSave: null, loaded: null, state: 'starting', note: '', saved: {},
};

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
    waiting.delete(m.id);
    if (m.error !== undefined) w.reject(Object.assign(new Error(m.error), { kind: m.kind, fatal: m.fatal, details: m.details }));
    else w.resolve(m.result);
  };
  worker.onerror = (ev) => showError(`The engine worker failed: ${ev.message || 'unknown error'}`);
}

function ask(op, args = {}, onToken) {
  const id = nextID++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject, onToken });
    worker.postMessage({ id, op, ...args });
  });
}

// ---- status, errors, notices ----

function status(text) { $('status').textContent = text; }
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
function withDetails(el, text, details) {
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

function showError(text, details) { const e = $('error'); withDetails(e, text, details); e.hidden = !text; }
// note tells what happened to a chat's saved session (restored, refused).
function note(text) { $('note').textContent = text; $('note').hidden = !text; hooks.note = text; }
function notice(text, offerCPU, details) {
  $('notice').hidden = !text;
  withDetails($('notice-text'), text || '', details);
  $('use-cpu').hidden = !offerCPU;
}

// ---- models ----

let models = [];
let loaded = null;       // {model, backend, ...} once the worker has one
let sessions = new Map(); // chat id -> {ready}: a promise of the worker session that holds the chat's messages
let saved = new Map();    // chat id -> bytes of its save for the loaded model
let editing = '';         // the chat whose last user message is being edited
let busy = false;

async function webgpuProblem() {
  if (!navigator.gpu) return 'This browser does not offer WebGPU (navigator.gpu is missing), so the model cannot run on the GPU here.';
  try {
    if (!(await navigator.gpu.requestAdapter())) return 'WebGPU is present but found no usable GPU adapter (it may be disabled or blocklisted).';
  } catch (e) {
    return `WebGPU could not find an adapter: ${e.message}`;
  }
  return '';
}

async function initModels() {
  try {
    models = await listModels();
  } catch (e) {
    showError(`Could not get the list of models: ${e.message}`);
    return;
  }
  const sel = $('model-select');
  sel.replaceChildren(...models.map((m) => new Option(`${m.name}${m.title && m.title !== m.name ? ` (${m.title})` : ''}`, m.name)));
  if (!models.length) { status('The server offers no models.'); return; }
  sel.value = models.some((m) => m.name === store.open.model) ? store.open.model : models[0].name;
  await openModel(sel.value);
}

function currentModelInfo() { return models.find((m) => m.name === $('model-select').value); }

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
  const info = currentModelInfo();
  $('model-size').textContent = info ? `${mib(info.sizes.download_bytes)} in ${info.sizes.shards} shards, ${info.config.dtype}, context ${info.config.context_len}` : '';
  const backend = store.settings.backend;
  if (backend !== 'cpu') {
    const problem = await webgpuProblem();
    if (problem) {
      hooks.state = 'no-webgpu';
      notice(`${problem} You can run the model on the CPU instead: it works, but slowly.`, true);
      status('WebGPU is not available.');
      return;
    }
  }
  notice('');
  await downloadAndLoad(name, backend);
}

async function downloadAndLoad(name, backend) {
  const bar = $('progress');
  $('download-btn').disabled = true;
  try {
    hooks.state = 'downloading';
    const have = await stored(name);
    if (!have) status(`Downloading ${name}…`);
    bar.hidden = have;
    await download(name, {
      onProgress: (p) => {
        bar.max = p.totalBytes || 1;
        bar.value = p.bytes;
        $('progress-text').textContent = `${mib(p.bytes)} of ${mib(p.totalBytes)}, shard ${p.shards} of ${p.totalShards}`;
      },
    });
    bar.hidden = true;
    hooks.state = 'loading';
    status(`Loading ${name}…`);
    if (!worker) startWorker();
    const info = await ask('load', { model: name, backend });
    loaded = { model: name, ...info };
    hooks.loaded = loaded;
    hooks.state = 'ready';
    if (info.gpuNote) notice(info.gpuDetails ? info.gpuNote : `${info.gpuNote} Running on the CPU.`, false, info.gpuDetails);
    status(`${info.name} ready on ${info.backend}, context ${info.context} tokens, loaded in ${(info.loadMs / 1000).toFixed(1)} s.`);
    await refreshSaved();
    setBusy(false);
    render();
  } catch (e) {
    hooks.state = 'error';
    bar.hidden = true;
    showError(e.kind === 'corrupt' ? `Download refused: ${e.message}` : e.message);
    status(`${name} is not loaded.`);
  } finally {
    $('download-btn').disabled = false;
  }
}

// ---- characters and chats ----

const kib = (n) => `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;

// refreshSaved asks the worker which chats have a save for the loaded model.
async function refreshSaved() {
  try {
    const list = await ask('saved');
    saved = new Map(list.map((s) => [s.chat, s.bytes]));
  } catch { saved = new Map(); }
  hooks.saved = Object.fromEntries(saved);
  renderChats();
}

function renderCharacters() {
  const ul = $('characters');
  ul.replaceChildren(...store.characters.map((c) => {
    const li = document.createElement('li');
    li.className = 'character' + (c.id === store.open.character ? ' selected' : '');
    li.dataset.id = c.id;
    const name = document.createElement('span');
    name.textContent = c.name;
    const edit = document.createElement('button');
    edit.textContent = 'edit';
    edit.type = 'button';
    edit.onclick = (ev) => { ev.stopPropagation(); editCharacter(c); };
    li.append(name, edit);
    li.onclick = () => { store.open.character = c.id; store.open.chat = ''; store.save(); render(); };
    return li;
  }));
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
    title.textContent = c.title;
    li.append(title);
    if (saved.has(c.id)) {
      // Saved with its KV for this model: reopening it recomputes nothing.
      const badge = document.createElement('span');
      badge.className = 'saved dim';
      badge.textContent = kib(saved.get(c.id));
      badge.title = 'Saved session: it continues without recomputing the conversation';
      li.append(badge);
    }
    const del = document.createElement('button');
    del.textContent = '×';
    del.type = 'button';
    del.title = 'Delete this chat';
    del.onclick = (ev) => {
      ev.stopPropagation();
      dropSession(c.id);
      if (worker) ask('forget', { chat: c.id }).catch(() => {});
      saved.delete(c.id);
      store.deleteChat(c.id);
      if (store.open.chat === c.id) store.open.chat = '';
      render();
    };
    li.append(del);
    li.onclick = () => { store.open.chat = c.id; store.save(); render(); };
    return li;
  }));
}

function currentChat() {
  let chat = store.chat(store.open.chat);
  if (chat && chat.character === store.open.character) return chat;
  const ch = store.character(store.open.character);
  if (!ch) return null;
  chat = store.chatsOf(ch.id)[0] || store.newChat(ch);
  store.open.chat = chat.id;
  store.save();
  return chat;
}

function messageNode(m, charName) {
  const div = document.createElement('div');
  div.className = `msg ${m.role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = m.role === 'user' ? 'You' : charName;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.text;
  div.append(who, text);
  if (m.finish && m.finish !== 'stop') {
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = m.finish === 'cancelled' ? 'stopped' : 'cut off at the token limit';
    div.append(meta);
  }
  return div;
}

// renderMessages shows msgs (by default the open chat's).
function renderMessages(msgs) {
  const chat = currentChat();
  const ch = store.character(store.open.character);
  if (!msgs) msgs = chat ? chat.messages : [];
  const nodes = msgs.map((m) => messageNode(m, ch ? ch.name : ''));
  if (chat && editing === chat.id && msgs === chat.messages) {
    const i = lastUser(chat);
    if (i >= 0) nodes[i].classList.add('editing');
  }
  if (chat && chat.failed && msgs === chat.messages) nodes.push(failedNode(chat));
  $('messages').replaceChildren(...nodes);
  $('messages').scrollTop = $('messages').scrollHeight;
}

// failedNode shows a message whose turn failed: it stays in the chat, not
// in the input box, with the reason and a way to send it again. It is not
// part of the conversation the model sees until it is sent.
function failedNode(chat) {
  const node = messageNode({ role: 'user', text: chat.failed.text }, '');
  node.classList.add('failed');
  const note = document.createElement('div');
  note.className = 'failed-note';
  note.textContent = 'Not sent. ';
  const retry = document.createElement('button');
  retry.textContent = 'Send again';
  retry.className = 'retry';
  retry.onclick = () => {
    const f = chat.failed;
    chat.failed = null;
    if (!busy && loaded) runTurn(chat, f.kind, f.text);
  };
  note.append(retry);
  node.append(note);
  return node;
}

function render() {
  const chat = currentChat(); // opens (or starts) a chat with the character first
  if (editing && (!chat || chat.id !== editing)) setEditing('');
  renderCharacters();
  renderChats();
  renderMessages();
  setBusy(busy);
  // The open chat gets its session now, so that a refused save is
  // reported when the chat is shown, not when the user next writes.
  if (chat && loaded && !sessions.has(chat.id)) ensureSession(chat).catch((e) => showError(e.message));
}

function editCharacter(card) {
  const dlg = $('card-dialog');
  const isNew = !card;
  card = card || { id: 'c-' + Date.now().toString(36), name: '', persona: '', greeting: '' };
  $('card-name').value = card.name;
  $('card-persona').value = card.persona;
  $('card-greeting').value = card.greeting;
  $('card-delete').hidden = isNew;
  dlg.onclose = () => {
    if (dlg.returnValue === 'save') {
      const next = { ...card, name: $('card-name').value.trim() || 'Unnamed', persona: $('card-persona').value, greeting: $('card-greeting').value };
      // A changed card changes the system prompt: its chats' sessions are
      // rebuilt (from their saves, then brought up to the new prompt).
      for (const c of store.chatsOf(card.id)) dropSession(c.id);
      store.putCharacter(next);
      store.open.character = next.id;
    } else if (dlg.returnValue === 'delete') {
      for (const c of store.chatsOf(card.id)) {
        dropSession(c.id);
        if (worker) ask('forget', { chat: c.id }).catch(() => {});
      }
      store.deleteCharacter(card.id);
      if (store.open.character === card.id) store.open.character = store.characters[0] ? store.characters[0].id : '';
    }
    store.open.chat = '';
    store.save();
    render();
  };
  dlg.showModal();
}

// ---- sessions ----

// engineMessages is chat's conversation as the engine takes it: the card's
// system prompt, then the messages (the greeting as the character's first
// one, as engine/chat's Card.Messages has it). A reply carries its token
// ids when they are the loaded model's, so the engine keeps them exactly.
function engineMessages(chat) {
  const ch = store.character(chat.character) || {};
  return [{ role: 'system', content: systemPrompt(ch) }, ...chat.messages.map((m) => {
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
  const r = await ask('open', { chat: chat.id, messages: engineMessages(chat) });
  hooks.lastRestore = r;
  if (store.open.chat !== chat.id) return r.session;
  if (r.refused) {
    note(`The saved session of this chat was refused: ${r.refused}. Nothing is lost: the chat goes on from its messages, which the next reply recomputes.`);
  } else if (r.replayed) {
    note(`The saved session of this chat was made by another model (${r.reason}). Its messages were kept; the next reply recomputes them for this model.`);
  } else {
    note('');
  }
  if (r.kv_tokens > 0) {
    status(`Chat restored from its save (${kib(r.bytes)}): ${r.kv_tokens} tokens with their KV in ${r.ms.toFixed(0)} ms; nothing is recomputed.`);
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
  const chat = loaded ? currentChat() : null;
  const last = chat && chat.messages[chat.messages.length - 1];
  $('input').disabled = !ready;
  $('send').disabled = !ready;
  $('stop').hidden = !b;
  $('regen').disabled = !ready || !last || last.role !== 'assistant' || !!last.greeting || !!editing;
  $('edit').disabled = !ready || !chat || lastUser(chat) < 0;
}

// runTurn runs one turn of chat: kind 'send' (a new user message text),
// 'regenerate' (a new reply to the last user message) or 'edit' (text
// replaces the last user message, and gets a new reply). The chat's
// messages change only when the turn succeeds.
async function runTurn(chat, kind, text) {
  const st = store.settings;
  const greedy = !(st.temperature > 0);
  const reply = { role: 'assistant', text: '', temperature: st.temperature, topP: st.topP, seed: greedy ? 0 : 1 + Math.floor(Math.random() * 0x7ffffffe) };
  // from: where the turn's messages start; they replace what follows.
  const from = kind === 'send' ? chat.messages.length : kind === 'regenerate' ? chat.messages.length - 1 : lastUser(chat);
  const added = kind === 'regenerate' ? [] : [{ role: 'user', text }];
  setBusy(true);
  showError('');
  try {
    chat.failed = null;
    const sid = await ensureSession(chat);
    const ch = store.character(chat.character);
    renderMessages([...chat.messages.slice(0, from), ...added]);
    const node = messageNode(reply, ch ? ch.name : '');
    node.classList.add('streaming');
    $('messages').append(node);
    const textNode = node.querySelector('.text');
    hooks.streamed = [];
    status('Thinking…');
    const t0 = performance.now();
    let n = 0;
    const input = { max_tokens: st.maxTokens, temperature: reply.temperature, top_p: reply.topP, seed: reply.seed };
    if (kind !== 'regenerate') input.text = text;
    const r = await ask('turn', { session: sid, chat: chat.id, kind, turn: input }, (tok) => {
      hooks.streamed.push(tok.token);
      textNode.textContent += tok.text;
      n++;
      if (n % 4 === 0) status(`${n} tokens, ${(n / ((performance.now() - t0) / 1000)).toFixed(1)} tokens/s`);
      $('messages').scrollTop = $('messages').scrollHeight;
    });
    Object.assign(reply, { text: r.text, ids: r.tokens, idsOf: loaded.key, finish: r.finish });
    chat.messages.splice(from, Infinity, ...added, reply);
    if (kind === 'edit') setEditing('');
    store.touch(chat);
    hooks.lastReply = r;
    hooks.lastStats = r.stats;
    hooks.lastSave = r.save || null;
    if (r.save && !r.save.error) saved.set(chat.id, r.save.bytes);
    hooks.saved = Object.fromEntries(saved);
    renderChats();
    const s = r.stats;
    status(`${r.tokens.length} tokens in ${(s.ms / 1000).toFixed(2)} s: ${s.decodeTokensPerSec.toFixed(1)} tokens/s decoding, ` +
      `first token after ${(s.firstMs / 1000).toFixed(2)} s; prompt ${r.prompt_tokens} tokens new, ${r.cached_tokens} cached` +
      (r.finish === 'length' ? '; stopped at the token limit' : r.finish === 'cancelled' ? '; stopped' : '') +
      (r.save && !r.save.error ? `; saved (${kib(r.save.bytes)})` : ''));
    if (r.save && r.save.error) showError(`${r.save.error}. The chat is kept on this page; after a reload it is recomputed from its messages.`);
  } catch (e) {
    // The turn is not taken: the conversation is left as it was, and its
    // session, which may have moved on, is rebuilt (from its save) for the
    // next one. The user's message stays in view, marked as not sent.
    dropSession(chat.id);
    if (kind !== 'regenerate') chat.failed = { kind, text };
    hooks.lastError = { message: e.message, kind: e.kind || '' };
    if (e.kind === 'moved-to-cpu') {
      // Every session lived in the GPU instance the worker replaced.
      for (const id of [...sessions.keys()]) sessions.delete(id);
      loaded.backend = 'cpu';
      hooks.loaded = loaded;
      showError('');
      notice(e.message, false, e.details);
    } else if (/does not fit the context/.test(e.message)) {
      showError(`This message does not fit the model's context (${e.message}). The chat is left as it was; start a new chat with this character to go on.`);
    } else {
      showError(e.message);
    }
    if (e.fatal) { loaded = null; status('The engine stopped; reloading the model…'); openModel(store.open.model); }
    else status('');
  } finally {
    renderMessages();
    setBusy(false);
  }
}

// ---- wiring ----

function readSettings() {
  const s = store.settings;
  const num = (id, lo, hi, dflt) => { const v = Number($(id).value); return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt; };
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
  $('backend').value = s.backend;
  for (const id of ['temperature', 'top-p', 'max-tokens']) $(id).onchange = readSettings;
  $('backend').onchange = () => { s.backend = $('backend').value; store.save(); openModel(store.open.model); };
  $('use-cpu').onclick = () => { s.backend = 'cpu'; $('backend').value = 'cpu'; store.save(); openModel(store.open.model); };
  $('model-select').onchange = () => openModel($('model-select').value);
  $('download-btn').onclick = () => openModel($('model-select').value);
  $('delete-btn').onclick = async () => {
    const name = $('model-select').value;
    if (!confirm(`Delete the downloaded files of ${name}? Chats are kept.`)) return;
    await remove(name);
    loaded = null;
    hooks.loaded = null;
    setBusy(false);
    status(`${name} deleted from this browser; Download fetches it again.`);
  };
  $('new-character').onclick = () => editCharacter(null);
  $('new-chat').onclick = () => {
    const ch = store.character(store.open.character);
    if (!ch) return;
    store.open.chat = store.newChat(ch).id;
    store.save();
    render();
  };
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
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('composer').requestSubmit(); }
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
      $('input').focus();
    }
    renderMessages();
    setBusy(busy);
  };
}

wire();
render();
initModels();
