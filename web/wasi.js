// A minimal WASI (wasi_snapshot_preview1) for wick's modules: the 15
// functions Go's wasip1 runtime imports, and the file functions. The chat
// module reads files from one read-only preopened directory held in memory
// (/model: the manifest, the tokenizer and, on the CPU path only, the
// shards). The converter module (web/convert.wasm, run by import.js) reads a
// folder or file the person picked, range by range from its File objects
// (FileReaderSync, which only workers have), and writes the model into a
// writable directory whose files the worker takes away as they are
// finished. Hand-written rather than vendored: these small functions are
// less to audit than a package, and the page has no build step. Nothing
// here may block the worker for long: poll_oneoff (called only when every
// goroutine sleeps, which the modules avoid) returns at once.

const SUCCESS = 0, EBADF = 8, EEXIST = 20, EINVAL = 28, EISDIR = 31, ENOENT = 44, ENOSYS = 52, ENOTDIR = 54, ENOTEMPTY = 55, EROFS = 69;
const FILETYPE_CHAR = 2, FILETYPE_DIR = 3, FILETYPE_FILE = 4;
const ALL_RIGHTS = 0xffffffffffffffffn;
const FIRST_PREOPEN = 3;
const READ_AHEAD = 64 << 10; // see #readBlob
const O_CREAT = 1, O_DIRECTORY = 2, O_EXCL = 4, O_TRUNC = 8;

// Nodes of the file tree: a directory {dir: true, entries: Map(name ->
// node), writable}, or a file: {data: Uint8Array} (in memory), {blob:
// Blob} (a File the person picked, read by ranges), or a file the module
// writes, {chunks: [Uint8Array], size}.
export const dirNode = (entries = new Map(), writable = false) => ({ dir: true, entries, writable });

