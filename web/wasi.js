// A minimal WASI (wasi_snapshot_preview1) for the engine module: the 15
// functions Go's wasip1 runtime imports, and 5 more that read files from one
// read-only preopened directory held in memory (/model: the manifest, the
// tokenizer and, on the CPU path only, the shards). Hand-written rather than
// vendored: 20 small functions are less to audit than a package, and the page
// has no build step. Nothing here may block the worker: poll_oneoff (called
// only when every goroutine sleeps, which the module avoids) returns at once.

const SUCCESS = 0, EBADF = 8, EINVAL = 28, ENOENT = 44, ENOSYS = 52, EROFS = 69, EISDIR = 31, ENOTDIR = 54;
const FILETYPE_CHAR = 2, FILETYPE_DIR = 3, FILETYPE_FILE = 4;
const ALL_RIGHTS = 0xffffffffffffffffn;
const PREOPEN_FD = 3;

export class WASI {
  // files maps names inside the directory to Uint8Arrays; mount is where
  // the directory appears to the module.
  constructor({ files = new Map(), mount = '/model', onOutput = (fd, line) => console.log(line) } = {}) {
    this.files = files;
    this.mount = mount;
    this.onOutput = onOutput;
    this.memory = null; // set by start()
    this.fds = new Map([[PREOPEN_FD, { dir: true }]]);
    this.nextFd = 4;
    this.pending = { 1: '', 2: '' };
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

  #lookup(dirfd, path) {
    const d = this.fds.get(dirfd);
    if (!d) return [EBADF];
    if (!d.dir) return [ENOTDIR];
    const name = path.replace(/^(\.\/)+/, '');
    if (name === '' || name === '.') return [SUCCESS, { dir: true }];
    const data = this.files.get(name);
    if (!data) return [ENOENT];
    return [SUCCESS, { data }];
  }

  #filestat(ptr, entry) {
    const v = this.view();
    for (let i = 0; i < 64; i += 8) v.setBigUint64(ptr + i, 0n, true);
    v.setUint8(ptr + 16, entry.dir ? FILETYPE_DIR : FILETYPE_FILE);
    v.setBigUint64(ptr + 24, 1n, true);
    v.setBigUint64(ptr + 32, BigInt(entry.dir ? 0 : entry.data.length), true);
  }

  // #read copies from entry at pos into the iovecs and returns the count.
  #read(entry, iovs, n, pos) {
    const v = this.view();
    let total = 0;
    for (let i = 0; i < n; i++) {
      const ptr = v.getUint32(iovs + 8 * i, true), len = v.getUint32(iovs + 8 * i + 4, true);
      const chunk = entry.data.subarray(pos + total, Math.min(entry.data.length, pos + total + len));
      this.bytes(ptr, chunk.length).set(chunk);
      total += chunk.length;
      if (chunk.length < len) break;
    }
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
      fd_close: (fd) => (this.fds.delete(fd) ? SUCCESS : EBADF),
      fd_fdstat_get: (fd, ptr) => {
        const v = this.view();
        let type;
        if (fd <= 2) type = FILETYPE_CHAR;
        else if (this.fds.has(fd)) type = this.fds.get(fd).dir ? FILETYPE_DIR : FILETYPE_FILE;
        else return EBADF;
        v.setUint8(ptr, type);
        v.setUint16(ptr + 2, 0, true);
        v.setBigUint64(ptr + 8, ALL_RIGHTS, true);
        v.setBigUint64(ptr + 16, ALL_RIGHTS, true);
        return SUCCESS;
      },
      fd_fdstat_set_flags: () => SUCCESS,
      fd_prestat_get: (fd, ptr) => {
        if (fd !== PREOPEN_FD) return EBADF; // ends the runtime's scan of preopens
        const v = this.view();
        v.setUint8(ptr, 0);
        v.setUint32(ptr + 4, new TextEncoder().encode(this.mount).length, true);
        return SUCCESS;
      },
      fd_prestat_dir_name: (fd, ptr, len) => {
        if (fd !== PREOPEN_FD) return EBADF;
        const name = new TextEncoder().encode(this.mount);
        if (len < name.length) return EINVAL;
        this.bytes(ptr, name.length).set(name);
        return SUCCESS;
      },
      path_open: (dirfd, _dirflags, pathPtr, pathLen, oflags, _rb, _ri, _fdflags, out) => {
        if (oflags & (1 | 4 | 8)) return EROFS; // create, exclusive, truncate
        const [err, entry] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err) return err;
        if ((oflags & 2) && !entry.dir) return ENOTDIR;
        const fd = this.nextFd++;
        this.fds.set(fd, { ...entry, pos: 0 });
        this.view().setUint32(out, fd, true);
        return SUCCESS;
      },
      path_filestat_get: (dirfd, _flags, pathPtr, pathLen, out) => {
        const [err, entry] = this.#lookup(dirfd, this.string(pathPtr, pathLen));
        if (err) return err;
        this.#filestat(out, entry);
        return SUCCESS;
      },
      fd_filestat_get: (fd, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return fd <= 2 ? ENOSYS : EBADF;
        this.#filestat(out, entry);
        return SUCCESS;
      },
      fd_read: (fd, iovs, n, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return EBADF;
        if (entry.dir) return EISDIR;
        const got = this.#read(entry, iovs, n, entry.pos);
        entry.pos += got;
        this.view().setUint32(out, got, true);
        return SUCCESS;
      },
      fd_pread: (fd, iovs, n, offset, out) => {
        const entry = this.fds.get(fd);
        if (!entry) return EBADF;
        if (entry.dir) return EISDIR;
        const got = this.#read(entry, iovs, n, Number(offset));
        this.view().setUint32(out, got, true);
        return SUCCESS;
      },
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
