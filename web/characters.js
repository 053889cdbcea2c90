// The characters (in the side bar): the list, the edit dialog, shared
// cards in and out (V1-V3, JSON or PNG, read and written by engine/chat
// through tools.js), pictures, deleting with an offer to undo, and each
// character's system prompt and greetings as the module renders them.

import { newID } from './store.js';
import { readCard, writeCard, cardPrompt } from './tools.js';
import { $, showError, toast, downloadFile, safeName, closeDrawer, button, readFile } from './ui.js';

// store is the page's Store; page is what the characters need of the
// chat: render(), dropSession(chatID) when a card's change makes a chat's
// session stale, and forgetChat(chatID) when a chat is deleted
// (bindCharacters).
let store = null;
let page = null;

const prompts = new Map(); // character id -> {key, system, greetings}

// cardOf is a character as the module renders it (wasm/module/cards.go).
function cardOf(ch) {
  return {
    name: ch.name, persona: ch.persona || '', greeting: ch.greeting || '', alternate_greetings: ch.alternate_greetings || [],
    personality: ch.personality || '', scenario: ch.scenario || '', examples: ch.examples || '',
    instructions: ch.instructions || '', post_history: ch.post_history || '',
    user_name: store.settings.userName || '', user_persona: store.settings.userPersona || '',
  };
}

// promptOf returns a character's system prompt and greetings, rendered by
// engine/chat through the module (cached until the card changes).
export async function promptOf(ch) {
  const card = cardOf(ch);
  const key = JSON.stringify(card);
  const p = prompts.get(ch.id);
  if (p && p.key === key) return p;
  const r = await cardPrompt(card);
  const out = { key, system: r.system, greetings: r.greetings || [], postHistory: r.post_history || '' };
  prompts.set(ch.id, out);
  return out;
}

// avatarNode is a character's picture, or the first letter of its name.
export function avatarNode(ch, cls = 'avatar') {
  const blob = ch && store.avatars.get(ch.id);
  if (blob) {
    const img = document.createElement('img');
    img.className = cls;
    img.alt = '';
    img.src = avatarURL(ch.id, blob);
    return img;
  }
  const span = document.createElement('span');
  span.className = cls + ' letter';
  span.textContent = ch ? (ch.name || '?').trim().slice(0, 1).toUpperCase() : '';
  return span;
}

// avatarURL is an object URL of a character's picture, made once per
// picture (and the last one revoked), not at every render.
const avatarURLs = new Map();
export function avatarURL(id, blob) {
  const have = avatarURLs.get(id);
  if (have && have.blob === blob) return have.url;
  if (have) URL.revokeObjectURL(have.url);
  const url = URL.createObjectURL(blob);
  avatarURLs.set(id, { blob, url });
  return url;
}

// sharedCardOf returns a character as engine/chat's SharedCard, with what
// its imported card held (character_book, extensions...) carried over.
function sharedCardOf(ch) {
  const src = ch.source || {};
  return {
    ...src, spec: src.spec || '',
    name: ch.name, description: ch.persona || '', personality: ch.personality || '', scenario: ch.scenario || '',
    first_mes: ch.greeting || '', mes_example: ch.examples || '', system_prompt: ch.instructions || '',
    post_history_instructions: ch.post_history || '', alternate_greetings: ch.alternate_greetings || [],
    tags: src.tags || [], creator: src.creator || '', creator_notes: src.creator_notes || '', character_version: src.character_version || '',
  };
}

// importCard adds the character of a shared card file (JSON or PNG bytes);
// a PNG is also its picture.
export async function importCard(bytes, fileName = '') {
  const sc = await readCard(bytes);
  const ch = {
    id: newID('c'), name: sc.name, persona: sc.description || '', greeting: sc.first_mes || '',
    alternate_greetings: sc.alternate_greetings || [], personality: sc.personality || '', scenario: sc.scenario || '',
    examples: sc.mes_example || '', instructions: sc.system_prompt || '', post_history: sc.post_history_instructions || '',
    source: sc, imported: fileName,
  };
  await store.putCharacter(ch);
  if (bytes[0] === 0x89 && bytes[1] === 0x50) await store.setAvatar(ch.id, new Blob([bytes], { type: 'image/png' }));
  store.open.character = ch.id;
  store.open.chat = '';
  store.save();
  await page.render();
  return ch.id;
}

// exportCard returns a character as a shared card file: format 'json'
// (V2) or 'png' (V3, over its picture where that is a PNG).
export async function exportCard(id, format) {
  const ch = store.character(id);
  if (!ch) throw new Error(`no character ${id}`);
  if (format === 'json') return writeCard(sharedCardOf(ch), { spec: 'chara_card_v2' });
  let image = null;
  const blob = store.avatars.get(id);
  if (blob && blob.type === 'image/png') image = new Uint8Array(await blob.arrayBuffer());
  return writeCard(sharedCardOf(ch), { spec: 'chara_card_v3', png: true, image });
}