function joinChunks(chunks) {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

const sizeOf = (node) => (node.dir ? 0 : node.data ? node.data.length : node.blob ? node.blob.size : node.size);

export class WASI {
  // files maps names inside the directory to Uint8Arrays; mount is where
  // the directory appears to the module. preopens, instead, lists
  // directories [{mount, node}] (node from dirNode).
  constructor({ files = new Map(), mount = '/model', preopens = null, onOutput = (fd, line) => console.log(line) } = {}) {
    this.preopens = preopens || [{ mount, node: dirNode(new Map([...files].map(([k, data]) => [k, { data }]))) }];
    this.onOutput = onOutput;
    this.memory = null; // set by start()
    this.fds = new Map(this.preopens.map((p, i) => [FIRST_PREOPEN + i, { node: p.node, pos: 0 }]));
    this.nextFd = FIRST_PREOPEN + this.preopens.length;
    this.pending = { 1: '', 2: '' };
    this.largestRead = 0; // the most bytes one read took from a Blob (tests check it is never a whole file)
    this.imports = this.#bind();
  }

  // start gives the shim the instance's memory and calls _initialize.
  start(instance) {
    this.memory = instance.exports.memory;
    instance.exports._initialize();
  }

  view() { return new DataView(this.memory.buffer); }
  bytes(ptr, len) { return new Uint8Array(this.memory.buffer, ptr, len); }
  string(ptr, len) { return new TextDecoder().decode(this.bytes(ptr, len)); }

  // #lookup finds path in the directory open as dirfd: [errno, node,
  // parent directory, name].
  #lookup(dirfd, path) {
    const d = this.fds.get(dirfd);
    if (!d) return [EBADF];
    if (!d.node.dir) return [ENOTDIR];
    const name = path.replace(/^(\.\/)+/, '');
    if (name === '' || name === '.') return [SUCCESS, d.node, d.node, ''];
    const node = d.node.entries.get(name);
    return [node ? SUCCESS : ENOENT, node, d.node, name];
  }

  #filestat(ptr, node) {
    const v = this.view();
    for (let i = 0; i < 64; i += 8) v.setBigUint64(ptr + i, 0n, true);
    v.setUint8(ptr + 16, node.dir ? FILETYPE_DIR : FILETYPE_FILE);
    v.setBigUint64(ptr + 24, 1n, true);
    v.setBigUint64(ptr + 32, BigInt(sizeOf(node)), true);
  }

  // #iovecs lists the [ptr, len] of n iovecs at iovs.
  #iovecs(iovs, n) {
    const v = this.view(), out = [];
    for (let i = 0; i < n; i++) out.push([v.getUint32(iovs + 8 * i, true), v.getUint32(iovs + 8 * i + 4, true)]);
    return out;
  }

  // #read copies from node at pos into the iovecs and returns the count.
  // A Blob is read by one range covering the iovecs, never whole.
  #read(node, iovs, n, pos) {
    const vecs = this.#iovecs(iovs, n);
    const want = vecs.reduce((a, [, len]) => a + len, 0);
    let src;
    if (node.data) {
      src = node.data.subarray(pos, Math.min(node.data.length, pos + want));
    } else if (node.blob) {
      src = this.#readBlob(node, pos, want);
    } else {
      // A file the module wrote and reads back (the GGUF path's
      // tokenizer): small, joined once.
      if (node.chunks.length > 1) node.chunks = [joinChunks(node.chunks)];
      const data = node.chunks[0] || new Uint8Array(0);
      src = data.subarray(pos, Math.min(data.length, pos + want));
    }
    let total = 0;
    for (const [ptr, len] of vecs) {
      const chunk = src.subarray(total, total + len);
      this.bytes(ptr, chunk.length).set(chunk);
      total += chunk.length;
      if (chunk.length < len) break;
    }
    return total;
  }

  // #readBlob reads want bytes at pos of a Blob node. Each FileReaderSync
  // read is a round trip to the browser's blob storage (about a
  // millisecond), and parsers read metadata a few bytes at a time (a GGUF
  // vocabulary is thousands of strings), so small reads are served from one
  // block of READ_AHEAD bytes read ahead; larger ones are read as asked.
  #readBlob(node, pos, want) {
    const size = node.blob.size;
    const end = Math.min(size, pos + want);
    if (end <= pos) return new Uint8Array(0);
    const b = node.block;
    if (b && pos >= b.at && end <= b.at + b.bytes.length) return b.bytes.subarray(pos - b.at, end - b.at);
    const upto = want < READ_AHEAD ? Math.min(size, pos + READ_AHEAD) : end;
    const bytes = new Uint8Array(new FileReaderSync().readAsArrayBuffer(node.blob.slice(pos, upto)));
    this.largestRead = Math.max(this.largestRead, bytes.length);
    if (want < READ_AHEAD) node.block = { at: pos, bytes };
    return bytes.subarray(0, end - pos);
  }

  // #write appends the iovecs to a file being written; Go writes such
  // files in order, so a write elsewhere is refused.
  #write(entry, iovs, n, pos) {
    const node = entry.node;
    if (!node.chunks || pos !== node.size) return -1;
    let total = 0;
    for (const [ptr, len] of this.#iovecs(iovs, n)) {
      node.chunks.push(this.bytes(ptr, len).slice());
      total += len;
    }
    node.size += total;
    return total;
  }

  #bind() {
    const w = {
      args_sizes_get: (argc, size) => { this.view().setUint32(argc, 0, true); this.view().setUint32(size, 0, true); return SUCCESS; },
      args_get: () => SUCCESS,
      environ_sizes_get: (n, size) => { this.view().setUint32(n, 0, true); this.view().setUint32(size, 0, true); return SUCCESS; },
      environ_get: () => SUCCESS,
      clock_time_get: (id, _precision, out) => {
        const ns = id === 0
          ? BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6))
          : BigInt(Math.round(performance.now() * 1e6));
        this.view().setBigUint64(out, ns, true);
        return SUCCESS;
      },
      random_get: (ptr, len) => {
        for (let i = 0; i < len; i += 65536) crypto.getRandomValues(this.bytes(ptr + i, Math.min(65536, len - i)));
        return SUCCESS;
      },
      sched_yield: () => SUCCESS,
      proc_exit: (code) => { throw new Error(`the engine module exited with code ${code}`); },
      poll_oneoff: (inPtr, outPtr, nsubs, nevents) => {
        // Report every subscription as fired at once: a real sleep would
        // block the worker, and the module never needs one.
        const v = this.view();
        for (let i = 0; i < nsubs; i++) {
          const sub = inPtr + 48 * i, ev = outPtr + 32 * i;
          v.setBigUint64(ev, v.getBigUint64(sub, true), true);
          v.setUint16(ev + 8, SUCCESS, true);
          v.setUint8(ev + 10, v.getUint8(sub + 8));
          for (let j = 11; j < 32; j++) v.setUint8(ev + j, 0);
        }
        v.setUint32(nevents, nsubs, true);
        return SUCCESS;
      },
      fd_write: (fd, iovs, n, written) => {
        const v = this.view();
        const entry = this.fds.get(fd);
        if (entry && !entry.node.dir) {
          const got = this.#write(entry, iovs, n, entry.pos);
          if (got < 0) return EBADF;
          entry.pos += got;
          v.setUint32(written, got, true);
          return SUCCESS;
        }
        let total = 0, text = '';
        for (let i = 0; i < n; i++) {
          const ptr = v.getUint32(iovs + 8 * i, true), len = v.getUint32(iovs + 8 * i + 4, true);
          text += this.string(ptr, len);
          total += len;
        }
        if (fd !== 1 && fd !== 2) return EBADF;
        const lines = (this.pending[fd] + text).split('\n');
        this.pending[fd] = lines.pop();
        for (const line of lines) this.onOutput(fd, line);
        v.setUint32(written, total, true);
        return SUCCESS;
      },
      fd_close: (fd) => (fd >= FIRST_PREOPEN + this.preopens.length && this.fds.delete(fd) ? SUCCESS : EBADF),
      fd_fdstat_get: (fd, ptr) => {
        const v = this.view();
        let type;
        if (fd <= 2) type = FILETYPE_CHAR;
        else if (this.fds.has(fd)) type = this.fds.get(fd).node.dir ? FILETYPE_DIR : FILETYPE_FILE;
        else return EBADF;
        v.setUint8(ptr, type);
        v.setUint16(ptr + 2, 0, true);
        v.setBigUint64(ptr + 8, ALL_RIGHTS, true);
        v.setBigUint64(ptr + 16, ALL_RIGHTS, true);
        return SUCCESS;
      },
      fd_fdstat_set_flags: () => SUCCESS,
      fd_prestat_get: (fd, ptr) => {
        const p = this.preopens[fd - FIRST_PREOPEN];
        if (!p) return EBADF; // ends the runtime's scan of preopens
        const v = this.view();
        v.setUint8(ptr, 0);
        v.setUint32(ptr + 4, new TextEncoder().encode(p.mount).length, true);
        return SUCCESS;
      },
      fd_prestat_dir_name: (fd, ptr, len) => {
        const p = this.preopens[fd - FIRST_PREOPEN];
        if (!p) return EBADF;
        const name = new TextEncoder().encode(p.mount);
        if (len < name.length) return EINVAL;
        this.bytes(ptr, name.length).set(name);
        return SUCCESS;
      },
      path_open: (dirfd, _dirflags, pathPtr, pathLen, oflags, _rb, _ri, _fdflags, out) => {
        let [err, node, parent, name] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err === ENOENT && (oflags & O_CREAT) && parent) {
          if (!parent.writable) return EROFS;
          node = { chunks: [], size: 0 };
          parent.entries.set(name, node);
        } else if (err) {
          return err;
        } else if (oflags & (O_CREAT | O_TRUNC)) {
          if (oflags & O_EXCL) return EEXIST;
          if (!parent.writable || node.dir) return node.dir ? EISDIR : EROFS;
          if (oflags & O_TRUNC) Object.assign(node, { chunks: [], size: 0 });
        }
        if ((oflags & O_DIRECTORY) && !node.dir) return ENOTDIR;
        const fd = this.nextFd++;
        this.fds.set(fd, { node, pos: 0 });
        this.view().setUint32(out, fd, true);
        return SUCCESS;
      },
      path_filestat_get: (dirfd, _flags, pathPtr, pathLen, out) => {
        const [err, node] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err) return err;
        this.#filestat(out, node);
        return SUCCESS;
      },
      fd_filestat_get: (fd, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return fd <= 2 ? ENOSYS : EBADF;
        this.#filestat(out, entry.node);
        return SUCCESS;
      },
      fd_read: (fd, iovs, n, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return EBADF;
        if (entry.node.dir) return EISDIR;
        const got = this.#read(entry.node, iovs, n, entry.pos);
        if (got < 0) return EBADF;
        entry.pos += got;
        this.view().setUint32(out, got, true);
        return SUCCESS;
      },
      fd_pread: (fd, iovs, n, offset, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return EBADF;
        if (entry.node.dir) return EISDIR;
        const got = this.#read(entry.node, iovs, n, Number(offset));
        if (got < 0) return EBADF;
        this.view().setUint32(out, got, true);
        return SUCCESS;
      },
      fd_pwrite: (fd, iovs, n, offset, out) => {
        const entry = this.fds.get(fd);
        if (!entry || entry.node.dir) return EBADF;
        const got = this.#write(entry, iovs, n, Number(offset));
        if (got < 0) return EINVAL;
        this.view().setUint32(out, got, true);
        return SUCCESS;
      },
      fd_seek: (fd, offset, whence, out) => {
        const entry = this.fds.get(fd);
        if (!entry || entry.node.dir) return EBADF;
        const base = [0, entry.pos, sizeOf(entry.node)][whence];
        if (base === undefined) return EINVAL;
        const pos = base + Number(offset);
        if (pos < 0) return EINVAL;
        entry.pos = pos;
        this.view().setBigUint64(out, BigInt(pos), true);
        return SUCCESS;
      },
      fd_sync: (fd) => (this.fds.has(fd) ? SUCCESS : EBADF),
      fd_filestat_set_size: () => ENOSYS,
      // fd_readdir lists a directory from entry number cookie: dirents of
      // 24 bytes (next cookie, inode, name length, type) and the name, as
      // many as fit; the last may be cut short (the runtime then asks
      // again with more room).
      fd_readdir: (fd, buf, bufLen, cookie, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return EBADF;
        if (!entry.node.dir) return ENOTDIR;
        const names = [...entry.node.entries.keys()];
        const v = this.view();
        let used = 0;
        for (let i = Number(cookie); i < names.length && used < bufLen; i++) {
          const name = new TextEncoder().encode(names[i]);
          const ent = new Uint8Array(24 + name.length);
          const dv = new DataView(ent.buffer);
          dv.setBigUint64(0, BigInt(i + 1), true);
          dv.setBigUint64(8, BigInt(i + 1), true);
          dv.setUint32(16, name.length, true);
          dv.setUint8(20, entry.node.entries.get(names[i]).dir ? FILETYPE_DIR : FILETYPE_FILE);
          ent.set(name, 24);
          const n = Math.min(ent.length, bufLen - used);
          this.bytes(buf + used, n).set(ent.subarray(0, n));
          used += n;
        }
        v.setUint32(out, used, true);
        return SUCCESS;
      },
      path_create_directory: (dirfd, pathPtr, pathLen) => {
        const [err, , parent, name] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (!err) return EEXIST;
        if (err !== ENOENT) return err;
        if (!parent.writable) return EROFS;
        parent.entries.set(name, dirNode(new Map(), true));
        return SUCCESS;
      },
      path_rename: (oldfd, oldPtr, oldLen, newfd, newPtr, newLen) => {
        const [err, node, from, oldName] = this.#lookup(oldfd, this.string(oldPtr, oldLen));
        if (err) return err;
        const [err2, , to, newName] = this.#lookup(newfd, this.string(newPtr, newLen));
        if (err2 && err2 !== ENOENT) return err2;
        if (!from.writable || !to.writable) return EROFS;
        if (!oldName || !newName) return EINVAL;
        from.entries.delete(oldName);
        to.entries.set(newName, node);
        if (this.onRename) this.onRename(to, newName, node);
        return SUCCESS;
      },
      path_unlink_file: (dirfd, pathPtr, pathLen) => {
        const [err, node, parent, name] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err) return err;
        if (node.dir) return EISDIR;
        if (!parent.writable) return EROFS;
        parent.entries.delete(name);
        return SUCCESS;
      },
      path_remove_directory: (dirfd, pathPtr, pathLen) => {
        const [err, node, parent, name] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err) return err;
        if (!node.dir) return ENOTDIR;
        if (!parent.writable || !name) return EROFS;
        if (node.entries.size) return ENOTEMPTY;
        parent.entries.delete(name);
        return SUCCESS;
      },
      sock_accept: () => ENOSYS,
      sock_shutdown: () => ENOSYS,
    };
    // An exception must never unwind through Go frames (it leaks the Go
    // stack's state): every function catches and answers EINVAL, except
    // proc_exit, whose throw ends the instance on purpose.
    for (const [name, f] of Object.entries(w)) {
      if (name === 'proc_exit') continue;
      // Pointers and lengths are u32, but JS receives i32s signed: past
      // 2 GiB of memory they would arrive negative. (i64s come as BigInt;
      // no i32 argument of these functions is signed.)
      w[name] = (...args) => {
        try { return f(...args.map((v) => (typeof v === 'number' ? v >>> 0 : v))); } catch (e) { console.error(`wasi ${name}:`, e); return EINVAL; }
      };
    }
    return w;
  }
}
