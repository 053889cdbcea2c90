// The model panel (Model, in the side bar): the list of models, the
// server's and those kept in this browser, their download with its
// progress, importing one from disk through the import worker (import.js),
// and removing one. Storage itself is models.js's; loading a model into
// the engine worker is the chat's (app.js), which the panel calls as
// app.open(name) when a model is picked.

import { listModels, download, stored, storedModels, remove, sweepIncomplete } from './models.js';
import { $, mb, hooks, status, showError, closeDrawer } from './ui.js';

let models = []; // the list: the server's (listModels), then {name, local: true} for those kept only here
// app is what the panel needs of the chat (bindModelPanel): its store
// (the last open model), open(name) to load a model, and unloaded() when
// the loaded model's files were removed.
let app = null;

let sweeping = true; // the first initModels with the server's list sweeps

// initModels lists the server's models and those kept in this browser that
// the server does not offer (imported from disk, or a server gone), and
// opens pick, the last open one, or the first. At the page's start it
// first deletes models left incomplete by a tab that closed mid-write
// (models.js sweepIncomplete), keeping the partial downloads of the
// server's models, which resume; when the server's list is not to be had,
// it cannot tell those apart and sweeps nothing.
export async function initModels(pick) {
  let serverError = null;
  try {
    models = await listModels();
  } catch (e) {
    models = [];
    serverError = e;
  }
  if (sweeping && !serverError) {
    sweeping = false;
    try {
      hooks.swept = await sweepIncomplete({ keep: models.map((m) => m.name) });
      if (hooks.swept.length) console.log(`deleted the files of incomplete models: ${hooks.swept.join(', ')}`);
    } catch (e) {
      console.error('sweeping incomplete models:', e);
    }
  }
  try {
    for (const name of await storedModels()) if (!models.some((m) => m.name === name)) models.push({ name, local: true });
  } catch { /* no storage: the server's list only */ }
  const sel = $('model-select');
  sel.replaceChildren(...models.map((m) => new Option(`${m.name}${m.local ? ' (in this browser)' : m.title && m.title !== m.name ? ` (${m.title})` : ''}`, m.name)));
  if (!models.length) {
    if (serverError) showError(`Could not get the list of models: ${serverError.message}`);
    else status('No models here yet: import one from this computer (a model folder or a .gguf file).');
    return;
  }
  const want = [pick, app.store.open.model].find((n) => n && models.some((m) => m.name === n));
  sel.value = want || models[0].name;
  await app.open(sel.value);
}

export function currentModelInfo() { return models.find((m) => m.name === $('model-select').value); }

export function describeModel(info) {
  if (!info) return;
  if (info.local) {
    $('model-size').textContent = 'Kept in this browser';
    $('model-size').title = 'Imported from this computer (or downloaded from a server that no longer offers it)';
    $('intro').hidden = true;
    return;
  }
  const c = info.config || {}, sz = info.sizes || {};
  const params = c.params ? `${(c.params / 1e6).toFixed(c.params < 10e6 ? 1 : 0)}M parameters` : '';
  $('model-size').textContent = `${mb(sz.download_bytes || 0)} download` + (params ? `, ${params}` : '');
  $('model-size').title = `${sz.shards} shard file(s), ${c.dtype}, context of ${c.context_len} tokens`;
  const intro = $('intro');
  if (c.params && c.params < 100e6) {
    intro.textContent = `${info.name} is a small demonstration model (${params}) that has read a few old books: ` +
      'expect odd replies. For real conversations, convert a model with "wick convert" and serve it (see the README).';
    intro.hidden = false;
  } else {
    intro.hidden = true;
  }
}

// downloadModel makes sure model name is stored before it is loaded: a
// model of the server's is downloaded (or its download resumed) with the
// progress shown; one kept in this browser only has nothing to download.
// The Download button stays disabled until downloadEnded says how it went.
export async function downloadModel(name) {
  const bar = $('progress');
  $('download-btn').disabled = true;
  try {
    const have = await stored(name);
    const info = currentModelInfo();
    if (info && info.local) {
      // Imported (or its server is gone): there is nothing to download.
      if (!have) throw new Error(`${name} is no longer stored in this browser; import it again.`);
    } else {
      if (!have) status(`Downloading ${name}…`);
      bar.hidden = have;
      await download(name, {
        onProgress: (p) => {
          bar.max = p.totalBytes || 1;
          bar.value = p.bytes;
          $('progress-text').textContent = `${mb(p.bytes)} of ${mb(p.totalBytes)}`;
        },
      });
    }
  } finally {
    bar.hidden = true;
    $('progress-text').textContent = '';
  }
}

// downloadEnded sets the Download button after the model was loaded (ok)
// or could not be: then it offers the download again.
export function downloadEnded(ok) {
  const btn = $('download-btn');
  btn.textContent = ok ? 'Downloaded' : 'Download';
  if (!ok) btn.disabled = false;
}

// removeModel deletes the picked model's files from this browser (chats
// are kept). models.js refuses while the model is being downloaded or
// imported, here or in another tab: the page says so and nothing changes.
async function removeModel() {
  const name = $('model-select').value;
  const local = (currentModelInfo() || {}).local;
  // The outcome is told in the chat's status line or error.
  closeDrawer();
  try {
    await remove(name);
  } catch (e) {
    showError(e.kind === 'busy' ? e.message : `${name} was not removed: ${e.message}`);
    return;
  }
  if (local) { await initModels(); return; }
  app.unloaded();
  downloadEnded(false);
  status(`${name} was removed from this browser; Download fetches it again. Chats are kept.`);
}

