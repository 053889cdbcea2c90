// The chat page: model picker and download, characters and their chats,
// the message list with streamed replies, and the engine worker behind it.
//
// The module keeps each conversation's KV cache in a session between turns.
// Its ABI has no way to put a message into a session without generating it,
// nor to drop the last reply, so a chat whose session is missing (after a
// reload) or out of step (after regenerate or edit) is rebuilt by replaying
// its user turns with the seed, settings and token count each reply was
// made with: the same replies come back, at the cost of recomputing them.

import { Store } from './store.js';
import { listModels, download, stored, remove } from './models.js';
import { systemPrompt } from './manifest.js';

const $ = (id) => document.getElementById(id);
const store = new Store();
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

// Test and benchmark hooks: what the last turn streamed and measured.
const hooks = window.wick = { streamed: [], lastReply: null, lastStats: null, loaded: null, state: 'starting' };

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
    if (m.error !== undefined) w.reject(Object.assign(new Error(m.error), { kind: m.kind, fatal: m.fatal }));
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
function showError(text) { const e = $('error'); e.textContent = text; e.hidden = !text; }
function notice(text, offerCPU) {
  $('notice').hidden = !text;
  $('notice-text').textContent = text || '';
  $('use-cpu').hidden = !offerCPU;
}

// ---- models ----

let models = [];
let loaded = null;       // {model, backend, ...} once the worker has one
let sessions = new Map(); // chat id -> {sid, count}: the worker session and how many of the chat's messages it holds
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
  hooks.loaded = null;
  setBusy(false);
  showError('');
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
    if (info.gpuNote) notice(`${info.gpuNote} Running on the CPU.`, false);
    status(`${info.name} ready on ${info.backend}, context ${info.context} tokens, loaded in ${(info.loadMs / 1000).toFixed(1)} s.`);
    setBusy(false);
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
    const del = document.createElement('button');
    del.textContent = '×';
    del.type = 'button';
    del.title = 'Delete this chat';
    del.onclick = (ev) => { ev.stopPropagation(); dropSession(c.id); store.deleteChat(c.id); if (store.open.chat === c.id) store.open.chat = ''; render(); };
    li.append(title, del);
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

function renderMessages() {
  const chat = currentChat();
  const ch = store.character(store.open.character);
  $('messages').replaceChildren(...(chat ? chat.messages.map((m) => messageNode(m, ch ? ch.name : '')) : []));
  $('messages').scrollTop = $('messages').scrollHeight;
}

function render() {
  currentChat(); // opens (or starts) a chat with the character first
  renderCharacters();
  renderChats();
  renderMessages();
  setBusy(busy);
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
      // A changed card changes the system prompt: its chats' sessions are stale.
      for (const c of store.chatsOf(card.id)) dropSession(c.id);
      store.putCharacter(next);
      store.open.character = next.id;
    } else if (dlg.returnValue === 'delete') {
      for (const c of store.chatsOf(card.id)) dropSession(c.id);
      store.deleteCharacter(card.id);
      if (store.open.character === card.id) store.open.character = store.characters[0] ? store.characters[0].id : '';
    }
    store.open.chat = '';
    store.save();
    render();
  };
  dlg.showModal();
}

// ---- turns ----

function setBusy(b) {
  busy = b;
  const ready = !!loaded && !b;
  const chat = loaded ? currentChat() : null;
  const last = chat && chat.messages[chat.messages.length - 1];
  $('input').disabled = !ready;
  $('send').disabled = !ready;
  $('stop').hidden = !b;
  $('regen').disabled = !ready || !last || last.role !== 'assistant' || last.greeting;
  $('edit').disabled = !ready || !chat || !chat.messages.some((m) => m.role === 'user');
}

function dropSession(chatID) {
  const s = sessions.get(chatID);
  sessions.delete(chatID);
  if (s && loaded) ask('close', { session: s.sid }).catch(() => {});
}

function turnParams(m) {
  return { temperature: m.temperature, top_p: m.topP, seed: m.seed };
}

