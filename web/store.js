// The page's own data: character cards (with avatars), chats (their
// messages and alternative replies; each reply with its token ids and the
// model they belong to, so that a chat whose saved session is missing or
// refused is rebuilt from its messages exactly), settings and what was last
// open. It lives in IndexedDB (db.js) and is held in memory while the page
// runs; every change is written through at once, one record per character
// or chat.
//
// Earlier versions kept all of it in localStorage under "wick.v1". That
// entry is migrated once: its characters and chats are added, its settings
// taken, and the entry is moved to "wick.v1.migrated" (kept, not deleted),
// all after the database has committed them.

import { tx, all } from './db.js';
import { saveKey, saveRecord } from './saves.js';

const LEGACY_KEY = 'wick.v1';

export const defaultSettings = () => ({ temperature: 0.8, topP: 0.95, maxTokens: 256, backend: '', userName: '', userPersona: '' });

// The first character, the same as engine/chat's DefaultCard (wick chat's).
const defaultCharacter = () => ({
  id: 'c-default', name: 'Maren',
  persona: 'A baker who climbs the lighthouse every evening to watch the boats come in.',
  greeting: 'You are late. The bread is still warm, sit down.',
});

export function newID(prefix) {
  return prefix + '-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
}

export class Store {
  constructor() {
    this.characters = [];
    this.chats = [];
    this.settings = defaultSettings();
    this.open = { model: '', character: '', chat: '' };
    this.avatars = new Map(); // character id -> Blob
    this.onError = (e) => console.error(e);
  }

  // load reads everything from the database, migrating localStorage first.
  static async load() {
    const s = new Store();
    await s.#migrate();
    const [chars, chats, meta, avatars] = await Promise.all([all('characters'), all('chats'), all('meta'), all('avatars')]);
    s.characters = chars.map(([, v]) => v).sort((a, b) => (a.order || 0) - (b.order || 0));
    s.chats = chats.map(([, v]) => v);
    const m = Object.fromEntries(meta);
    s.settings = { ...defaultSettings(), ...(m.settings || {}) };
    s.open = { ...s.open, ...(m.open || {}) };
    s.avatars = new Map(avatars);
    if (!m.seeded) {
      // A first visit gets the default character.
      await tx(['characters', 'meta'], 'readwrite', (st) => {
        if (!s.characters.length) {
          const c = { ...defaultCharacter(), order: 0 };
          st.characters.put(c, c.id);
          s.characters.push(c);
          s.open.character = c.id;
          st.meta.put(s.open, 'open');
        }
        st.meta.put(true, 'seeded');
      });
    }
    if (!s.character(s.open.character) && s.characters.length) s.open.character = s.characters[0].id;
    return s;
  }

