// The model download manager: lists the server's models, downloads one into
// the browser's storage (every shard's sha256 checked against the manifest
// before it is stored), resumes at the first shard not yet stored, and
// deletes a model. Both the page (to download) and the worker (to load) use
// it: storage is shared by every context of the origin. Keys are always the
// same-origin paths /models/NAME/FILE, wherever the bytes came from (a CDN
// named by the manifest's shard_base_url), so a model is found again after
// its server moves its shards.
//
// Files go into the Cache API where the page has it (a secure context:
// https, or http://localhost), else into IndexedDB (db.js, store files), so
// that a page served over plain http across a network still works on the
// CPU. sha256 comes from crypto.subtle, or else from the engine module.

import { parseManifest } from './manifest.js';
import { tx, get, all } from './db.js';
import { sha256 as moduleSHA256 } from './tools.js';

export const CACHE = 'wick-models-v1';
const COMPLETE = '.complete'; // marker key: the manifest whose files are all stored

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

export async function sha256(bytes) {
  if (globalThis.crypto && crypto.subtle) return hex(await crypto.subtle.digest('SHA-256', bytes));
  return moduleSHA256(bytes);
}

// fileStore is where model files live: {match(key) -> Uint8Array|null,
// has(key, size), put(key, bytes), delete(key), keys() -> [path]}.
async function fileStore() {
  if (typeof caches !== 'undefined') {
    const cache = await caches.open(CACHE);
    return {
      kind: 'cache',
      async match(key) { const r = await cache.match(key); return r ? new Uint8Array(await r.arrayBuffer()) : null; },
      async has(key, size) { const r = await cache.match(key); return !!r && (size === undefined || Number(r.headers.get('content-length')) === size); },
      put: (key, bytes) => cache.put(key, new Response(bytes, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) } })),
      delete: (key) => cache.delete(key),
      async keys() { return (await cache.keys()).map((r) => new URL(r.url).pathname); },
    };
  }
  return {
    kind: 'indexeddb',
    async match(key) { const r = await get('files', key); return r ? new Uint8Array(r.bytes) : null; },
    async has(key, size) { const r = await get('files', key); return !!r && (size === undefined || r.size === size); },
    put: (key, bytes) => tx(['files'], 'readwrite', (s) => s.files.put({ bytes, size: bytes.length }, key)),
    delete: (key) => tx(['files'], 'readwrite', (s) => s.files.delete(key)),
    async keys() { return (await all('files')).map(([k]) => k); },
  };
}

export function keyOf(name, file) { return `/models/${encodeURIComponent(name)}/${file}`; }

// Writing a model (a download, an import) holds the exclusive Web Lock named
// after its storage key, /models/NAME/, from before its first file until
// its commit or abort. A tab that closes mid-write loses the lock with it,
// so a model without .complete whose lock is free is an orphan
// (sweepIncomplete), and one whose lock is held is being written.
const lockName = (name) => keyOf(name, '');

// holdLock takes model name's lock, waiting for it, or with wait false only
// if it is free. It resolves to the function that releases it, or to null
// when wait is false and another context holds it. Where navigator.locks is
// missing (not a secure context) it resolves to a no-op at once: writers
// then go unlocked, and sweepIncomplete sweeps nothing.
function holdLock(name, { wait = true } = {}) {
  if (!(globalThis.navigator && navigator.locks)) return Promise.resolve(() => {});
  return new Promise((resolve, reject) => {
    navigator.locks.request(lockName(name), { mode: 'exclusive', ifAvailable: !wait }, (lock) => {
      if (!lock) { resolve(null); return undefined; }
      return new Promise((release) => resolve(release)); // held until release()
    }).catch(reject);
  });
}

// listModels returns the server's /models/ list.
export async function listModels() {
  const r = await fetch('/models/');
  if (r.status === 404) return []; // a static host of the page: models come from import only
  if (!r.ok) throw new Error(`the server's model list: HTTP ${r.status}`);
  return (await r.json()).models || [];
}

// plainQuotaError turns a storage failure into words a person can act on.
async function plainQuotaError(e, need) {
  if (!(e && (e.name === 'QuotaExceededError' || /quota/i.test(e.message || '')))) return e;
  let detail = '';
  try {
    const est = await navigator.storage.estimate();
    detail = ` This site may use ${mib(est.quota || 0)} and already uses ${mib(est.usage || 0)}; the model needs ${mib(need)}.`;
  } catch { /* no estimate */ }
  return new Error(`Not enough storage space for the model.${detail} Free disk space or delete another downloaded model, then try again.`);
}

