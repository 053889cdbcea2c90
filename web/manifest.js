// The model manifest (engine/format/manifestpb/manifest.proto) as the page
// and the worker need it: the shards and the tokenizer to download and
// check, and the sizes to ask the GPU for. A protobuf library would cost more
// than this whole decoder; it reads only the fields used here and skips the
// rest, as protobuf readers must.

const utf8 = new TextDecoder();

// reader walks one protobuf message.
function reader(bytes) {
  let pos = 0;
  const varint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= bytes.length) throw new Error('manifest: a varint runs past the end');
      const b = bytes[pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
      if (shift > 63n) throw new Error('manifest: a varint is longer than 10 bytes');
    }
  };
  return {
    done: () => pos >= bytes.length,
    // next returns [field, wireType, value]: a BigInt for varints, a
    // Uint8Array for length-delimited fields, null for fixed ones.
    next() {
      const key = varint();
      const field = Number(key >> 3n), wire = Number(key & 7n);
      switch (wire) {
        case 0: return [field, wire, varint()];
        case 1: pos += 8; return [field, wire, null];
        case 5: pos += 4; return [field, wire, null];
        case 2: {
          const n = Number(varint());
          if (pos + n > bytes.length) throw new Error(`manifest: field ${field} of ${n} bytes runs past the end`);
          const v = bytes.subarray(pos, pos + n);
          pos += n;
          return [field, wire, v];
        }
        default: throw new Error(`manifest: field ${field} has unknown wire type ${wire}`);
      }
    },
  };
}

function fields(bytes, handle) {
  const r = reader(bytes);
  while (!r.done()) {
    const [f, wire, v] = r.next();
    handle(f, wire, v);
  }
}

// pushUints reads a repeated uint64 field, packed (one run of bare
// varints) or not.
function pushUints(out, wire, v) {
  if (wire === 0) { out.push(Number(v)); return; }
  let pos = 0;
  while (pos < v.length) {
    let x = 0n, shift = 0n, b;
    do { b = v[pos++]; x |= BigInt(b & 0x7f) << shift; shift += 7n; } while (b >= 0x80 && pos < v.length);
    out.push(Number(x));
  }
}

// parseManifest decodes manifest.pb's bytes.
export function parseManifest(bytes) {
  const m = { formatVersion: 0, name: '', shardBaseURL: '', tokenizer: null, shards: [], tensors: [], config: {} };
  fields(bytes, (f, wire, v) => {
    switch (f) {
      case 1: m.formatVersion = Number(v); break;
      case 2: m.name = utf8.decode(v); break;
      case 3: fields(v, (cf, _w, cv) => {
        const names = { 1: 'vocab', 2: 'hidden', 3: 'heads', 4: 'kvHeads', 5: 'headDim', 6: 'ffnHidden', 7: 'contextLen', 22: 'dtype' };
        if (names[cf] && typeof cv === 'bigint') m.config[names[cf]] = Number(cv);
      }); break;
      case 4: {
        const t = { file: '', size: 0, sha256: '' };
        fields(v, (tf, _w, tv) => {
          if (tf === 2) t.file = utf8.decode(tv);
          if (tf === 3) t.size = Number(tv);
          if (tf === 4) t.sha256 = utf8.decode(tv);
        });
        m.tokenizer = t;
        break;
      }
      case 6: {
        const t = { name: '', dtype: 0, shape: [] };
        fields(v, (tf, tw, tv) => {
          if (tf === 1) t.name = utf8.decode(tv);
          if (tf === 2) t.dtype = Number(tv);
          if (tf === 3) pushUints(t.shape, tw, tv);
        });
        m.tensors.push(t);
        break;
      }
      case 7: {
        const s = { file: '', size: 0, sha256: '' };
        fields(v, (sf, _w, sv) => {
          if (sf === 1) s.file = utf8.decode(sv);
          if (sf === 2) s.size = Number(sv);
          if (sf === 3) s.sha256 = utf8.decode(sv);
        });
        m.shards.push(s);
        break;
      }
      case 8: m.shardBaseURL = utf8.decode(v); break;
    }
  });
  if (!m.tokenizer || !m.tokenizer.file) throw new Error('manifest: no tokenizer file');
  for (const s of m.shards) {
    if (!/^shard-[0-9a-f]{64}\.bin$/.test(s.file)) throw new Error(`manifest: shard file name ${JSON.stringify(s.file)} is not shard-<sha256>.bin`);
    if (!/^[0-9a-f]{64}$/.test(s.sha256)) throw new Error(`manifest: shard ${s.file} has no sha256`);
  }
  return m;
}

// largestRowBytes is the size of the widest tensor row (int8 rows with
// their float32 scale), the least a GPU's maxStorageBufferBindingSize must
// be for the model to run at all: the engine splits every matrix by rows
// over as many buffers as the binding limit needs (engine/webgpu
// uploadMatrix), so a tensor larger than one binding is no obstacle.
// Buffers the engine sizes itself (KV arena, logits) are checked when it
// makes them, with an error naming the limit.
export function largestRowBytes(m) {
  let most = 0;
  for (const t of m.tensors) {
    const cols = t.shape.length > 0 ? t.shape[t.shape.length - 1] : 1;
    most = Math.max(most, t.dtype === 1 ? cols + 4 : cols * 4);
  }
  return most;
}

// systemPrompt is a character card's system prompt, word for word as
// engine/chat's Card.SystemPrompt writes it, so that the page and the native
// engine give the model the same conversation.
export function systemPrompt(card) {
  const name = (card.name || '').trim() || 'the character';
  let s = `You are ${name}.`;
  const persona = (card.persona || '').trim();
  if (persona) s += ' ' + persona;
  s += `\nStay in character as ${name}: reply only as ${name} would, and never write the user's lines.`;
  return s;
}
