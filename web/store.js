// The page's own data, kept in localStorage so that it survives reloads:
// character cards, chats (their messages; each reply with its token ids and
// the model they belong to, so that a chat whose saved session is missing or
// refused is rebuilt from its messages exactly), settings and what was last
// open. It is small (text and ids); the models live in the Cache API
// (models.js), the saved sessions with their KV in OPFS (saves.js).

const KEY = 'wick.v1';

const defaults = () => ({
  characters: [{
    id: 'c-default', name: 'Maren',
    persona: 'A baker who climbs the lighthouse every evening to watch the boats come in.',
    greeting: 'You are late. The bread is still warm, sit down.',
  }],
  chats: [],
  settings: { temperature: 0.8, topP: 0.95, maxTokens: 256, backend: '' },
  open: { model: '', character: 'c-default', chat: '' },
});

export function newID(prefix) {
  return prefix + '-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
}

export class Store {
  constructor() {
    this.data = defaults();
    try {
      const saved = JSON.parse(localStorage.getItem(KEY) || 'null');
      if (saved && Array.isArray(saved.characters) && Array.isArray(saved.chats)) {
        this.data = { ...defaults(), ...saved, settings: { ...defaults().settings, ...saved.settings } };
      }
    } catch { /* a damaged entry starts afresh rather than breaking the page */ }
  }

  save() {
    try {
      localStorage.setItem(KEY, JSON.stringify(this.data));
    } catch (e) {
      throw new Error(`Could not save the chats (browser storage is full or blocked): ${e.message}`);
    }
  }

  get settings() { return this.data.settings; }
  get open() { return this.data.open; }
  get characters() { return this.data.characters; }
  character(id) { return this.data.characters.find((c) => c.id === id) || null; }
  chat(id) { return this.data.chats.find((c) => c.id === id) || null; }
  chatsOf(characterID) { return this.data.chats.filter((c) => c.character === characterID).sort((a, b) => b.updated - a.updated); }

  putCharacter(card) {
    const i = this.data.characters.findIndex((c) => c.id === card.id);
    if (i >= 0) this.data.characters[i] = card; else this.data.characters.push(card);
    this.save();
  }

  // deleteCharacter removes a card and its chats.
  deleteCharacter(id) {
    this.data.characters = this.data.characters.filter((c) => c.id !== id);
    this.data.chats = this.data.chats.filter((c) => c.character !== id);
    this.save();
  }

  // newChat starts a chat with a character; its greeting opens it.
  newChat(character) {
    const chat = { id: newID('chat'), character: character.id, title: 'New chat', created: Date.now(), updated: Date.now(), messages: [] };
    if (character.greeting) chat.messages.push({ role: 'assistant', text: character.greeting, greeting: true });
    this.data.chats.push(chat);
    this.save();
    return chat;
  }

  deleteChat(id) {
    this.data.chats = this.data.chats.filter((c) => c.id !== id);
    this.save();
  }

  touch(chat) {
    chat.updated = Date.now();
    const first = chat.messages.find((m) => m.role === 'user');
    if (first) chat.title = first.text.slice(0, 40);
    this.save();
  }
}
