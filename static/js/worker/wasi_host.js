// The browser host of the kernel contract (docs/kernels.md): runs one WASI preview 1 command
// module synchronously, the way kernelhost/host.py runs it in wasmtime, and reports the same
// observation (exit code, error kind, stdout, checkpoint, last progress).
//
// The WASI implementation is @bjorn3/browser_wasi_shim (vendored); the functions where the
// contract pins a behaviour the shim does not have (stdio that are not terminals, a read-only
// /ccgsc, unsupported sockets/polling/CPU clocks answering WASI errnos, exit codes 0..125,
// UTF-8 argv sizes, the 64-byte filestat layout) are replaced below. Everything else a kernel
// can import is the shim's, over in-memory files only: a module gets no other imports, so it
// cannot reach the network or the page.
//
// No DOM and no worker API is used here: the module Worker (wasm_worker.js) wraps it, and it
// runs in Node too.

import { WASI, Fd, File, OpenFile, PreopenDirectory, wasi as W } from "../../vendor/browser_wasi_shim/index.js";

export const GUEST_DIR = "/ccgsc";
export const STDERR_TAIL_BYTES = 4096;
export const MAX_EXIT_CODE = 125;
export const WASM_PAGE = 65536;
export const WASM32_MAX_MEMORY = 4 * 1024 * 1024 * 1024;
export const PROGRESS_INTERVAL_MS = 50;

export const DEFAULT_LIMITS = Object.freeze({
  timeout_s: 60,
  memory_bytes: 256 * 1024 * 1024,
  output_bytes: 4 * 1024 * 1024,
  stderr_bytes: 1024 * 1024,
  checkpoint_bytes: 4 * 1024 * 1024,
});

// Rights as wasmtime reports them (fd_fdstat_get; base and inheriting alike for stdio and
// files): stdin may only be read, stdout and stderr only written; the /ccgsc preopen and the
// directories opened in it have wasmtime's directory rights, a file opened in it every right
// but fd_write. Nothing checks them (wasmtime does not either): they are what a kernel reads.
const RIGHTS_STDIN = BigInt(W.RIGHTS_FD_READ);
const RIGHTS_STDOUT = BigInt(W.RIGHTS_FD_WRITE);
const RIGHTS_DIR_BASE = 0x7b7fe00n;
const RIGHTS_DIR_INHERITING = 0xff7ffffn;
const RIGHTS_FILE = 0x3fffffbfn;
// fd_fdstat_set_flags on an opened file: wasmtime accepts APPEND and NONBLOCK, refuses the
// synchronous-I/O flags with EINVAL.
const SETTABLE_FDFLAGS = W.FDFLAGS_APPEND | W.FDFLAGS_NONBLOCK;
// Anything that asks a file to be writable, created or truncated.
const WRITE_RIGHTS = BigInt(W.RIGHTS_FD_WRITE | W.RIGHTS_FD_ALLOCATE | W.RIGHTS_FD_FILESTAT_SET_SIZE);
const WRITE_OFLAGS = W.OFLAGS_CREAT | W.OFLAGS_TRUNC | W.OFLAGS_EXCL;

/** Thrown through the kernel's stack to end the run. */
class Stop extends Error {
  constructor(kind, message, code = null) {
    super(message);
    this.kind = kind; // "exit" | "output_too_large"
    this.code = code;
  }
}

/** stdin: the task input, then end of file. Not a terminal (WASI filetype 0, like wasmtime). */
class Stdin extends Fd {
  constructor(data) {
    super();
    this.data = data;
    this.pos = 0;
  }
  fd_fdstat_get() {
    const st = new W.Fdstat(W.FILETYPE_UNKNOWN, 0);
    st.fs_rights_base = RIGHTS_STDIN;
    st.fs_rights_inherited = RIGHTS_STDIN;
    return { ret: 0, fdstat: st };
  }
  fd_filestat_get() {
    return { ret: 0, filestat: new W.Filestat(0n, W.FILETYPE_UNKNOWN, 0n) };
  }
  fd_read(size) {
    const end = Math.min(this.data.length, this.pos + size);
    const chunk = this.data.slice(this.pos, end);
    this.pos = end;
    return { ret: 0, data: chunk };
  }
  fd_write() {
    return { ret: W.ERRNO_BADF, nwritten: 0 };
  }
  fd_seek() {
    return { ret: W.ERRNO_SPIPE, offset: 0n };
  }
  fd_tell() {
    return { ret: W.ERRNO_SPIPE, offset: 0n };
  }
}