// fetchChecked downloads url, reporting bytes as they arrive, and checks
// the size and sha256 the manifest gives before anything is stored.
async function fetchChecked(url, want, onBytes, signal) {
  const r = await fetch(url, { signal, cache: 'no-store' });
  if (!r.ok) throw new Error(`download ${want.file}: HTTP ${r.status}`);
  const out = new Uint8Array(want.size);
  let got = 0;
  const rd = r.body.getReader();
  for (;;) {
    const { done, value } = await rd.read();
    if (done) break;
    if (got + value.length > want.size) throw new Error(`download ${want.file}: the server sent more than the manifest's ${want.size} bytes; refused`);
    out.set(value, got);
    got += value.length;
    onBytes(value.length);
  }
  if (got !== want.size) throw new Error(`download ${want.file}: got ${got} of ${want.size} bytes`);
  const sum = await sha256(out);
  if (sum !== want.sha256) {
    throw Object.assign(new Error(`${want.file} is corrupted: its sha256 is ${sum.slice(0, 16)}…, the manifest says ${want.sha256.slice(0, 16)}…. Nothing was stored.`), { kind: 'corrupt' });
  }
  return out;
}

// download makes sure model `name` is fully stored. onProgress gets
// {bytes, totalBytes, shards, totalShards, file} as it goes. It returns the
// parsed manifest. Shards already stored are not fetched again.
export async function download(name, opts = {}) {
  // A second tab downloading the same model waits here, then finds its
  // files stored.
  const release = await holdLock(name);
  try {
    return await downloadLocked(name, opts);
  } finally {
    release();
  }
}

async function downloadLocked(name, { onProgress = () => {}, signal } = {}) {
  const cache = await fileStore();
  const mr = await fetch(keyOf(name, 'manifest.pb'), { signal });
  if (!mr.ok) throw new Error(`model ${name}: manifest: HTTP ${mr.status}`);
  const manifestBytes = new Uint8Array(await mr.arrayBuffer());
  const m = parseManifest(manifestBytes);
  const files = [...m.shards, m.tokenizer];
  const totalBytes = files.reduce((a, f) => a + f.size, 0);
  if (navigator.storage && navigator.storage.persist) {
    // Ask once that the browser not evict the model under storage pressure.
    try { await navigator.storage.persist(); } catch { /* not granted: still works */ }
  }
  const p = { bytes: 0, totalBytes, shards: 0, totalShards: m.shards.length, file: '' };
  for (const f of files) {
    const key = keyOf(name, f.file);
    if (await cache.has(key, f.size)) {
      p.bytes += f.size;
      if (f !== m.tokenizer) p.shards++;
      onProgress({ ...p });
      continue;
    }
    p.file = f.file;
    onProgress({ ...p });
    const base = f === m.tokenizer || !m.shardBaseURL ? keyOf(name, '') : m.shardBaseURL.replace(/\/?$/, '/');
    const data = await fetchChecked(base + f.file, f, (n) => { p.bytes += n; onProgress({ ...p }); }, signal);
    try {
      await cache.put(key, data);
    } catch (e) {
      throw await plainQuotaError(e, totalBytes);
    }
    if (f !== m.tokenizer) p.shards++;
    onProgress({ ...p });
  }
  try {
    await cache.put(keyOf(name, 'manifest.pb'), manifestBytes);
    await cache.put(keyOf(name, COMPLETE), new TextEncoder().encode(await sha256(manifestBytes)));
  } catch (e) {
    throw await plainQuotaError(e, totalBytes);
  }
  // Files of an earlier version of the model are no longer needed.
  const keep = new Set([...files.map((f) => f.file), 'manifest.pb', COMPLETE]);
  for (const path of await cache.keys()) {
    if (path.startsWith(keyOf(name, '')) && !keep.has(path.slice(keyOf(name, '').length))) await cache.delete(path);
  }
  return m;
}

// storedModels lists the models fully stored in this browser: downloaded
// or imported from disk (import.js), each with its .complete marker.
export async function storedModels() {
  const names = [];
  for (const path of await (await fileStore()).keys()) {
    const m = /^\/models\/([^/]+)\/\.complete$/.exec(path);
    if (m) names.push(decodeURIComponent(m[1]));
  }
  return names.sort();
}

// takenNames lists every model name with any file stored, complete or not
// (an import must not write into another model's files).
async function takenNames(cache) {
  const names = new Set();
  for (const path of await cache.keys()) {
    const m = /^\/models\/([^/]+)\//.exec(path);
    if (m) names.add(decodeURIComponent(m[1]));
  }
  return names;
}