// ensureSession returns a worker session that holds exactly the first n
// messages of chat, rebuilding it by replay when needed.
async function ensureSession(chat, n) {
  const s = sessions.get(chat.id);
  if (s && s.count === n) return s.sid;
  if (s) dropSession(chat.id);
  const ch = store.character(chat.character);
  const { session } = await ask('session', { system: systemPrompt(ch || {}) });
  const msgs = chat.messages.slice(0, n);
  const turns = msgs.filter((m) => m.role === 'user').length;
  let done = 0;
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    if (m.role !== 'user') continue;
    const r = msgs[i + 1];
    if (!r || r.role !== 'assistant') break;
    status(`Restoring the conversation: turn ${++done} of ${turns}…`);
    await ask('send', { session, quiet: true, turn: { text: m.text, max_tokens: r.tokens, ...turnParams(r) } });
  }
  sessions.set(chat.id, { sid: session, count: n });
  return session;
}

async function sendTurn(chat, text) {
  const st = store.settings;
  const greedy = !(st.temperature > 0);
  const reply = { role: 'assistant', text: '', temperature: st.temperature, topP: st.topP, seed: greedy ? 0 : 1 + Math.floor(Math.random() * 0x7ffffffe) };
  setBusy(true);
  showError('');
  try {
    const sid = await ensureSession(chat, chat.messages.length);
    chat.messages.push({ role: 'user', text });
    renderMessages();
    const ch = store.character(chat.character);
    const node = messageNode(reply, ch ? ch.name : '');
    node.classList.add('streaming');
    $('messages').append(node);
    const textNode = node.querySelector('.text');
    hooks.streamed = [];
    status('Thinking…');
    const t0 = performance.now();
    let n = 0;
    const r = await ask('send', { session: sid, turn: { text, max_tokens: st.maxTokens, ...turnParams(reply) } }, (tok) => {
      hooks.streamed.push(tok.token);
      textNode.textContent += tok.text;
      n++;
      if (n % 4 === 0) status(`${n} tokens, ${(n / ((performance.now() - t0) / 1000)).toFixed(1)} tokens/s`);
      $('messages').scrollTop = $('messages').scrollHeight;
    });
    Object.assign(reply, { text: r.text, tokens: r.tokens.length, finish: r.finish });
    chat.messages.push(reply);
    sessions.set(chat.id, { sid, count: chat.messages.length });
    store.touch(chat);
    renderChats();
    hooks.lastReply = r;
    hooks.lastStats = r.stats;
    const s = r.stats;
    status(`${r.tokens.length} tokens in ${(s.ms / 1000).toFixed(2)} s: ${s.decodeTokensPerSec.toFixed(1)} tokens/s decoding, ` +
      `first token after ${(s.firstMs / 1000).toFixed(2)} s; prompt ${r.prompt_tokens} tokens new, ${r.cached_tokens} cached` +
      (r.finish === 'length' ? '; stopped at the token limit' : r.finish === 'cancelled' ? '; stopped' : ''));
  } catch (e) {
    // The turn is not taken: the chat is left as it was.
    if (chat.messages.length && chat.messages[chat.messages.length - 1].role === 'user' && chat.messages[chat.messages.length - 1].text === text) chat.messages.pop();
    sessions.delete(chat.id);
    $('input').value = text;
    if (/does not fit the context/.test(e.message)) {
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
    sendTurn(chat, text);
  };
  $('input').onkeydown = (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('composer').requestSubmit(); }
  };
  $('stop').onclick = () => worker && worker.postMessage({ op: 'cancel' });
  $('regen').onclick = () => {
    const chat = currentChat();
    const last = chat.messages[chat.messages.length - 1];
    if (!last || last.role !== 'assistant' || last.greeting) return;
    readSettings();
    chat.messages.pop();
    const user = chat.messages.pop();
    renderMessages();
    sendTurn(chat, user.text);
  };
  $('edit').onclick = () => {
    const chat = currentChat();
    let i = chat.messages.length - 1;
    while (i >= 0 && chat.messages[i].role !== 'user') i--;
    if (i < 0) return;
    // The last user message goes back into the box; sending it replaces it.
    $('input').value = chat.messages[i].text;
    chat.messages.splice(i);
    store.touch(chat);
    renderMessages();
    setBusy(false);
    $('input').focus();
  };
}

wire();
render();
initModels();