  // #migrate moves localStorage's "wick.v1" into the database, once.
  async #migrate() {
    let raw = null;
    try { raw = localStorage.getItem(LEGACY_KEY); } catch { return; }
    if (!raw) return;
    let old;
    try { old = JSON.parse(raw); } catch { old = null; }
    if (!old || !Array.isArray(old.characters) || !Array.isArray(old.chats)) return;
    await tx(['characters', 'chats', 'meta'], 'readwrite', (st) => {
      old.characters.forEach((c, i) => { if (c && c.id) st.characters.put({ order: i, ...c }, c.id); });
      for (const c of old.chats) if (c && c.id) st.chats.put(c, c.id);
      if (old.settings) st.meta.put({ ...defaultSettings(), ...old.settings }, 'settings');
      if (old.open) st.meta.put(old.open, 'open');
      st.meta.put(true, 'seeded');
    });
    // Only once the database holds it: keep the old entry under another
    // name, so it is not migrated again and not lost either.
    localStorage.setItem(LEGACY_KEY + '.migrated', raw);
    localStorage.removeItem(LEGACY_KEY);
  }

  #write(stores, f) {
    const p = tx(stores, 'readwrite', f);
    p.catch((e) => this.onError(new Error(`Could not save to the browser's storage: ${e.message}`)));
    return p;
  }

  // save writes the settings and what is open.
  save() {
    const settings = { ...this.settings }, open = { ...this.open };
    return this.#write(['meta'], (st) => { st.meta.put(settings, 'settings'); st.meta.put(open, 'open'); });
  }

  character(id) { return this.characters.find((c) => c.id === id) || null; }
  chat(id) { return this.chats.find((c) => c.id === id) || null; }
  chatsOf(characterID) { return this.chats.filter((c) => c.character === characterID && !c.deleting).sort((a, b) => b.updated - a.updated); }
  visibleCharacters() { return this.characters.filter((c) => !c.deleting); }

  putCharacter(card) {
    const i = this.characters.findIndex((c) => c.id === card.id);
    if (i >= 0) this.characters[i] = card;
    else this.characters.push({ order: this.characters.length, ...card });
    const rec = structuredClone(this.character(card.id));
    delete rec.deleting;
    return this.#write(['characters'], (st) => st.characters.put(rec, rec.id));
  }

  setAvatar(id, blob) {
    if (blob) this.avatars.set(id, blob); else this.avatars.delete(id);
    return this.#write(['avatars'], (st) => (blob ? st.avatars.put(blob, id) : st.avatars.delete(id)));
  }

  // deleteCharacter removes a card, its avatar and its chats.
  deleteCharacter(id) {
    const chats = this.chats.filter((c) => c.character === id).map((c) => c.id);
    this.characters = this.characters.filter((c) => c.id !== id);
    this.chats = this.chats.filter((c) => c.character !== id);
    this.avatars.delete(id);
    return this.#write(['characters', 'chats', 'avatars'], (st) => {
      st.characters.delete(id);
      st.avatars.delete(id);
      for (const c of chats) st.chats.delete(c);
    });
  }

  // newChat starts a chat with a character; its greeting (with its
  // alternatives as swipes) opens it. greetings are the substituted texts.
  newChat(character, greetings = []) {
    const chat = { id: newID('chat'), character: character.id, title: 'New chat', created: Date.now(), updated: Date.now(), messages: [] };
    if (greetings.length) {
      chat.messages.push({ role: 'assistant', text: greetings[0], greeting: true, swipes: greetings.map((text) => ({ text })), swipe: 0 });
    }
    this.chats.push(chat);
    this.putChat(chat);
    return chat;
  }

  // addChat stores an imported chat.
  addChat(chat) {
    this.chats.push(chat);
    return this.putChat(chat);
  }

  putChat(chat) {
    const rec = structuredClone(chat);
    delete rec.deleting;
    return this.#write(['chats'], (st) => st.chats.put(rec, rec.id));
  }

  deleteChat(id) {
    this.chats = this.chats.filter((c) => c.id !== id);
    return this.#write(['chats'], (st) => st.chats.delete(id));
  }

  // touch marks chat changed and writes it.
  touch(chat) {
    chat.updated = Date.now();
    if (!chat.renamed) {
      const first = chat.messages.find((m) => m.role === 'user');
      if (first) chat.title = first.text.slice(0, 40);
    }
    return this.putChat(chat);
  }

  // commitTurn writes chat (after a turn) and the turn's save in one
  // transaction: after a crash both are there or neither, so a restored
  // session never holds KV for messages the chat lacks. save is {key, chat,
  // bytes} or null.
  commitTurn(chat, save) {
    chat.updated = Date.now();
    if (!chat.renamed) {
      const first = chat.messages.find((m) => m.role === 'user');
      if (first) chat.title = first.text.slice(0, 40);
    }
    const rec = structuredClone(chat);
    delete rec.deleting;
    return tx(save ? ['chats', 'saves'] : ['chats'], 'readwrite', (st) => {
      st.chats.put(rec, rec.id);
      if (save) st.saves.put(saveRecord(save.bytes), saveKey(save.key, save.chat));
    });
  }
}