// openImport starts storing a model converted in this browser (import.js)
// under a name of its own: want, or want-2, want-3, ... where want is taken
// by a stored file, is among avoid (the server's models, not downloaded),
// or is being written by another tab (its lock is held). Files go in with
// put as they are finished; the model exists only after commit, which
// stores the manifest and then the .complete marker, the same commit a
// download makes; abort deletes every file put. The name's lock is held
// until commit or abort.
export async function openImport(want, avoid = []) {
  const cache = await fileStore();
  const skip = new Set(avoid);
  let name = want, release = null;
  for (let i = 2; ; i++) {
    if (!skip.has(name) && (release = await holdLock(name, { wait: false }))) {
      // Under the lock no one else writes this name: its files (or none)
      // stay as they are listed now.
      if (!(await takenNames(cache)).has(name)) break;
      release();
    }
    name = `${want}-${i}`;
  }
  const written = [];
  const put = async (file, blob) => {
    const key = keyOf(name, file);
    written.push(key);
    try {
      await cache.put(key, new Uint8Array(await blob.arrayBuffer()));
    } catch (e) {
      throw await plainQuotaError(e, blob.size);
    }
  };
  return {
    name,
    put,
    async commit(manifestBytes) {
      try {
        await put('manifest.pb', new Blob([manifestBytes]));
        await put(COMPLETE, new Blob([await sha256(manifestBytes)]));
      } finally {
        release();
      }
    },
    async abort() {
      try {
        for (const key of written) await cache.delete(key);
      } finally {
        release();
      }
    },
  };
}

// sweepIncomplete deletes the files of stored models without the .complete
// marker that no context is writing (their lock is free): left by a tab
// closed mid-import or mid-download, they are never listed, yet their name
// counts as taken and their space is never given back. keep names models
// whose partial files are wanted (the server's, whose download resumes
// where it stopped). Complete models, and everything outside the model
// files (chats, saves), are never touched. It returns the names swept.
export async function sweepIncomplete({ keep = [] } = {}) {
  // Without Web Locks (not a secure context) a model another tab is
  // writing looks exactly like an orphan: sweep nothing rather than delete
  // its files under it.
  if (!(globalThis.navigator && navigator.locks)) return [];
  const cache = await fileStore();
  const complete = await storedModels();
  const swept = [];
  for (const name of await takenNames(cache)) {
    if (complete.includes(name) || keep.includes(name)) continue;
    const release = await holdLock(name, { wait: false });
    if (!release) continue; // being written now
    try {
      // A writer may have committed between the listing and the lock.
      if (await cache.has(keyOf(name, COMPLETE))) continue;
      const prefix = keyOf(name, '');
      for (const path of await cache.keys()) if (path.startsWith(prefix)) await cache.delete(path);
      swept.push(name);
    } finally {
      release();
    }
  }
  return swept;
}

// stored says whether model name is fully downloaded.
export async function stored(name) {
  return (await fileStore()).has(keyOf(name, COMPLETE));
}

// storedFiles lists the files kept for model name (for tests and the UI).
export async function storedFiles(name) {
  const prefix = keyOf(name, '');
  return (await (await fileStore()).keys()).filter((p) => p.startsWith(prefix)).map((p) => p.slice(prefix.length));
}

// remove deletes every stored file of model name, holding its lock, so
// that it never deletes under a download or an import of it (here or in
// another tab), which would go on storing into a model with files missing
// and then mark it complete. It takes the lock only if it is free, and
// otherwise refuses (an error of kind 'busy'): waiting would hold the
// page's Remove for the minutes a download takes, with nothing to show
// for it, and then delete what the person may since have decided to keep.
export async function remove(name) {
  const release = await holdLock(name, { wait: false });
  if (!release) {
    throw Object.assign(new Error(`${name} is being downloaded or imported (in this tab or another); remove it once that has ended.`), { kind: 'busy' });
  }
  try {
    const cache = await fileStore();
    const prefix = keyOf(name, '');
    for (const path of await cache.keys()) {
      if (path.startsWith(prefix)) await cache.delete(path);
    }
  } finally {
    release();
  }
}

// readStored returns the stored bytes of one file of model name, and with
// a sha256 checks them again: storage can be damaged after the download.
export async function readStored(name, file, wantSha256) {
  const cache = await fileStore();
  const data = await cache.match(keyOf(name, file));
  if (!data) throw new Error(`model ${name}: ${file} is not downloaded`);
  if (wantSha256) {
    const sum = await sha256(data);
    if (sum !== wantSha256) {
      await cache.delete(keyOf(name, file));
      await cache.delete(keyOf(name, COMPLETE));
      throw new Error(`model ${name}: the stored ${file} is damaged (sha256 mismatch) and was deleted; download the model again`);
    }
  }
  return data;
}
