// The model download manager: lists the server's models, downloads one into
// the Cache API (every shard's sha256 checked against the manifest before it
// is stored), resumes at the first shard not yet stored, and deletes a
// model. Both the page (to download) and the worker (to load) use it: the
// Cache API is shared by every context of the origin. Keys are always the
// same-origin paths /models/NAME/FILE, wherever the bytes came from (a CDN
// named by the manifest's shard_base_url), so a model is found again after
// its server moves its shards.

import { parseManifest } from './manifest.js';

export const CACHE = 'wick-models-v1';
const COMPLETE = '.complete'; // marker key: the manifest whose files are all stored

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

export async function sha256(bytes) { return hex(await crypto.subtle.digest('SHA-256', bytes)); }

export function keyOf(name, file) { return `/models/${encodeURIComponent(name)}/${file}`; }

// listModels returns the server's /models/ list.
export async function listModels() {
  const r = await fetch('/models/');
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
export async function download(name, { onProgress = () => {}, signal } = {}) {
  const cache = await caches.open(CACHE);
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
    const have = await cache.match(key);
    if (have && Number(have.headers.get('content-length')) === f.size) {
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
      await cache.put(key, new Response(data, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(f.size) } }));
    } catch (e) {
      throw await plainQuotaError(e, totalBytes);
    }
    if (f !== m.tokenizer) p.shards++;
    onProgress({ ...p });
  }
  try {
    await cache.put(keyOf(name, 'manifest.pb'), new Response(manifestBytes, { headers: { 'content-length': String(manifestBytes.length) } }));
    await cache.put(keyOf(name, COMPLETE), new Response(await sha256(manifestBytes)));
  } catch (e) {
    throw await plainQuotaError(e, totalBytes);
  }
  // Files of an earlier version of the model are no longer needed.
  const keep = new Set([...files.map((f) => f.file), 'manifest.pb', COMPLETE]);
  for (const req of await cache.keys()) {
    const path = new URL(req.url).pathname;
    if (path.startsWith(keyOf(name, '')) && !keep.has(path.slice(keyOf(name, '').length))) await cache.delete(req);
  }
  return m;
}

// stored says whether model name is fully downloaded.
export async function stored(name) {
  const cache = await caches.open(CACHE);
  return !!(await cache.match(keyOf(name, COMPLETE)));
}

// storedFiles lists the files kept for model name (for tests and the UI).
export async function storedFiles(name) {
  const cache = await caches.open(CACHE);
  const prefix = keyOf(name, '');
  return (await cache.keys()).map((r) => new URL(r.url).pathname).filter((p) => p.startsWith(prefix)).map((p) => p.slice(prefix.length));
}

// remove deletes every stored file of model name.
export async function remove(name) {
  const cache = await caches.open(CACHE);
  const prefix = keyOf(name, '');
  for (const req of await cache.keys()) {
    if (new URL(req.url).pathname.startsWith(prefix)) await cache.delete(req);
  }
}

// readStored returns the stored bytes of one file of model name, and with
// a sha256 checks them again: storage can be damaged after the download.
export async function readStored(name, file, wantSha256) {
  const cache = await caches.open(CACHE);
  const r = await cache.match(keyOf(name, file));
  if (!r) throw new Error(`model ${name}: ${file} is not downloaded`);
  const data = new Uint8Array(await r.arrayBuffer());
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