// ---- importing a model from disk ----

let importer = null; // the import worker while an import runs

// importModel converts a model the person picked (a folder's files, or one
// GGUF file) in import.js's worker, which loads the converter module only
// now, and then opens it. Progress shows in the download bar; a failure is
// one sentence and nothing is kept.
async function importModel(files, { gguf, name }) {
  if (importer) return;
  const bar = $('progress'), before = hooks.state;
  const label = gguf ? files[0].name : name;
  hooks.state = 'importing';
  hooks.importProgress = [];
  hooks.lastImport = null;
  showError('');
  status(`Importing ${label}: converting it in this page…`);
  bar.hidden = false;
  bar.value = 0;
  $('import-model-cancel').hidden = false;
  const w = new Worker('import.js', { type: 'module' });
  importer = w;
  let result = null, failure = null;
  try {
    result = await new Promise((resolve, reject) => {
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.progress) {
          const p = m.progress;
          hooks.importProgress.push(p);
          bar.max = p.total_bytes || 1;
          bar.value = p.bytes;
          $('progress-text').textContent = `Converting: ${p.tensors} of ${p.total_tensors} tensors, ${mb(p.bytes)} of ${mb(p.total_bytes)}`;
        } else if (m.result) {
          resolve(m.result);
        } else if (m.error !== undefined) {
          reject(Object.assign(new Error(m.error), { details: m.details }));
        }
      };
      w.onerror = (ev) => reject(new Error(`The import stopped: ${ev.message || 'the import worker failed'}.`));
      w.postMessage({ op: 'import', files, name, gguf, avoid: models.filter((m) => !m.local).map((m) => m.name) });
    });
  } catch (e) {
    failure = e;
  } finally {
    // The import is over before the model loads: another may start.
    w.terminate();
    importer = null;
    bar.hidden = true;
    $('progress-text').textContent = '';
    $('import-model-cancel').hidden = true;
  }
  // The outcome is told in the chat: its error, or the model loading.
  closeDrawer();
  if (failure) {
    hooks.lastImport = { error: failure.message, details: failure.details || '' };
    hooks.state = before;
    showError(failure.message, failure.details); // the converter's own words under Details
    status(`${label} was not imported; nothing was kept.`);
    return;
  }
  hooks.lastImport = result;
  status(`Imported ${label} as ${result.name}.`);
  await initModels(result.name);
}

// pickedFolder takes the top level of a folder picked with webkitdirectory
// (subfolders, such as Llama's original/, are not part of the checkpoint).
function pickedFolder(list) {
  const files = [...list].filter((f) => (f.webkitRelativePath || f.name).split('/').length <= 2);
  const name = files.length ? (files[0].webkitRelativePath || '').split('/')[0] || 'model' : 'model';
  return { files, name };
}

// droppedModel reads a dropped folder's top-level files, or a dropped .gguf
// file; null when the drop holds neither.
async function droppedModel(dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (entries.length === 1 && entries[0].isDirectory) {
    const reader = entries[0].createReader(), all = [];
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      all.push(...batch);
    }
    const files = await Promise.all(all.filter((e) => e.isFile).map((e) => new Promise((res, rej) => e.file(res, rej))));
    return { files, gguf: false, name: entries[0].name };
  }
  const f = [...dt.files].find((x) => /\.gguf$/i.test(x.name));
  return f ? { files: [f], gguf: true, name: f.name.replace(/\.gguf$/i, '') } : null;
}

function bindImport() {
  $('import-model-dir-btn').onclick = () => $('import-model-dir').click();
  $('import-model-gguf-btn').onclick = () => $('import-model-gguf').click();
  $('import-model-cancel').onclick = () => importer && importer.postMessage({ op: 'cancel' });
  $('import-model-dir').onchange = () => {
    const { files, name } = pickedFolder($('import-model-dir').files);
    $('import-model-dir').value = '';
    if (files.length) importModel(files, { gguf: false, name });
  };
  $('import-model-gguf').onchange = () => {
    const f = $('import-model-gguf').files[0];
    $('import-model-gguf').value = '';
    if (f) importModel([f], { gguf: true, name: f.name.replace(/\.gguf$/i, '') });
  };
  const box = $('model-box');
  box.addEventListener('dragover', (ev) => { if (ev.dataTransfer.types.includes('Files')) { ev.preventDefault(); box.classList.add('drop'); } });
  box.addEventListener('dragleave', () => box.classList.remove('drop'));
  box.addEventListener('drop', async (ev) => {
    box.classList.remove('drop');
    if (!ev.dataTransfer.types.includes('Files')) return;
    ev.preventDefault();
    const m = await droppedModel(ev.dataTransfer);
    if (m) importModel(m.files, m);
    else showError('Drop a model folder (config.json, *.safetensors and the tokenizer files) or a .gguf file to import it.');
  });
}

// bindModelPanel wires the panel's controls; chat is what it needs of the
// page's chat (see app above).
export function bindModelPanel(chat) {
  app = chat;
  $('model-select').onchange = () => app.open($('model-select').value);
  $('download-btn').onclick = () => app.open($('model-select').value);
  $('delete-btn').onclick = removeModel;
  bindImport();
}