/**
 * stdout: collected in memory up to the output cap; one byte more ends the run. Every write
 * is also handed to onWrite (the worker forwards it to the page, which keeps the partial
 * output of a run it has to terminate, as wasmtime keeps what was written before a timeout).
 */
class Stdout extends Fd {
  constructor(cap, onWrite = null) {
    super();
    this.cap = cap;
    this.chunks = [];
    this.size = 0;
    this.onWrite = onWrite;
  }
  fd_fdstat_get() {
    const st = new W.Fdstat(W.FILETYPE_UNKNOWN, 0);
    st.fs_rights_base = RIGHTS_STDOUT;
    st.fs_rights_inherited = RIGHTS_STDOUT;
    return { ret: 0, fdstat: st };
  }
  fd_filestat_get() {
    return { ret: 0, filestat: new W.Filestat(0n, W.FILETYPE_UNKNOWN, 0n) };
  }
  fd_write(data) {
    this.size += data.byteLength;
    if (this.size > this.cap) {
      throw new Stop("output_too_large", `The kernel wrote more than ${this.cap} bytes to stdout (the output limit).`);
    }
    this.chunks.push(data);
    if (this.onWrite) this.onWrite(data);
    return { ret: 0, nwritten: data.byteLength };
  }
  fd_read() {
    return { ret: W.ERRNO_BADF, data: new Uint8Array() };
  }
  fd_seek() {
    return { ret: W.ERRNO_SPIPE, offset: 0n };
  }
  fd_tell() {
    return { ret: W.ERRNO_SPIPE, offset: 0n };
  }
  bytes() {
    return concat(this.chunks, this.size);
  }
}

/** stderr: never an error; only the last STDERR_TAIL_BYTES are kept. */
class Stderr extends Stdout {
  constructor(onWrite = null) {
    super(Infinity, onWrite);
    this.kept = 0;
  }
  fd_write(data) {
    this.chunks.push(data);
    if (this.onWrite) this.onWrite(data);
    this.kept += data.byteLength;
    while (this.chunks.length > 1 && this.kept - this.chunks[0].byteLength >= STDERR_TAIL_BYTES) {
      this.kept -= this.chunks.shift().byteLength;
    }
    return { ret: 0, nwritten: data.byteLength };
  }
  tail() {
    const all = concat(this.chunks, this.kept);
    return all.slice(Math.max(0, all.length - STDERR_TAIL_BYTES));
  }
}

function concat(chunks, size) {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * nlink as wasmtime reports it: 0 for stdio (not files), 1 for the files in /ccgsc (the
 * native host gives each run its own copy, see kernelhost/files.py run_dir), 2 for
 * directories (an empty directory on Linux file systems: itself and its "." entry).
 */
function nlinkOf(filetype) {
  if (filetype === W.FILETYPE_DIRECTORY) return 2n;
  return filetype === W.FILETYPE_REGULAR_FILE ? 1n : 0n;
}

/** The 64-byte WASI filestat (the shim's writer puts the timestamps at wrong offsets). */
function writeFilestat(view, ptr, st) {
  view.setBigUint64(ptr, st.dev ?? 0n, true);
  view.setBigUint64(ptr + 8, st.ino ?? 0n, true);
  view.setUint8(ptr + 16, st.filetype);
  for (let i = 17; i < 24; i++) view.setUint8(ptr + i, 0);
  view.setBigUint64(ptr + 24, nlinkOf(st.filetype), true);
  view.setBigUint64(ptr + 32, st.size ?? 0n, true);
  view.setBigUint64(ptr + 40, st.atim ?? 0n, true);
  view.setBigUint64(ptr + 48, st.mtim ?? 0n, true);
  view.setBigUint64(ptr + 56, st.ctim ?? 0n, true);
}

/**
 * Does `path` stay inside the directory it is resolved against? wasmtime refuses absolute
 * paths and ".." above the base with EPERM (capability violation), before looking at files.
 */
function escapes(path) {
  if (path.startsWith("/")) return true;
  let depth = 0;
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      depth -= 1;
      if (depth < 0) return true;
    } else {
      depth += 1;
    }
  }
  return false;
}