export function renderCharacters() {
  const ul = $('characters');
  ul.replaceChildren(...store.visibleCharacters().map((c) => {
    const li = document.createElement('li');
    li.className = 'character' + (c.id === store.open.character ? ' selected' : '');
    li.dataset.id = c.id;
    const name = document.createElement('span');
    name.className = 'label';
    name.textContent = c.name;
    const edit = button('Edit', 'Edit this character', (ev) => { ev.stopPropagation(); editCharacter(c); });
    edit.className = 'edit';
    li.append(avatarNode(c), name, edit);
    li.onclick = () => { store.open.character = c.id; store.open.chat = ''; store.save(); closeDrawer(); page.render(); };
    return li;
  }));
}

export function editCharacter(card) {
  const dlg = $('card-dialog');
  const isNew = !card;
  card = card || { id: newID('c'), name: '', persona: '', greeting: '' };
  const fields = { name: 'card-name', persona: 'card-persona', greeting: 'card-greeting', personality: 'card-personality', scenario: 'card-scenario', examples: 'card-examples', instructions: 'card-instructions', post_history: 'card-post' };
  for (const [k, id] of Object.entries(fields)) $(id).value = card[k] || '';
  $('card-alternates').value = (card.alternate_greetings || []).join('\n---\n');
  let avatar = store.avatars.get(card.id) || null;
  const showAvatar = () => {
    const img = $('card-avatar');
    if (avatar) img.src = URL.createObjectURL(avatar); else img.removeAttribute('src');
  };
  showAvatar();
  $('card-avatar-file').value = '';
  $('card-avatar-file').onchange = () => { const f = $('card-avatar-file').files[0]; if (f) { avatar = f; showAvatar(); } };
  for (const id of ['card-delete', 'card-export-json', 'card-export-png']) $(id).hidden = isNew;
  dlg.onclose = async () => {
    const rv = dlg.returnValue;
    try {
      if (rv === 'save') {
        const next = { ...card };
        for (const [k, id] of Object.entries(fields)) next[k] = $(id).value;
        next.name = next.name.trim() || 'Unnamed';
        next.alternate_greetings = $('card-alternates').value.split(/\n\s*---\s*\n/).map((s) => s.trim()).filter(Boolean);
        // A changed card changes the system prompt: its chats' sessions are
        // rebuilt (from their saves, then brought up to the new prompt).
        for (const c of store.chatsOf(card.id)) page.dropSession(c.id);
        await store.putCharacter(next);
        if (avatar !== (store.avatars.get(card.id) || null)) await store.setAvatar(card.id, avatar);
        store.open.character = next.id;
        if (isNew) store.open.chat = '';
      } else if (rv === 'delete') {
        deleteCharacter(card);
      } else if (rv === 'export-json' || rv === 'export-png') {
        const fmt = rv.slice(7);
        downloadFile(`${safeName(card.name)}.${fmt}`, await exportCard(card.id, fmt), fmt === 'png' ? 'image/png' : 'application/json');
      }
    } catch (e) {
      showError(e.message);
    }
    store.save();
    page.render();
  };
  dlg.showModal();
}

// deleteCharacter hides a character and its chats at once, and removes
// them when the offer to undo lapses.
function deleteCharacter(card) {
  const ch = store.character(card.id);
  if (!ch) return;
  const chats = store.chats.filter((c) => c.character === ch.id);
  ch.deleting = true;
  for (const c of chats) c.deleting = true;
  if (store.open.character === ch.id) {
    const next = store.visibleCharacters()[0];
    store.open.character = next ? next.id : '';
    store.open.chat = '';
  }
  toast(`Deleted ${ch.name} and ${chats.length} chat${chats.length === 1 ? '' : 's'}.`, () => {
    delete ch.deleting;
    for (const c of chats) delete c.deleting;
    store.open.character = ch.id;
    store.save();
    page.render();
  }, () => {
    for (const c of chats) page.forgetChat(c.id);
    store.deleteCharacter(ch.id);
  });
}

// renderedPrompt returns a character's prompt and greetings as promptOf
// last rendered them, or undefined before it has.
export function renderedPrompt(id) { return prompts.get(id); }

// bindCharacters wires the characters' controls.
export function bindCharacters(s, chat) {
  store = s;
  page = chat;
  $('new-character').onclick = () => editCharacter(null);
  $('import-character').onclick = () => $('import-file').click();
  $('import-file').onchange = async () => {
    try {
      const f = await readFile($('import-file'));
      if (f) { await importCard(f.bytes, f.name); closeDrawer(); }
    } catch (e) { showError(`Import a character: ${e.message}`); closeDrawer(); }
  };
}
