// The page's IndexedDB database, shared by the page and the worker. One
// database holds everything a person would not want to lose, so that a
// chat's messages and its saved session are written in one transaction:
//
//   meta        key -> value: settings, what was last open, migration marks
//   characters  id -> character card (store.js)
//   chats       id -> chat: its messages, swipes, title (store.js)
//   avatars     character id -> Blob (an image)
//   saves       "<model>/<manifest sha256>/<chat>" -> {bytes, modified}: saved
//               sessions with their KV (saves.js)
//   files       "/models/<name>/<file>" -> {bytes, size}: model files where
//               the Cache API is missing (pages served over plain http)
//
// IndexedDB works in every context a page runs in, secure or not, which the
// Cache API, OPFS and crypto.subtle do not.

export const DB_NAME = 'wick';
const VERSION = 1;
export const STORES = ['meta', 'characters', 'chats', 'avatars', 'saves', 'files'];

let opening = null;

// openDB opens (and on first use creates) the database.
export function openDB() {
  if (opening) return opening;
  opening = new Promise((resolve, reject) => {
    if (typeof indexedDB === 'undefined') {
      reject(new Error('this browser offers no IndexedDB, so chats cannot be kept'));
      return;
    }
    const req = indexedDB.open(DB_NAME, VERSION);
    req.onupgradeneeded = () => {
      for (const s of STORES) if (!req.result.objectStoreNames.contains(s)) req.result.createObjectStore(s);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new Error(`IndexedDB ${DB_NAME}: ${req.error && req.error.message}`));
    req.onblocked = () => reject(new Error(`IndexedDB ${DB_NAME} is held open by another tab of an older version; close it and reload`));
  });
  opening.catch(() => { opening = null; });
  return opening;
}

// tx runs f(stores, set) in one transaction over the named stores and
// resolves when it has committed (with what f passed to set), so that a
// write is durable once the promise resolves, and either all of it happens
// or none.
export async function tx(names, mode, f) {
  const db = await openDB();
  return new Promise((resolve, reject) => {
    const t = db.transaction(names, mode);
    let result;
    const stores = Object.fromEntries(names.map((n) => [n, t.objectStore(n)]));
    try {
      f(stores, (v) => { result = v; });
    } catch (e) {
      t.abort();
      reject(e);
      return;
    }
    t.oncomplete = () => resolve(result);
    t.onerror = t.onabort = () => reject(new Error(`IndexedDB (${names.join(', ')}): ${t.error ? t.error.message : 'aborted'}`));
  });
}

// get reads one record (undefined when absent).
export function get(store, key) {
  return tx([store], 'readonly', (s, set) => {
    const r = s[store].get(key);
    r.onsuccess = () => set(r.result);
  });
}

// all reads every [key, value] of a store.
export function all(store) {
  return tx([store], 'readonly', (s, set) => {
    const out = [];
    const r = s[store].openCursor();
    r.onsuccess = () => {
      const c = r.result;
      if (!c) { set(out); return; }
      out.push([c.key, c.value]);
      c.continue();
    };
  });
}