function utf8(s) {
  return new TextEncoder().encode(s);
}

/**
 * Run a compiled kernel once, synchronously.
 *
 * task: {stdin: Uint8Array, args: string[], env: {name: value}, static: Uint8Array|null,
 *        checkpoint: Uint8Array|null}
 * limits: as DEFAULT_LIMITS (timeout_s is enforced by the caller, which terminates the worker)
 * hooks: {progress(fraction), checkpoint(bytes), output(fd, bytes)} called while the kernel
 *        runs (rate-limited progress, the last value is always in the result; output gets
 *        every write to stdout (fd 1) and stderr (fd 2) as it happens)
 * memoryDecl: the module's declared memory {min, max} in bytes (parseMemoryLimits of its
 *        bytes), used to tell out_of_memory from other failures like kernelhost does
 *
 * Returns {exit_code, error, message, stdout, stderr, checkpoint, progress, memory_bytes, ms}:
 * the same observation kernelhost's RunResult gives (error null and exit_code 0 on success).
 */
export function runKernel(module, task, limits = DEFAULT_LIMITS, hooks = {}, memoryDecl = null) {
  limits = { ...DEFAULT_LIMITS, ...limits };
  const started = performance.now();
  const output = hooks.output ?? null;
  const stdout = new Stdout(limits.output_bytes, output && ((data) => output(1, data)));
  const stderr = new Stderr(output && ((data) => output(2, data)));
  const files = new Map();
  if (task.static != null) files.set("static", new File(task.static, { readonly: true }));
  if (task.checkpoint != null) files.set("checkpoint", new File(task.checkpoint, { readonly: true }));
  const preopen = new PreopenDirectory(GUEST_DIR, files);
  const fds = [new Stdin(task.stdin ?? new Uint8Array()), stdout, stderr, preopen];
  const args = ["kernel", ...(task.args ?? [])];
  const env = Object.entries(task.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const shim = new WASI(args, env, fds, { debug: false });

  let memory = null;
  const view = () => new DataView(memory.buffer);
  const bytes = () => new Uint8Array(memory.buffer);
  const imports = { ...shim.wasiImport, ...contractOverrides(shim, fds, view, bytes) };

  let lastProgress = null;
  let progressSentAt = -Infinity;
  let progressPending = false;
  let savedCheckpoint = null;
  const ccgsc = {
    progress(value) {
      if (Number.isNaN(value)) return;
      lastProgress = Math.min(1, Math.max(0, value));
      progressPending = true;
      const now = performance.now();
      if (hooks.progress && now - progressSentAt >= PROGRESS_INTERVAL_MS) {
        progressSentAt = now;
        progressPending = false;
        hooks.progress(lastProgress);
      }
    },
    checkpoint(ptr, len) {
      if (len < 0 || len > limits.checkpoint_bytes || memory === null) return -1;
      const start = ptr >>> 0;
      if (start + len > memory.buffer.byteLength) return -1;
      savedCheckpoint = bytes().slice(start, start + len);
      if (hooks.checkpoint) hooks.checkpoint(savedCheckpoint);
      return 0;
    },
  };

  let instance = null;
  let memoryStart = 0;
  let outcome = null; // null: returned from _start
  try {
    instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: imports, ccgsc });
    memory = /** @type {WebAssembly.Memory} */ (instance.exports.memory);
    shim.inst = /** @type {any} */ (instance); // the shim reads exports.memory only
    memoryStart = memory.buffer.byteLength;
    /** @type {() => void} */ (instance.exports._start)();
  } catch (exc) {
    outcome = exc;
  }
  if (progressPending && hooks.progress) hooks.progress(lastProgress);

  const memoryEnd = memory ? memory.buffer.byteLength : 0;
  const decl = memoryDecl ?? { min: 0, max: null };
  const result = classify(decl, limits, outcome, instance !== null, memoryStart, memoryEnd);
  return {
    ...result,
    stdout: result.error === "output_too_large" ? new Uint8Array() : stdout.bytes(),
    stderr: stderr.tail(),
    checkpoint: savedCheckpoint,
    progress: lastProgress,
    memory_bytes: memoryEnd,
    ms: Math.round(performance.now() - started),
  };
}

