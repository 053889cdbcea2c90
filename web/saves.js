// Saved sessions: the bytes wick_save returns (a conversation's messages,
// tokens and KV, in the engine's checked, versioned format), kept so that a
// chat survives a page reload without recomputing it. They live in the
// page's IndexedDB database (db.js), store saves, keyed by the model (its
// name and the sha256 of its manifest, since a save holds KV only that exact
// model can use) and the chat:
//
//   "<model>/<manifest sha256>/<chat>" -> {bytes, modified}
//
// The page writes a turn's save in the same transaction as the chat's
// messages (store.js commitTurn), so a restore never finds KV for messages
// the chat lacks. Earlier versions of the page kept saves in the origin
// private file system (OPFS, wick-chats/<model>/<sha256>/<chat>.wick); those
// are copied over once, the first time saves are opened.

import { tx, get, all as allRecords } from './db.js';

const LEGACY_DIR = 'wick-chats';
const EXT = '.wick';

function checkName(what, s) {
  if (typeof s !== 'string' || !s || s.length > 200) throw new Error(`saved chats: ${what} ${JSON.stringify(s)} is not a usable name`);
  return s;
}

// saveKey is the record key of chat's save for key {model, hash}.
export function saveKey({ model, hash }, chat) {
  return `${encodeURIComponent(checkName('model', model))}/${checkName('manifest hash', hash)}/${encodeURIComponent(checkName('chat id', chat))}`;
}

function parseKey(k) {
  const [m, hash, chat] = String(k).split('/');
  return { model: decodeURIComponent(m), hash, chat: decodeURIComponent(chat) };
}

// saveRecord is what the saves store keeps for bytes.
export const saveRecord = (bytes) => ({ bytes: bytes.slice(), modified: Date.now() });

let migrated = null;

// openSaves returns the saves store, once the old OPFS saves are copied in.
export async function openSaves() {
  if (!migrated) migrated = migrateOPFS().catch((e) => console.warn(`saved chats: the old saves could not be copied: ${e.message}`));
  await migrated;
  return saves;
}

// migrateOPFS copies the saves an earlier page kept in OPFS into the
// database, once (a meta mark says it is done); an entry already in the
// database wins. The OPFS files are left where they are.
async function migrateOPFS() {
  if (await get('meta', 'opfsMigrated')) return;
  const found = [];
  if (typeof navigator !== 'undefined' && navigator.storage && navigator.storage.getDirectory) {
    let root = null;
    try {
      root = await (await navigator.storage.getDirectory()).getDirectoryHandle(LEGACY_DIR);
    } catch { /* none, or no OPFS here */ }
    if (root) {
      for await (const [mname, m] of root.entries()) {
        if (m.kind !== 'directory') continue;
        for await (const [hash, d] of m.entries()) {
          if (d.kind !== 'directory') continue;
          for await (const [name, f] of d.entries()) {
            if (f.kind !== 'file' || !name.endsWith(EXT)) continue;
            const file = await f.getFile();
            found.push({ key: `${mname}/${hash}/${name.slice(0, -EXT.length)}`, value: { bytes: new Uint8Array(await file.arrayBuffer()), modified: file.lastModified } });
          }
        }
      }
    }
  }
  await tx(['saves', 'meta'], 'readwrite', (s) => {
    for (const { key, value } of found) {
      const r = s.saves.get(key);
      r.onsuccess = () => { if (!r.result) s.saves.put(value, key); };
    }
    s.meta.put(Date.now(), 'opfsMigrated');
  });
}

const saves = {
  kind: 'indexeddb',

  // write stores bytes as chat's save for key, replacing the old one; a put
  // is one transaction, so a crash leaves the old save or the new one.
  write(key, chat, bytes) {
    return tx(['saves'], 'readwrite', (s) => s.saves.put(saveRecord(bytes), saveKey(key, chat)));
  },

  // read returns chat's save for key, or null.
  async read(key, chat) {
    const r = await get('saves', saveKey(key, chat));
    return r ? new Uint8Array(r.bytes) : null;
  },

  // all lists every save: {model, hash, chat, bytes, modified}.
  async all() {
    return (await allRecords('saves')).map(([k, v]) => ({ ...parseKey(k), bytes: v.bytes.byteLength, modified: v.modified }));
  },

  // remove deletes chat's saves under every key.
  async remove(chat) {
    const keys = (await this.all()).filter((s) => s.chat === chat).map((s) => saveKey(s, chat));
    await tx(['saves'], 'readwrite', (s) => { for (const k of keys) s.saves.delete(k); });
  },
};
