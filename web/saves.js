// Saved sessions: the bytes wick_save returns (a conversation's messages,
// tokens and KV, in the engine's checked, versioned format), kept so that a
// chat survives a page reload without recomputing it. They live in the
// origin private file system (OPFS), or in IndexedDB where a browser lacks
// it, keyed by the model (its name and the sha256 of its manifest, since a
// save holds KV only that exact model can use) and the chat:
//
//   OPFS       wick-chats/<model>/<manifest sha256>/<chat>.wick
//   IndexedDB  database wick-chats, store saves, key "<model>/<sha256>/<chat>"
//
// Writes are atomic: OPFS bytes go to a temporary file that is then moved
// over the old save (the move replaces it in one step), and an IndexedDB put
// is one transaction, so a crash or a closed tab leaves the old save or the
// new one, never a mix. Both the worker (which saves after every turn) and
// the page (which lists and deletes saves) use this module; both see the
// same origin's storage.

const DIR = 'wick-chats';
const EXT = '.wick';

// A key names one saved chat: the model and manifest it belongs to.
// names are checked here because they become file names.
function checkName(what, s) {
  if (typeof s !== 'string' || !s || s.length > 200) throw new Error(`saved chats: ${what} ${JSON.stringify(s)} is not a usable name`);
  return s;
}

const modelDir = (model) => encodeURIComponent(checkName('model', model));
const fileOf = (chat) => encodeURIComponent(checkName('chat id', chat)) + EXT;
const chatOf = (file) => decodeURIComponent(file.slice(0, -EXT.length));

// openSaves returns the store this browser offers: OPFS where
// navigator.storage.getDirectory exists and works, else IndexedDB.
export async function openSaves() {
  if (navigator.storage && navigator.storage.getDirectory) {
    try {
      const root = await navigator.storage.getDirectory();
      return new OPFSSaves(await root.getDirectoryHandle(DIR, { create: true }));
    } catch { /* private mode and some embeddings refuse OPFS: use IndexedDB */ }
  }
  if (typeof indexedDB === 'undefined') throw new Error('saved chats: this browser offers neither OPFS nor IndexedDB');
  return new IDBSaves(await openDB());
}

// OPFSSaves keeps each save as one file.
class OPFSSaves {
  constructor(root) { this.root = root; this.kind = 'opfs'; }

  async #dir({ model, hash }, create) {
    try {
      const m = await this.root.getDirectoryHandle(modelDir(model), { create });
      return await m.getDirectoryHandle(checkName('manifest hash', hash), { create });
    } catch (e) {
      if (!create && e.name === 'NotFoundError') return null;
      throw e;
    }
  }

  // write stores bytes as chat's save for key, replacing the old one.
  async write(key, chat, bytes) {
    const dir = await this.#dir(key, true);
    const name = fileOf(chat);
    const tmp = `${name}.tmp-${Math.random().toString(36).slice(2, 10)}`;
    const fh = await dir.getFileHandle(tmp, { create: true });
    try {
      const w = await fh.createWritable();
      await w.write(bytes);
      await w.close();
      await fh.move(dir, name);
    } catch (e) {
      await dir.removeEntry(tmp).catch(() => {});
      throw e;
    }
  }

  // read returns chat's save for key, or null.
  async read(key, chat) {
    const dir = await this.#dir(key, false);
    if (!dir) return null;
    try {
      const f = await (await dir.getFileHandle(fileOf(chat))).getFile();
      return new Uint8Array(await f.arrayBuffer());
    } catch (e) {
      if (e.name === 'NotFoundError') return null;
      throw e;
    }
  }

  // all lists every save: {model, hash, chat, bytes, modified}.
  async all() {
    const out = [];
    for await (const [mname, m] of this.root.entries()) {
      if (m.kind !== 'directory') continue;
      for await (const [hash, d] of m.entries()) {
        if (d.kind !== 'directory') continue;
        for await (const [name, f] of d.entries()) {
          if (f.kind !== 'file' || !name.endsWith(EXT)) continue;
          const file = await f.getFile();
          out.push({ model: decodeURIComponent(mname), hash, chat: chatOf(name), bytes: file.size, modified: file.lastModified });
        }
      }
    }
    return out;
  }

  // remove deletes chat's saves under every key.
  async remove(chat) {
    for (const s of await this.all()) {
      if (s.chat !== chat) continue;
      const dir = await this.#dir(s, false);
      if (dir) await dir.removeEntry(fileOf(chat)).catch(() => {});
    }
  }
}

function openDB() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DIR, 1);
    req.onupgradeneeded = () => req.result.createObjectStore('saves');
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new Error(`saved chats: IndexedDB: ${req.error && req.error.message}`));
  });
}

// IDBSaves keeps each save as one record; a put is atomic by itself.
class IDBSaves {
  constructor(db) { this.db = db; this.kind = 'indexeddb'; }

  #tx(mode, f) {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction('saves', mode);
      let result;
      f(tx.objectStore('saves'), (v) => { result = v; });
      tx.oncomplete = () => resolve(result);
      tx.onerror = tx.onabort = () => reject(new Error(`saved chats: IndexedDB: ${tx.error && tx.error.message}`));
    });
  }

  static key({ model, hash }, chat) { return `${modelDir(model)}/${checkName('manifest hash', hash)}/${encodeURIComponent(checkName('chat id', chat))}`; }

  write(key, chat, bytes) {
    return this.#tx('readwrite', (st) => st.put({ bytes: bytes.slice(), modified: Date.now() }, IDBSaves.key(key, chat)));
  }

  read(key, chat) {
    return this.#tx('readonly', (st, set) => {
      const r = st.get(IDBSaves.key(key, chat));
      r.onsuccess = () => set(r.result ? new Uint8Array(r.result.bytes) : null);
    });
  }

  all() {
    return this.#tx('readonly', (st, set) => {
      const out = [];
      const r = st.openCursor();
      r.onsuccess = () => {
        const c = r.result;
        if (!c) { set(out); return; }
        const [m, hash, chat] = String(c.key).split('/');
        out.push({ model: decodeURIComponent(m), hash, chat: decodeURIComponent(chat), bytes: c.value.bytes.byteLength, modified: c.value.modified });
        c.continue();
      };
    });
  }

  async remove(chat) {
    const keys = (await this.all()).filter((s) => s.chat === chat).map((s) => IDBSaves.key(s, chat));
    await this.#tx('readwrite', (st) => { for (const k of keys) st.delete(k); });
  }
}