/** (exit_code, error, message) the way kernelhost/host.py _classify() decides them. */
function classify(decl, limits, outcome, instantiated, memoryStart, memoryEnd) {
  if (outcome === null) return { exit_code: 0, error: null, message: "" };
  let exitCode = null;
  let error;
  let message;
  if (outcome instanceof Stop && outcome.kind === "output_too_large") {
    return { exit_code: null, error: "output_too_large", message: outcome.message };
  }
  if (outcome instanceof Stop && outcome.kind === "exit") {
    if (outcome.code === 0) return { exit_code: 0, error: null, message: "" };
    if (outcome.code > MAX_EXIT_CODE) {
      error = "exit";
      message = "The kernel called proc_exit with a status outside 0..125, which WASI hosts refuse.";
    } else {
      exitCode = outcome.code;
      error = "exit";
      message = `The kernel exited with status ${exitCode}.`;
    }
  } else if (!instantiated && outcome instanceof WebAssembly.LinkError) {
    return { exit_code: null, error: "invalid", message: `The module cannot be linked: ${outcome.message}` };
  } else if (!instantiated && outcome instanceof RangeError && decl.min > limits.memory_bytes) {
    return { exit_code: null, error: "out_of_memory", message: "The kernel's initial memory is above the memory limit." };
  } else {
    error = "trap";
    message = `The kernel trapped: ${outcome && outcome.message ? outcome.message : String(outcome)}`;
  }
  const cap = Math.min(limits.memory_bytes, decl.max ?? WASM32_MAX_MEMORY);
  if (memoryEnd > memoryStart && memoryEnd >= cap - oomMargin(cap)) {
    message =
      `The kernel ran out of memory: it grew its memory to ${(memoryEnd / 1048576).toFixed(1)} MiB ` +
      `of the ${cap / 1048576} MiB limit and then failed. (${message})`;
    error = "out_of_memory";
  }
  return { exit_code: exitCode, error, message };
}

/** Same inference as kernelhost: a failed run that grew its memory to within an eighth of the
 * cap ran out of memory (browsers do not say whether memory.grow was refused either). */
function oomMargin(cap) {
  return Math.max(WASM_PAGE, Math.floor(cap / 8));
}

/**
 * The declared limits of the module's memory, parsed from its binary (the memory section, or
 * an imported memory). Returns {min, max} in bytes (max null when undeclared).
 */
export function parseMemoryLimits(wasmBytes) {
  const b = wasmBytes instanceof Uint8Array ? wasmBytes : new Uint8Array(wasmBytes);
  let pos = 8;
  const leb = () => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const byte = b[pos++];
      result += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
  };
  const limitsAt = () => {
    const flags = b[pos++];
    const min = leb();
    const max = flags & 1 ? leb() : null;
    return { min: min * WASM_PAGE, max: max === null ? null : max * WASM_PAGE };
  };
  while (pos < b.length) {
    const id = b[pos++];
    const size = leb();
    const end = pos + size;
    if (id === 5) {
      // memory section: vec(memtype)
      if (leb() > 0) return limitsAt();
    } else if (id === 2) {
      // import section: a kernel's memory is its own, but be complete
      const count = leb();
      for (let i = 0; i < count; i++) {
        // Module and field names: a LEB128 length, then the bytes. (Read the length first:
        // `pos += leb()` would add it to pos as it was *before* the length bytes.)
        for (let s = 0; s < 2; s++) {
          const length = leb();
          pos += length;
        }
        const kind = b[pos++];
        if (kind === 0) leb();
        else if (kind === 1) {
          pos++;
          limitsAt();
        } else if (kind === 2) return limitsAt();
        else if (kind === 3) pos += 2;
        else if (kind === 4) {
          pos++;
          leb();
        }
      }
    }
    pos = end;
  }
  return { min: 0, max: null };
}

/** The preview 1 functions whose answers the contract pins (see the conformance cases). */
function contractOverrides(shim, fds, view, bytes) {
  const has = (fd) => fds[fd] !== undefined;
  const isDir = (fd) => fds[fd] instanceof PreopenDirectory || (fds[fd] && fds[fd].dir !== undefined);
  const isFile = (fd) => fds[fd] instanceof OpenFile;
  // Calls that only make sense on a file: 0 on a file of /ccgsc, EBADF on stdio and
  // directories (wasmtime: stdio are streams, not files), EBADF on a closed fd.
  const fileOnly = (fd) => (isFile(fd) ? 0 : W.ERRNO_BADF);
  const mutating = (fd) => (has(fd) ? W.ERRNO_PERM : W.ERRNO_BADF);
  const readPath = (ptr, len) => new TextDecoder("utf-8").decode(bytes().slice(ptr, ptr + len));
  return {
    args_sizes_get(argcPtr, sizePtr) {
      const v = view();
      v.setUint32(argcPtr, shim.args.length, true);
      v.setUint32(sizePtr, shim.args.reduce((n, a) => n + utf8(a).length + 1, 0), true);
      return 0;
    },
    clock_res_get(id, ptr) {
      if (id === W.CLOCKID_REALTIME || id === W.CLOCKID_MONOTONIC) {
        view().setBigUint64(ptr, 1000n, true);
        return 0;
      }
      return id === W.CLOCKID_PROCESS_CPUTIME_ID || id === W.CLOCKID_THREAD_CPUTIME_ID ? W.ERRNO_BADF : W.ERRNO_INVAL;
    },
    clock_time_get(id, _precision, ptr) {
      let ns;
      if (id === W.CLOCKID_REALTIME) {
        ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
      } else if (id === W.CLOCKID_MONOTONIC) {
        ns = BigInt(Math.round(performance.now() * 1000)) * 1000n;
      } else {
        return id === W.CLOCKID_PROCESS_CPUTIME_ID || id === W.CLOCKID_THREAD_CPUTIME_ID ? W.ERRNO_BADF : W.ERRNO_INVAL;
      }
      view().setBigUint64(ptr, ns, true);
      return 0;
    },
    // Kernels cannot sleep or block (wasmtime's would block out of reach of the time limit).
    poll_oneoff() {
      return W.ERRNO_NOTSUP;
    },
    proc_exit(code) {
      throw new Stop("exit", "proc_exit", code >>> 0);
    },
    proc_raise() {
      return W.ERRNO_NOTSUP;
    },
    sched_yield() {
      return 0;
    },
    random_get(ptr, len) {
      const target = bytes().subarray(ptr, ptr + len);
      for (let i = 0; i < len; i += 65536) crypto.getRandomValues(target.subarray(i, Math.min(len, i + 65536)));
      return 0;
    },
    sock_accept(fd) {
      return has(fd) ? W.ERRNO_NOTSOCK : W.ERRNO_BADF;
    },
    sock_recv(fd) {
      return has(fd) ? W.ERRNO_NOTSOCK : W.ERRNO_BADF;
    },
    sock_send(fd) {
      return has(fd) ? W.ERRNO_NOTSOCK : W.ERRNO_BADF;
    },
    sock_shutdown(fd) {
      return has(fd) ? W.ERRNO_NOTSOCK : W.ERRNO_BADF;
    },
    fd_filestat_get(fd, ptr) {
      if (!has(fd)) return W.ERRNO_BADF;
      const { ret, filestat } = fds[fd].fd_filestat_get();
      if (filestat) writeFilestat(view(), ptr, filestat);
      return ret;
    },
    path_filestat_get(fd, flags, pathPtr, pathLen, ptr) {
      if (!has(fd)) return W.ERRNO_BADF;
      const path = readPath(pathPtr, pathLen);
      if (isDir(fd) && escapes(path)) return W.ERRNO_PERM;
      const { ret, filestat } = fds[fd].path_filestat_get(flags, path);
      if (filestat) writeFilestat(view(), ptr, filestat);
      return ret;
    },
    // /ccgsc is read-only: whatever would write, create or truncate answers EPERM, as in
    // wasmtime with a read-only preopen; escaping it (absolute paths, "..") too.
    path_open(fd, dirflags, pathPtr, pathLen, oflags, rightsBase, rightsInheriting, fdflags, openedPtr) {
      if (!has(fd)) return W.ERRNO_BADF;
      if (!isDir(fd)) return W.ERRNO_NOTDIR;
      const path = readPath(pathPtr, pathLen);
      if (escapes(path)) return W.ERRNO_PERM;
      if (oflags & WRITE_OFLAGS || BigInt(rightsBase) & WRITE_RIGHTS || fdflags & W.FDFLAGS_APPEND) {
        return W.ERRNO_PERM;
      }
      const { ret, fd_obj: opened } = fds[fd].path_open(dirflags, path, oflags, 0n, 0n, fdflags);
      if (ret !== 0) return ret;
      fds.push(opened);
      view().setUint32(openedPtr, fds.length - 1, true);
      return 0;
    },
    path_create_directory: mutating,
    path_remove_directory: mutating,
    path_unlink_file: mutating,
    path_rename: mutating,
    path_link: mutating,
    path_symlink(_oldPtr, _oldLen, fd) {
      return mutating(fd);
    },
    path_filestat_set_times: mutating,
    fd_fdstat_get(fd, ptr) {
      if (!has(fd)) return W.ERRNO_BADF;
      const { ret, fdstat } = fds[fd].fd_fdstat_get();
      if (ret !== 0) return ret;
      if (isDir(fd)) {
        fdstat.fs_rights_base = RIGHTS_DIR_BASE;
        fdstat.fs_rights_inherited = RIGHTS_DIR_INHERITING;
      } else if (isFile(fd)) {
        fdstat.fs_rights_base = RIGHTS_FILE;
        fdstat.fs_rights_inherited = RIGHTS_FILE;
      }
      fdstat.write_bytes(view(), ptr);
      return 0;
    },
    fd_sync: fileOnly,
    fd_datasync: fileOnly,
    fd_advise: fileOnly,
    fd_fdstat_set_flags(fd, flags) {
      if (!isFile(fd)) return W.ERRNO_BADF;
      return flags & ~SETTABLE_FDFLAGS ? W.ERRNO_INVAL : 0;
    },
    // Nothing the kernel can reach is writable except stdout and stderr, which are streams:
    // positioned writes there answer ESPIPE, as positioned reads of stdin do.
    fd_filestat_set_size: () => W.ERRNO_BADF,
    fd_filestat_set_times: () => W.ERRNO_BADF,
    fd_pwrite(fd) {
      return fds[fd] instanceof Stdout ? W.ERRNO_SPIPE : W.ERRNO_BADF;
    },
    fd_pread(fd, iovsPtr, iovsLen, offset, nreadPtr) {
      if (fds[fd] instanceof Stdin) return W.ERRNO_SPIPE;
      if (!isFile(fd)) return W.ERRNO_BADF;
      return shim.wasiImport.fd_pread(fd, iovsPtr, iovsLen, offset, nreadPtr);
    },
    fd_allocate(fd) {
      return isFile(fd) ? W.ERRNO_NOTSUP : W.ERRNO_BADF;
    },
    // /ccgsc holds no symbolic links: an existing entry answers EINVAL (not a link), a
    // missing one ENOENT, escaping EPERM, a descriptor that is not a directory EBADF.
    path_readlink(fd, pathPtr, pathLen) {
      if (!isDir(fd)) return W.ERRNO_BADF;
      const path = readPath(pathPtr, pathLen);
      if (escapes(path)) return W.ERRNO_PERM;
      const { ret } = fds[fd].path_lookup(path, 0);
      return ret === 0 ? W.ERRNO_INVAL : ret;
    },
    fd_write(fd, iovsPtr, iovsLen, nwrittenPtr) {
      if (!has(fd)) return W.ERRNO_BADF;
      const target = fds[fd];
      if (target instanceof OpenFile || isDir(fd)) return W.ERRNO_BADF;
      return shim.wasiImport.fd_write(fd, iovsPtr, iovsLen, nwrittenPtr);
    },
  };
}
